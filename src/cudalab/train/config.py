"""The engine's typed configuration: how to train, whatever is trained.

A workload's config is a dataclass (:mod:`cudalab.runs.config` reads, writes and overrides it) whose
``train`` section is a :class:`TrainConfig`. The fields marked cosmetic change how a run is shown,
not its results, and stay out of the run's identity (a resume is not refused over them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from cudalab.env.device import Device
from cudalab.runs.config import check_finite, check_literals, cosmetic

Precision = Literal["auto", "bf16", "fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("auto", "bf16", "fp16", "fp32")


class PrecisionChoice(StrEnum):
    """:data:`Precision` as a command-line choice (typer takes an Enum)."""

    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainConfig:
    """How to train, independent of what is trained.

    Steps are optimizer steps; one step consumes ``grad_accum`` micro-batches on every rank.
    """

    seed: int = 0
    """Seeds every RNG (Python, NumPy, torch CPU and CUDA) and every per-epoch data permutation."""
    seeds: int = 1
    """Train seeds ``seed``, ``seed + 1``, ... each as a child run ``seed-<n>/``; the run's summary
    aggregates them (mean and sample standard deviation)."""
    max_epochs: int = 200
    """Epochs to train (an epoch is one pass over the task's training batches)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0: no limit besides ``max_epochs``."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    """Peak learning rate, reached at the end of warm-up."""
    weight_decay: float = 0.0
    """L2 penalty (Adam, SGD) or decoupled decay (AdamW); tasks may exempt parameter groups."""
    momentum: float = 0.9
    """SGD momentum (unused by Adam/AdamW)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate shape after warm-up, over the planned number of steps."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr`` over this many steps."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine/linear decay as a fraction of ``lr``."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each rank (the global batch is split over both)."""
    clip_grad_norm: float = 0.0
    """Clip the global gradient L2 norm to this value; 0: off."""
    precision: Precision = "auto"
    """auto: bf16 on compute capability >= 8.0, fp16 with a GradScaler below, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (checkpoints still hold the plain module)."""
    device: Device = "auto"
    """auto: CUDA when usable, else CPU. Under torchrun each rank takes cuda:LOCAL_RANK."""
    deterministic: bool = False
    """Deterministic algorithms, cuDNN flags and cuBLAS workspace: bitwise-repeatable runs."""
    eval_every: int = 0
    """Evaluate every this many steps; 0: at the end of every epoch."""
    log_every: int = cosmetic(10)
    """Log the training loss every this many steps (one device sync each)."""
    checkpoint_every: int = 0
    """Checkpoint every this many steps; 0: at the end of every epoch. The last step is always saved."""
    keep_last: int = cosmetic(3)
    """Periodic checkpoints kept besides ``best.pt``."""
    early_stop_metric: str = ""
    """Evaluation metric that decides the best checkpoint and early stopping; '': none."""
    early_stop_mode: Literal["max", "min"] = "max"
    tiebreak_metric: str = ""
    """Decides between evaluations whose early-stop metric ties (accuracy on a 500-node split moves
    in steps of 0.2 %); '': the first one wins."""
    tiebreak_mode: Literal["max", "min"] = "min"
    patience: int = 0
    """Stop after this many evaluations without improvement of the metric; 0: never stop early."""
    progress: bool = cosmetic(True)
    """Show progress on rank 0: a rich bar in a terminal, else one plain line per log interval."""
    tensorboard: bool = cosmetic(True)
    """Write TensorBoard events beside metrics.jsonl on rank 0."""

    def __post_init__(self) -> None:
        positive = {
            "max_epochs": self.max_epochs,
            "grad_accum": self.grad_accum,
            "log_every": self.log_every,
            "seeds": self.seeds,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"train.{name} must be >= 1, got {value}")
        non_negative: dict[str, float] = {
            "max_steps": self.max_steps,
            "warmup_steps": self.warmup_steps,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "patience": self.patience,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "clip_grad_norm": self.clip_grad_norm,
        }
        for name, amount in non_negative.items():
            if amount < 0:
                raise ValueError(f"train.{name} must be >= 0, got {amount}")
        if self.keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {self.keep_last}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.patience and not self.early_stop_metric:
            raise ValueError("train.patience needs train.early_stop_metric")
        if self.tiebreak_metric and not self.early_stop_metric:
            raise ValueError("train.tiebreak_metric needs train.early_stop_metric")
        check_literals(self)
        check_finite(self, "train.")


__all__ = ["PRECISIONS", "Device", "Precision", "PrecisionChoice", "TrainConfig"]
