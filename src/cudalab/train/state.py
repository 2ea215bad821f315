"""The training loop's position and bookkeeping (saved in every checkpoint), and model selection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cudalab.train.config import TrainConfig


@dataclass(slots=True)
class TrainState:
    """The loop's position and bookkeeping; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    """Next micro-batch of ``epoch`` to train on (the data position)."""
    best_value: float | None = None
    best_step: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0
    loss_count: int = 0
    """Micro-batches since the last log line (their summed loss is saved per rank beside the state)."""

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for key, value in d.items():
            setattr(self, key, value)

    def record_evaluation(self, metrics: dict[str, float], cfg: TrainConfig) -> bool:
        """Take an evaluation into the best-so-far and early stopping; True when it is the new best."""
        for name in filter(None, (cfg.early_stop_metric, cfg.tiebreak_metric)):
            if name not in metrics:
                raise ValueError(f"train metric {name!r} is not among the evaluation's {', '.join(metrics)}")
        if better(metrics, self.best_metrics, cfg):
            self.best_value, self.best_step, self.bad_evals = metrics[cfg.early_stop_metric], self.step, 0
            self.best_metrics = dict(metrics)
            return True
        self.bad_evals += 1
        if cfg.patience and self.bad_evals >= cfg.patience:
            self.stopped_early = True
        return False

    def summary(
        self, cfg: TrainConfig, *, precision: str, world_size: int, resumed_from: int | None
    ) -> dict[str, Any]:
        """The run's summary.json."""
        return {
            "steps": self.step,
            "epochs": self.epoch,
            "stopped_early": self.stopped_early,
            "train_time_s": round(self.train_time_s, 3),
            "final": self.last_metrics,
            "best": {
                "metric": cfg.early_stop_metric,
                "value": self.best_value,
                "step": self.best_step,
                "metrics": self.best_metrics,
            }
            if cfg.early_stop_metric
            else None,
            "precision": precision,
            "world_size": world_size,
            "resumed_from_step": resumed_from,
        }


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def better(metrics: dict[str, float], best: dict[str, float], cfg: TrainConfig) -> bool:
    """Whether ``metrics`` beat the best evaluation so far: the early-stop metric, then the tie-break."""
    value, key = metrics[cfg.early_stop_metric], cfg.early_stop_metric
    if not best:
        return not math.isnan(value)
    if _improved(value, best[key], cfg.early_stop_mode):
        return True
    tie = cfg.tiebreak_metric
    return bool(tie) and value == best[key] and _improved(metrics[tie], best[tie], cfg.tiebreak_mode)
