"""``cudalab train radio-classifier``: a candidate classifier trained through the engine.

The task reads a set built by ``cudalab radio dataset`` (:mod:`~cudalab.radio.classify.dataset`) once
per process, as ``(N, 2, size, size)`` planes in memory (3,000 candidates at 64 x 64 are 100 MB),
and feeds the engine seeded micro-batches of the ``train`` split, augmented on the fly
(:mod:`~cudalab.radio.classify.augment`; the same batches for the same seed and epoch, so a resumed
run or a torchrun job sees what a single process sees). Candidates labelled -1 (ambiguous) are left
out. Evaluation on ``val``: loss, ROC AUC, average precision, and at a probability of 0.5 the recall
(all, and search S/N >= 10) and the share of false candidates removed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab.radio.classify.augment import AugmentConfig, Geometry, augment
from cudalab.radio.classify.data import INPUT_SIZE, geometry_of, planes, read_cutout
from cudalab.radio.classify.dataset import read_index
from cudalab.radio.classify.losses import (
    LossName,
    average_precision,
    class_balanced_weights,
    focal_loss,
    roc_auc,
    weighted_bce,
)
from cudalab.radio.classify.models import ModelName, build_model
from cudalab.runs.config import check_literals
from cudalab.train.config import TrainConfig
from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo
from cudalab.train.experiment import Experiment
from cudalab.train.rng import epoch_seed, generator

TASK = "radio-classifier"


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    root: str = "radio-dataset"
    """A set written by ``cudalab radio dataset``."""
    size: int = INPUT_SIZE
    """Pixels a side of each plane fed to the network (the files' 256 block-averaged)."""
    batch_size: int = 64
    """Candidates per optimizer step over all ranks."""

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 256:
            raise ValueError(f"data.size must lie in 8..256, got {self.size}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelConfig:
    name: ModelName = "fetchlike"
    width: int = 16
    """Channels of the first convolution (fetchlike, cnn_bilstm)."""
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_literals(self)
        if self.width < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("model.width must be >= 1 and model.dropout in [0, 1)")


@dataclass(kw_only=True, slots=True, frozen=True)
class LossConfig:
    name: LossName = "focal"
    gamma: float = 2.0
    """Focal loss: the focusing exponent."""
    alpha: float = -1.0
    """Focal loss: the positives' weight; -1: the negatives' share of the training set."""
    beta: float = 0.999
    """Class-balanced cross-entropy: the effective-number parameter."""

    def __post_init__(self) -> None:
        check_literals(self)
        if self.gamma < 0 or not (self.alpha == -1.0 or 0.0 < self.alpha < 1.0) or not 0.0 < self.beta < 1.0:
            raise ValueError("loss.gamma >= 0, loss.alpha in (0, 1) or -1, loss.beta in (0, 1)")


@dataclass(kw_only=True, slots=True, frozen=True)
class RadioClassifierConfig:
    """``cudalab train radio-classifier``: one model and loss on one set (see the module)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def preset(
    root: str = "radio-dataset", model: ModelName = "fetchlike", loss: LossName = "focal"
) -> RadioClassifierConfig:
    """The shipped model's recipe: AdamW, cosine decay after a short warm-up, 60 epochs, the best
    epoch by validation average precision (60 epochs: 2 minutes on 2 CPU cores for 800 cutouts)."""
    return RadioClassifierConfig(
        data=DataConfig(root=root),
        model=ModelConfig(name=model),
        loss=LossConfig(name=loss),
        train=TrainConfig(
            max_epochs=60,
            optimizer="adamw",
            lr=2e-3,
            weight_decay=1e-4,
            schedule="cosine",
            warmup_steps=20,
            min_lr_ratio=0.05,
            early_stop_metric="val_ap",
            early_stop_mode="max",
            tiebreak_metric="val_loss",
            tiebreak_mode="min",
            log_every=10,
            keep_last=2,
        ),
    )


# --------------------------------------------------------------------------------------------------
# the data in memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split of a set in memory: planes, labels (0/1), search S/N, geometry, kinds."""

    x: torch.Tensor  # (N, 2, S, S) float32
    y: torch.Tensor  # (N,) int64
    snr: torch.Tensor  # (N,) float32, the search's
    geometry: Geometry
    kinds: tuple[str, ...]
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return int(self.y.numel())


@functools.lru_cache(maxsize=8)
def load_split(root: str, split: str, size: int) -> Split:
    """The labelled (0/1) candidates of ``split``; ``ValueError`` for a folder that is not a set or a
    split with no candidates."""
    rows = [e for e in read_index(root) if e.split == split and e.label in (0, 1)]
    if not rows:
        raise ValueError(f"{root}: no labelled candidates in the {split} split")
    x = np.empty((len(rows), 2, size, size), dtype=np.float32)
    geo = np.empty((len(rows), 6), dtype=np.float64)
    for i, e in enumerate(rows):
        c = read_cutout(e.path)
        x[i] = planes(c.freq_time, c.dm_time, size)
        geo[i] = geometry_of(c.attrs, size)
    g = torch.from_numpy(geo).float()
    return Split(
        x=torch.from_numpy(x),
        y=torch.tensor([e.label for e in rows], dtype=torch.int64),
        snr=torch.tensor([e.snr for e in rows], dtype=torch.float32),
        geometry=Geometry(*(g[:, k] for k in range(6))),
        kinds=tuple(e.kind for e in rows),
        paths=tuple(e.path for e in rows),
    )


def classifier_metrics(
    prob: np.ndarray, y: np.ndarray, snr: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Ranking and operating-point figures of probabilities ``prob`` against labels ``y``."""
    keep = prob >= threshold
    pos, neg = y == 1, y == 0
    bright = pos & (snr >= 10)
    return {
        "auc": roc_auc(prob, y),
        "ap": average_precision(prob, y),
        "recall": float(keep[pos].mean()) if pos.any() else float("nan"),
        "recall_snr10": float(keep[bright].mean()) if bright.any() else float("nan"),
        "reduction": float((~keep[neg]).mean()) if neg.any() else float("nan"),
    }


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch: int = 256) -> np.ndarray:
    """Probabilities for planes ``x`` in batches (the model in eval mode)."""
    out = []
    for i in range(0, len(x), batch):
        out.append(torch.sigmoid(model(x[i : i + batch].to(device, non_blocking=True)).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------------


class RadioClassification:
    """Binary candidate classification for the engine."""

    def __init__(self, cfg: RadioClassifierConfig) -> None:
        self.cfg = cfg
        self.train_split = load_split(cfg.data.root, "train", cfg.data.size)
        self.val_split = load_split(cfg.data.root, "val", cfg.data.size)
        n_pos = int(self.train_split.y.sum())
        self.n_pos, self.n_neg = n_pos, len(self.train_split) - n_pos

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        self.device, self.info, self.seed = device, info, seed
        self.order = EpochSampler(
            len(self.train_split),
            self.cfg.data.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            grad_accum=self.cfg.train.grad_accum,
            seed=seed,
            drop_last=True,
        )
        loss = self.cfg.loss
        # the negatives' share, kept off 0 and 1 (a set of one class must not silence the other)
        share = self.n_neg / max(1, self.n_neg + self.n_pos)
        self.alpha = loss.alpha if loss.alpha > 0 else min(0.95, max(0.05, share))
        self.weights = class_balanced_weights(self.n_neg, self.n_pos, loss.beta)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return build_model(m.name, m.width, m.dropout)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        # no weight decay on norms and biases
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]

    def micro_batches_per_epoch(self) -> int:
        return len(self.order)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.train_split
        for i, idx in enumerate(self.order.epoch(epoch, start), start=start):
            g = generator(epoch_seed(self.seed, epoch, salt=1 + i * self.info.world_size + self.info.rank))
            x = augment(s.x[idx], s.geometry.index(idx), self.cfg.augment, g)
            yield x.to(self.device, non_blocking=True), s.y[idx].to(self.device, non_blocking=True)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg.loss
        if c.name == "focal":
            return focal_loss(logits, y, alpha=self.alpha, gamma=c.gamma)
        if c.name == "balanced":
            return weighted_bce(logits, y, self.weights)
        return F.binary_cross_entropy_with_logits(logits.float(), y.float())

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.loss(model(x), y)

    def batch_size(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int(batch[1].numel())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        v = self.val_split
        prob = predict(model, v.x, self.device)
        y = v.y.numpy()
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        bce = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        return {
            "val_loss": bce,
            **{f"val_{k}": val for k, val in classifier_metrics(prob, y, v.snr.numpy()).items()},
        }


def _headline(cfg: RadioClassifierConfig, summary: dict[str, Any]) -> dict[str, Any]:
    mean, std = summary.get("val_ap_mean"), summary.get("val_ap_std")
    return {
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "dataset": cfg.data.root,
        "headline": {"metric": "val_ap", "value": mean, "std": std if cfg.train.seeds > 1 else None},
    }


def experiment() -> Experiment[RadioClassifierConfig]:
    """Candidate classification for the engine's driver: ``runs/radio-classifier/<id>/seed-<n>/``."""
    return Experiment(
        kind=TASK,
        make_task=RadioClassification,
        subject=lambda cfg: f"{cfg.model.name} ({cfg.loss.name} loss) on {Path(cfg.data.root).name}",
        summarise=_headline,
        columns=("val_ap", "val_auc", "val_recall", "val_reduction"),
    )
