"""A small regression task for engine tests: an MLP with dropout fitting a noisy linear map.

Importable by the torchrun worker script as well as by the tests (so both build the same task).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo


class Regression:
    """y = X w + 0.1 noise, 256 examples of 8 features; the data are fixed by ``data_seed``."""

    def __init__(
        self,
        batch_size: int = 32,
        grad_accum: int = 1,
        dropout: float = 0.2,
        data_seed: int = 1234,
        crash_at_step: int | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(data_seed)
        self.x = torch.randn(256, 8, generator=g)
        w = torch.randn(8, 1, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(256, 1, generator=g)
        self.x_val = torch.randn(64, 8, generator=g)
        self.y_val = self.x_val @ w
        self.batch_size, self.grad_accum, self.dropout = batch_size, grad_accum, dropout
        self.crash_at_step = crash_at_step
        self.calls = 0

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        self.device = device
        self.order = EpochSampler(
            256,
            self.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            grad_accum=self.grad_accum,
            seed=seed,
        )

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(32, 1))

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": list(model.parameters())}]

    def micro_batches_per_epoch(self) -> int:
        return len(self.order)

    def train_batches(self, epoch: int, start: int) -> Iterator[torch.Tensor]:
        yield from self.order.epoch(epoch, start)

    def training_step(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.crash_at_step is not None and self.calls > self.crash_at_step * self.grad_accum:
            raise KeyboardInterrupt("simulated crash")
        return F.mse_loss(model(self.x[batch].to(self.device)), self.y[batch].to(self.device))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        pred = model(self.x_val.to(self.device))
        return {"val_mse": F.mse_loss(pred, self.y_val.to(self.device)).item()}
