"""Pictures of a trained image classifier: its confusion matrix and its most confident mistakes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cudalab._io import atomic_write_bytes, atomic_write_json
from cudalab.runs.rundir import RunDir

GRID = 6
"""The misclassified grid is GRID x GRID images at most."""


def confusion(pred: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    return np.bincount(labels * n + pred, minlength=n * n).reshape(n, n)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_figures(
    run: RunDir, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, classes: Sequence[str]
) -> dict[str, Any]:
    """``confusion.png``, ``confusion.json`` and ``misclassified.png`` in the run directory, and both
    pictures in its TensorBoard events (when tensorboard is installed). Returns the JSON written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    prob = torch.softmax(logits.float(), 1)
    conf, pred = prob.max(1)
    y = labels.numpy()
    cm = confusion(pred.numpy(), y, n)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    record = {
        "classes": list(classes),
        "matrix": cm.tolist(),
        "accuracy": float(cm.trace() / max(cm.sum(), 1)),
        "per_class_recall": {c: float(r) for c, r in zip(classes, per_class, strict=True)},
    }
    atomic_write_json(run.path / "confusion.json", record)

    side = min(12.0, 2.5 + 0.55 * n)
    fig_cm, ax = plt.subplots(figsize=(side, side * 0.85))
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation: {record['accuracy']:.1%} of {int(cm.sum())} correct")

    wrong = torch.nonzero(pred != labels).flatten()
    wrong = wrong[torch.argsort(conf[wrong], descending=True)][: GRID * GRID]
    cols = min(GRID, max(1, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig_mis, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows), squeeze=False)
    for k, a in enumerate(axes.flat):
        a.axis("off")
        if k < len(wrong):
            i = int(wrong[k])
            a.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            a.set_title(
                f"{classes[int(labels[i])]}\n-> {classes[int(pred[i])]} {float(conf[i]):.2f}", fontsize=7
            )
    fig_mis.suptitle(
        "most confident mistakes (true -> predicted, probability)" if len(wrong) else "no mistakes"
    )

    tb = _writer(run)
    if tb is not None:
        tb.add_figure("eval/confusion_matrix", fig_cm, close=False)
        tb.add_figure("eval/misclassified", fig_mis, close=False)
        tb.close()
    atomic_write_bytes(run.path / "confusion.png", _png(fig_cm))
    atomic_write_bytes(run.path / "misclassified.png", _png(fig_mis))
    return record


def _writer(run: RunDir) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run.tensorboard))


__all__ = ["confusion", "write_figures"]
