"""The spirals example with rank 1 hanging at its fourth step: a stalled collective for the watchdog test."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from spirals import SpiralConfig, SpiralTask


class HangingTask(SpiralTask):
    steps = 0

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self.steps += 1
        if self.info.rank == 1 and self.steps == 4:
            # hung for longer than the test's 5 s timeout: rank 0 gives up waiting in the gradient
            # all-reduce; then this rank finds rank 0 gone and fails too (torchrun's SIGTERM only
            # asks for a checkpoint at the next step)
            time.sleep(15)
        return super().training_step(model, batch)


def make_task(cfg: SpiralConfig) -> HangingTask:
    return HangingTask(cfg)
