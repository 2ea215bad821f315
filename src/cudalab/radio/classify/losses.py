"""Losses for imbalanced binary labels, and the ranking metrics the classifier is judged by.

- **focal** (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``; the easy examples (most noise
  candidates) are down-weighted by ``(1 - p_t)^gamma``, ``alpha`` weighs the positives;
- **balanced** cross-entropy (Cui et al. 2019, "class-balanced loss based on effective number of
  samples"): each class weighted by ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to 2;
- **bce**: plain binary cross-entropy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray

LossName = Literal["focal", "balanced", "bce"]
LOSSES: tuple[LossName, ...] = ("focal", "balanced", "bce")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float, gamma: float) -> torch.Tensor:
    """Mean binary focal loss; ``target`` in {0, 1}."""
    target = target.float()
    ce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    p = torch.sigmoid(logits.float())
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


def class_balanced_weights(n_negative: int, n_positive: int, beta: float = 0.999) -> tuple[float, float]:
    """Cui et al.'s weights (negative, positive), normalised to sum to 2."""
    w = [(1 - beta) / (1 - beta ** max(n, 1)) for n in (n_negative, n_positive)]
    total = sum(w)
    return 2 * w[0] / total, 2 * w[1] / total


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """Mean binary cross-entropy, each example weighted by its class's weight."""
    target = target.float()
    w = torch.where(target > 0.5, weights[1], weights[0])
    return (w * F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")).mean()


def roc_auc(scores: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Area under the ROC curve (the chance a random positive outscores a random negative; ties half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def average_precision(scores: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Area under the precision-recall curve as the mean precision at each positive's rank."""
    n_pos = int((labels == 1).sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / n_pos)


def roc_curve(
    scores: NDArray[np.floating], labels: NDArray[np.integer]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """False- and true-positive rates at every threshold, from the strictest."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    tp = np.concatenate([[0], np.cumsum(hits)]) / max(1, hits.sum())
    fp = np.concatenate([[0], np.cumsum(~hits)]) / max(1, (~hits).sum())
    return fp, tp


def pr_curve(
    scores: NDArray[np.floating], labels: NDArray[np.integer]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Recall and precision at every threshold, from the strictest."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    tp = np.cumsum(hits)
    return tp / max(1, hits.sum()), tp / np.arange(1, len(hits) + 1)
