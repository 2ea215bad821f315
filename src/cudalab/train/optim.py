"""The optimizer and the learning-rate schedule a :class:`~cudalab.train.config.TrainConfig` names."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from cudalab.train.config import TrainConfig


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak LR at a step: linear warm-up, then constant, cosine or linear decay."""
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warm)
        t = min(1.0, (step - warm) / span)
        shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
        return floor + (1 - floor) * shape

    return f


def build_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over the task's parameter groups, at the config's peak learning rate."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
