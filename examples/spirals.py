"""Your own model through cudalab's engine: an MLP that tells apart the arms of a noisy spiral.

Everything here is yours to change: the config (a dataclass with the engine's ``train`` section), the
data (made in code, fixed by ``data_seed``), the model, the loss and the evaluation. The engine adds
device and precision, DDP under torchrun, checkpoints with bit-identical resume, TensorBoard, a
progress line per interval in batch logs, and a run directory with its manifest.

From the command line (the runs go to ``runs/custom/<id>``)::

    cudalab train custom examples/spirals.py --epochs 30 --set hidden=64
    cudalab train custom examples/spirals.py --print-config          # every key --set can change
    torchrun --nproc-per-node 2 -m cudalab train custom examples/spirals.py --device cpu

From Python or a notebook::

    from cudalab.train import fit
    from spirals import SpiralConfig, make_task
    result = fit(make_task, SpiralConfig(hidden=64))
    result.summary["headline"], result.run.path
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab.train.config import TrainConfig
from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo
from cudalab.train.task import TaskBase


def _train_preset() -> TrainConfig:
    return TrainConfig(
        max_epochs=30,
        lr=3e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=20,
        early_stop_metric="val_acc",
        tiebreak_metric="val_loss",
        log_every=20,
    )


@dataclass(kw_only=True, frozen=True)
class SpiralConfig:
    """The task's own dials beside the engine's ``train`` section (``--set hidden=64``, ...)."""

    arms: int = 3
    """Spiral arms, one class each."""
    points: int = 1500
    """Points per arm; a fifth of them are held out for validation."""
    turns: float = 1.5
    """Turns each arm makes around the centre (more turns: a harder boundary)."""
    noise: float = 0.05
    """Gaussian jitter of the points, in units of the spiral's radius at one turn."""
    data_seed: int = 1234
    """The data are a function of this alone, not of the training seed."""
    hidden: int = 128
    depth: int = 3
    dropout: float = 0.1
    batch_size: int = 64
    """Examples per optimizer step over all ranks (a multiple of world size x grad_accum)."""
    train: TrainConfig = field(default_factory=_train_preset)

    def __post_init__(self) -> None:
        if self.arms < 2 or self.points < 10 or self.hidden < 1 or self.depth < 1 or self.batch_size < 1:
            raise ValueError("arms >= 2, points >= 10, hidden, depth and batch_size >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


def spirals(cfg: SpiralConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``arms * points`` 2-d points on interleaved spiral arms, labelled by arm."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    t = torch.rand(cfg.arms, cfg.points, generator=g).sqrt()  # uniform over the arm's area
    angle = 2 * math.pi * cfg.turns * t + 2 * math.pi * torch.arange(cfg.arms)[:, None] / cfg.arms
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=-1)  # (arms, points, 2)
    x = x + cfg.noise * torch.randn(x.shape, generator=g) / cfg.turns
    y = torch.arange(cfg.arms)[:, None].expand(cfg.arms, cfg.points)
    perm = torch.randperm(cfg.arms * cfg.points, generator=g)
    return x.reshape(-1, 2)[perm], y.reshape(-1)[perm]


class SpiralTask(TaskBase):
    """Classify each point's arm with an MLP; validation accuracy picks the best checkpoint."""

    def __init__(self, cfg: SpiralConfig) -> None:
        self.cfg = cfg
        x, y = spirals(cfg)
        n_val = len(x) // 5
        self.x_val, self.y_val = x[:n_val], y[:n_val]
        self.x_train, self.y_train = x[n_val:], y[n_val:]

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        super().setup(device, info, seed)
        self.order = EpochSampler(
            len(self.x_train),
            self.cfg.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            grad_accum=self.cfg.train.grad_accum,
            seed=seed,
        )

    def build_model(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = 2
        for _ in range(self.cfg.depth):
            layers += [nn.Linear(width, self.cfg.hidden), nn.GELU(), nn.Dropout(self.cfg.dropout)]
            width = self.cfg.hidden
        return nn.Sequential(*layers, nn.Linear(width, self.cfg.arms))

    def micro_batches_per_epoch(self) -> int:
        return len(self.order)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.order.epoch(epoch, start):
            yield self.x_train[idx].to(self.device), self.y_train[idx].to(self.device)

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.x_val.to(self.device)).float()
        y = self.y_val.to(self.device)
        return {
            "val_acc": (logits.argmax(1) == y).float().mean().item(),
            "val_loss": F.cross_entropy(logits, y).item(),
        }


def make_task(cfg: SpiralConfig) -> SpiralTask:
    """The factory ``cudalab train custom`` and :func:`cudalab.train.fit` call once per seed."""
    return SpiralTask(cfg)
