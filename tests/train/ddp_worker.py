"""Run by torchrun from test_engine.py: the toy task on every rank; rank 0 saves the final weights."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from cudalab.runs.rundir import RunDir
from cudalab.train import distributed as dist
from cudalab.train.trainer import train_run
from tests.train.test_engine import BASE
from tests.train.toy import Regression

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
info = dist.init("cpu")
cfg = replace(BASE, deterministic=False)
result = train_run(
    Regression(dropout=0.0),
    cfg,
    RunDir(runs / "toy" / "ddp"),
    environment={"test": True},
    console=Console(quiet=True),
    info=info,
)
if info.is_main:
    torch.save(result.model.state_dict(), out)
dist.shutdown()
