"""A trained classifier as a file, the one shipped inside the package, and scoring in batches.

A classifier file (``torch.save`` of plain tensors and JSON-ready values, read with
``weights_only=True``: loading one runs no code) holds the model's name and shape, the input size, the
operating threshold chosen on the validation split, the state dict, and the model card. The default
one ships in ``cudalab/radio/classify/weights/`` with its card (``MODEL_CARD.md``); nothing is
downloaded, ever.

:func:`export_classifier` turns a training run into such a file: it takes the run's best checkpoint,
chooses the threshold on ``val`` (the largest, up to 0.5, that keeps 99 % of the real candidates of
search S/N >= 7 there), measures the held-out ``test`` split, and writes the file and its card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from cudalab._io import atomic_open, atomic_write_json, atomic_write_text, file_sha256
from cudalab.radio.classify.data import planes, read_cutout
from cudalab.radio.classify.models import build_model

FORMAT = "cudalab-radio-classifier"
#: The file version this code writes and reads. Version 2: planes normalised by the robust noise and
#: stretched in the model (:mod:`~cudalab.radio.classify.models`); a version 1 model learnt planes
#: scaled by their plain standard deviation, unstretched, and would score the new ones wrongly.
VERSION = 2
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "fetchlike.pt"
#: Threshold rule: keep this share of the validation split's real candidates of S/N >= 7.
KEEP_ON_VAL = 0.99


@dataclass
class Classifier:
    """A loaded classifier: the model in eval mode on ``device``, its input size and threshold."""

    model: nn.Module
    size: int
    threshold: float
    name: str
    card: dict[str, Any]
    device: torch.device
    path: Path | None = None

    @torch.no_grad()
    def score_planes(self, x: NDArray[np.float32] | torch.Tensor, batch: int = 512) -> NDArray[np.float32]:
        """Probabilities that candidates ``(N, 2, size, size)`` are real, in batches."""
        t = torch.as_tensor(x, dtype=torch.float32)
        out = [
            torch.sigmoid(self.model(t[i : i + batch].to(self.device, non_blocking=True)).float()).cpu()
            for i in range(0, len(t), batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def score_files(
        self, paths: Sequence[Path], batch: int = 512, progress: Callable[[int, int], None] | None = None
    ) -> tuple[NDArray[np.float32], list[dict[str, Any]]]:
        """Probabilities for FETCH h5 files, read once each, ``batch`` at a time, and each file's
        attributes; ``ValueError`` naming a file that is not one."""
        probs, attrs = [], []
        for i in range(0, len(paths), batch):
            files = [read_cutout(p) for p in paths[i : i + batch]]
            attrs += [f.attrs for f in files]
            x = np.stack([planes(f.freq_time, f.dm_time, self.size) for f in files])
            probs.append(self.score_planes(x, batch))
            if progress is not None:
                progress(min(i + batch, len(paths)), len(paths))
        return (np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)), attrs


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> Classifier:
    """A classifier file (the shipped default when ``path`` is None); ``ValueError`` naming the fault."""
    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not p.is_file():
        raise ValueError(
            f"{p}: no such classifier file" + (" (the package ships none)" if path is None else "")
        )
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{p}: not a classifier file ({exc.__class__.__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(
            f"{p}: not a cudalab radio classifier (format {blob.get('format') if isinstance(blob, dict) else None!r})"
        )
    if blob.get("version") != VERSION:
        raise ValueError(
            f"{p}: classifier file version {blob.get('version')!r}; this cudalab reads version {VERSION} "
            "(its input scaling changed: train the model again)"
        )
    m = blob["model"]
    model = build_model(m["name"], int(m["width"]), float(m["dropout"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{p}: weights do not fit model {m['name']} ({str(exc).splitlines()[0]})") from None
    dev = torch.device(device)
    model.to(dev).eval()
    return Classifier(
        model=model,
        size=int(blob["size"]),
        threshold=float(blob["threshold"]),
        name=str(m["name"]),
        card=json.loads(blob.get("card", "{}")),
        device=dev,
        path=p,
    )


def default_classifier_available() -> bool:
    """Whether the package ships weights (``--classify`` is on by default when it does)."""
    return DEFAULT_WEIGHTS.is_file()


# --------------------------------------------------------------------------------------------------
# export: a run's best checkpoint as a classifier file with its card
# --------------------------------------------------------------------------------------------------


def choose_threshold(prob: NDArray[np.floating], y: NDArray[np.integer], snr: NDArray[np.floating]) -> float:
    """The largest threshold up to 0.5 that keeps :data:`KEEP_ON_VAL` of the real candidates of S/N >= 7."""
    real = prob[(y == 1) & (snr >= 7)]
    if len(real) == 0:
        return 0.5
    return float(min(0.5, np.quantile(real, 1 - KEEP_ON_VAL)))


def snr_recall(
    prob: NDArray[np.floating], y: NDArray[np.integer], snr: NDArray[np.floating], threshold: float
) -> dict[str, Any]:
    """Recall of real candidates per search-S/N bin, with counts."""
    out = {}
    for lo, hi in ((6, 7), (7, 10), (10, 20), (20, math.inf)):
        sel = (y == 1) & (snr >= lo) & (snr < hi)
        name = f"{lo}-{hi}" if math.isfinite(hi) else f">={lo}"
        out[name] = {
            "n": int(sel.sum()),
            "recall": float((prob[sel] >= threshold).mean()) if sel.any() else None,
        }
    sel = (y == 1) & (snr >= 10)
    out[">=10"] = {
        "n": int(sel.sum()),
        "recall": float((prob[sel] >= threshold).mean()) if sel.any() else None,
    }
    return out


def held_out_figures(clf: Classifier, root: str | Path, split: str = "test") -> dict[str, Any]:
    """The classifier on one split of a set: ranking figures, recall per S/N, false candidates removed,
    per background (the held-out receiver separately)."""
    from cudalab.radio.classify.dataset import read_index
    from cudalab.radio.classify.task import classifier_metrics, load_split

    s = load_split(str(root), split, clf.size)
    prob = clf.score_planes(s.x)
    y, snr = s.y.numpy(), s.snr.numpy()
    backgrounds = np.array([e.background for e in read_index(root) if e.split == split and e.label in (0, 1)])
    per_bg = {}
    for bg in sorted(set(backgrounds)):
        sel = backgrounds == bg
        per_bg[bg] = {
            "candidates": int(sel.sum()),
            "real": int(y[sel].sum()),
            **classifier_metrics(prob[sel], y[sel], snr[sel], clf.threshold),
        }
    return {
        "split": split,
        "candidates": len(y),
        "real": int(y.sum()),
        "threshold": clf.threshold,
        **classifier_metrics(prob, y, snr, clf.threshold),
        # the whole list's shrinkage: bounded by the share of real candidates in this set (which is
        # far higher than in a survey's lists, where nearly every candidate is false)
        "list_reduction": float((prob < clf.threshold).mean()) if len(prob) else float("nan"),
        "recall_by_snr": snr_recall(prob, y, snr, clf.threshold),
        # the bursts alone (the pulsar's single pulses are real too, and counted above)
        "burst_recall_by_snr": snr_recall(prob, y * (np.array(s.kinds) == "burst"), snr, clf.threshold),
        "by_background": per_bg,
        "prob": prob,
        "y": y,
        "snr": snr,
        "kinds": list(s.kinds),
    }


def export_classifier(
    run_path: str | Path, out: str | Path, *, seed_dir: str | None = None
) -> dict[str, Any]:
    """Write the classifier file ``out`` (and ``out``'s ``.card.json`` / ``MODEL_CARD.md`` beside it)
    from a finished ``radio-classifier`` run; return the card."""
    from cudalab.radio.classify.task import RadioClassifierConfig, load_split
    from cudalab.runs.config import from_dict, load_toml
    from cudalab.runs.rundir import RunDir
    from cudalab.train.checkpoint import BEST, load

    run = RunDir(Path(run_path))
    manifest = run.manifest() or {}
    if manifest.get("kind") != "radio-classifier":
        raise ValueError(f"{run.path}: not a radio-classifier run (kind {manifest.get('kind')!r})")
    cfg = from_dict(RadioClassifierConfig, load_toml(run.config_path))
    seeds = sorted(run.path.glob("seed-*")) if seed_dir is None else [run.path / seed_dir]
    if not seeds or not (seeds[0] / "checkpoints" / BEST).is_file():
        raise ValueError(f"{run.path}: no best checkpoint (seed-*/checkpoints/{BEST}); has the run finished?")
    child = RunDir(seeds[0])
    state = load(seeds[0] / "checkpoints" / BEST)
    model = build_model(cfg.model.name, cfg.model.width, cfg.model.dropout)
    model.load_state_dict(state["model"])
    model.eval()
    clf = Classifier(model, cfg.data.size, 0.5, cfg.model.name, {}, torch.device("cpu"))
    val = load_split(cfg.data.root, "val", cfg.data.size)
    val_prob = clf.score_planes(val.x)
    clf.threshold = choose_threshold(val_prob, val.y.numpy(), val.snr.numpy())
    test = held_out_figures(clf, cfg.data.root)
    dataset_meta = json.loads((Path(cfg.data.root) / "dataset.json").read_text(encoding="utf-8"))
    summary = child.summary() or {}
    child_manifest = child.manifest() or {}
    card = {
        "model": {
            "name": cfg.model.name,
            "width": cfg.model.width,
            "dropout": cfg.model.dropout,
            "parameters": sum(p.numel() for p in model.parameters()),
            "input_size": cfg.data.size,
        },
        "loss": cfg.loss.name,
        "threshold": clf.threshold,
        "threshold_rule": f"largest <= 0.5 keeping {KEEP_ON_VAL:.0%} of val's real candidates of S/N >= 7",
        "dataset": {
            "recipe": dataset_meta.get("config"),
            "counts": dataset_meta.get("counts"),
            "build_seconds": dataset_meta.get("seconds"),
            "command": "cudalab radio dataset",
        },
        "training": {
            "run": str(run.path),
            "command": manifest.get("command") or child_manifest.get("command"),
            "seed": state.get("seed", cfg.train.seed),
            "best_step": (summary.get("best") or {}).get("step"),
            "epochs": summary.get("epochs"),
            "train_time_s": summary.get("train_time_s"),
            "device": child_manifest.get("device") or manifest.get("device"),
            "world_size": manifest.get("world_size"),
        },
        "val": {
            "threshold_from": "val",
            **{k: v for k, v in (summary.get("best") or {}).get("metrics", {}).items()},
        },
        "test": {k: v for k, v in test.items() if k not in ("prob", "y", "snr", "kinds")},
        "commit": _commit(),
    }
    out = save_classifier(out, model, cfg.model, size=cfg.data.size, threshold=clf.threshold, card=card)
    card["sha256"] = file_sha256(out)
    atomic_write_json(out.with_suffix(".card.json"), card)
    atomic_write_text(out.parent / "MODEL_CARD.md", model_card_markdown(card, out.name))
    return card


def save_classifier(
    path: str | Path, model: nn.Module, shape: Any, *, size: int, threshold: float, card: dict[str, Any]
) -> Path:
    """Write a classifier file (atomically): ``model``'s weights, its ``shape`` (a config with
    ``name``, ``width``, ``dropout``), input ``size``, ``threshold`` and ``card``."""
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": shape.name, "width": shape.width, "dropout": shape.dropout},
        "size": size,
        "threshold": threshold,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "card": json.dumps(card),
    }
    with atomic_open(path) as fh:
        torch.save(blob, fh)
    return Path(path)


def _commit() -> str | None:
    """The commit of the code that exported (with ``-dirty`` for uncommitted changes)."""
    from cudalab.env.fingerprint import git_state

    g = git_state(Path(__file__).parent)
    if not g or not g.get("commit"):
        return None
    return str(g["commit"]) + ("-dirty" if g.get("dirty") else "")


def model_card_markdown(card: dict[str, Any], filename: str) -> str:
    """The card as Markdown."""
    t, tr, ds = card["test"], card["training"], card["dataset"]
    rec = ds.get("recipe") or {}
    lines = [
        f"# Model card: `{filename}` (radio candidate classifier)",
        "",
        f"- **Model**: {card['model']['name']}, {card['model']['parameters']:,} parameters, input 2 x "
        f"{card['model']['input_size']} x {card['model']['input_size']} (frequency-time, DM-time); loss {card['loss']}.",
        f"- **Operating threshold**: {card['threshold']:.4f} ({card['threshold_rule']}).",
        f"- **sha256**: `{card.get('sha256', '')}`; commit `{card.get('commit')}`.",
        f"- **Data**: `cudalab radio dataset` with seed {rec.get('seed')}, {rec.get('observations')} observations "
        f"(S/N {rec.get('snr_range')}, DM {rec.get('dm_range')}, widths {rec.get('width_range_ms')} ms; "
        f"backgrounds {[Path(b).name for b in rec.get('backgrounds', [])]}, held out for test: "
        f"{[Path(b).name for b in rec.get('holdout', [])]}); built in {ds.get('build_seconds')} s.",
        f"- **Training**: `{' '.join(tr['command']) if isinstance(tr.get('command'), list) else tr.get('command')}`; "
        f"{tr.get('epochs')} epochs, best step {tr.get('best_step')}, {tr.get('train_time_s')} s on {tr.get('device')} "
        f"(world size {tr.get('world_size')}).",
        "",
        f"## Held-out test split ({t['candidates']} candidates, {t['real']} real)",
        "",
        f"ROC AUC {t['auc']:.4f}, average precision {t['ap']:.4f}; at the threshold: recall {t['recall']:.4f}, "
        f"recall at search S/N >= 10 {t['recall_snr10']:.4f}, false candidates removed {t['reduction']:.4f} "
        f"(the whole list {t['list_reduction']:.4f} shorter: {t['real'] / max(t['candidates'], 1):.0%} of this "
        "split's candidates are real, far more than in a survey's lists).",
        "",
        "| search S/N | real candidates | recall | of them bursts | recall |",
        "|---|---|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    for k, v in t["recall_by_snr"].items():
        b = t["burst_recall_by_snr"][k]
        lines.append(f"| {k} | {v['n']} | {fmt(v['recall'])} | {b['n']} | {fmt(b['recall'])} |")
    lines += [
        "",
        "| background | candidates | real | AP | recall | false removed |",
        "|---|---|---|---|---|---|",
    ]
    for bg, v in t["by_background"].items():
        lines.append(
            f"| {bg} | {v['candidates']} | {v['real']} | {v['ap']:.4f} | {v['recall']:.4f} | {v['reduction']:.4f} |"
        )
    return "\n".join(lines) + "\n"
