"""The candidate classifier on held-out data: recall against S/N, false candidates removed, the three
models and two losses compared, throughput, and the demo observation.

For each model (fetchlike, mobilenet, cnn_bilstm) and loss (focal, balanced) a classifier is trained
through the engine on the set's ``train`` split (the shipped recipe: ``cudalab.radio.classify.task.preset``),
its threshold chosen on ``val`` (keep 99 % of real candidates of S/N >= 7), and it is measured on
``test`` (other observations and seeds, and a background never seen in training). Printed as JSON
lines, each with the measured figure, its reference and their ratio:

- recall of real candidates at search S/N >= 10 (goal 0.99) and 7-10 (goal 0.90); the reduction of
  the false candidates against the unfiltered list (goal 0.80);
- ROC AUC and average precision, and the latency (candidates per second scoring two 256 x 256
  planes in batches of 512, resizing included; goal on a GPU 20,000/s);
- the demo observation (``cudalab radio demo``'s) searched with the default model: every injected
  burst kept, and the share of candidates matching no injected pulse removed (goal 0.80).

ROC and PR curves and the recall-against-S/N curve go to ``OUT/radio_classifier.png``.

    python benchmarks/radio_classifier.py --data SET [--out DIR] [--models ...] [--losses ...]
                                          [--epochs N] [--device auto|cpu|cuda] [--quick]

``--quick`` builds a tiny set and trains one model for one epoch (so the script stays tested).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from cudalab.radio.classify.losses import pr_curve, roc_curve
from cudalab.radio.classify.score import Classifier, choose_threshold, held_out_figures, save_classifier
from cudalab.radio.classify.task import RadioClassifierConfig, experiment, load_split, preset
from cudalab.train.checkpoint import BEST, load
from cudalab.train.experiment import run_experiment

GOAL_RECALL_10 = 0.99
GOAL_RECALL_7_10 = 0.90
GOAL_REDUCTION = 0.80
GOAL_GPU_RATE = 20_000.0


def _plain(v: Any) -> Any:
    """NaN (a metric of a split without one class) as null: the lines stay strict JSON."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(_plain(record)), flush=True)


def train_one(
    data: Path,
    model: str,
    loss: str,
    runs: Path,
    epochs: int | None,
    device: str,
    batch_size: int | None = None,
) -> tuple[Classifier, float, RadioClassifierConfig]:
    """Train ``model`` with ``loss`` through the engine; return the best checkpoint as a classifier
    (threshold from val), the training seconds and the config."""
    cfg = preset(str(data), model, loss)  # type: ignore[arg-type]
    train = replace(cfg.train, device=device, progress=False, tensorboard=False)  # type: ignore[arg-type]
    if epochs is not None:
        train = replace(train, max_epochs=epochs)
    cfg = replace(cfg, train=train)
    if batch_size is not None:
        cfg = replace(cfg, data=replace(cfg.data, batch_size=batch_size))
    t0 = time.perf_counter()
    result = run_experiment(experiment(), cfg, runs_root=runs, run_id=f"{model}-{loss}", resume="never")
    seconds = time.perf_counter() - t0
    state = load(result.run.path / f"seed-{cfg.train.seed}" / "checkpoints" / BEST)
    net = experiment().make_task(cfg).build_model()
    net.load_state_dict(state["model"])
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    clf = Classifier(net.to(dev).eval(), cfg.data.size, 0.5, model, {}, dev)
    val = load_split(str(data), "val", cfg.data.size)
    clf.threshold = choose_threshold(clf.score_planes(val.x), val.y.numpy(), val.snr.numpy())
    return clf, seconds, cfg


@torch.no_grad()
def throughput(clf: Classifier, batch: int = 512, repeats: int = 3, bf16: bool = False) -> float:
    """Candidates per second from two 256 x 256 planes: resized on the device to the model's input,
    normalised per plane, scored (under bf16 autocast with ``bf16``)."""
    x = torch.randn(batch, 2, 256, 256, device=clf.device)
    autocast = torch.autocast(clf.device.type, dtype=torch.bfloat16, enabled=bf16)

    def run() -> None:
        small = F.adaptive_avg_pool2d(x, clf.size)
        flat = small.flatten(2)
        med = flat.median(dim=2, keepdim=True).values
        norm = ((flat - med) / flat.std(dim=2, keepdim=True).clamp_min(1e-12)).view_as(small)
        with autocast:
            torch.sigmoid(clf.model(norm))

    run()  # warm-up
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def speed_only(models: list[str], device: str) -> None:
    """Each model's candidates per second (fp32, and bf16 on a GPU) against the 20,000/s goal."""
    from cudalab.radio.classify.models import build_model

    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    for name in models:
        clf = Classifier(build_model(name).to(dev).eval(), 64, 0.5, name, {}, dev)  # type: ignore[arg-type]
        for bf16 in (False, True) if dev.type == "cuda" else (False,):
            rate = throughput(clf, repeats=10 if dev.type == "cuda" else 2, bf16=bf16)
            emit(
                {
                    "benchmark": "radio_classifier_throughput",
                    "model": name,
                    "device": str(dev),
                    "precision": "bf16" if bf16 else "fp32",
                    "candidates_per_s_256x256": round(rate, 1),
                    "reference_gpu_rate": GOAL_GPU_RATE,
                    "ratio": round(rate / GOAL_GPU_RATE, 4),
                }
            )


def demo_figures(weights: Path, device: str) -> dict[str, Any]:
    """The demo observation searched with ``weights``: bursts kept, non-burst candidates removed."""
    from cudalab.radio.evaluate import classifier_effect
    from cudalab.radio.pipeline.config import default_config
    from cudalab.radio.pipeline.outputs import run_search
    from cudalab.radio.simulate import demo_config, simulate

    with tempfile.TemporaryDirectory() as tmp:
        fil = Path(tmp) / "demo.fil"
        truth = simulate(demo_config(), fil)
        cfg = replace(default_config(), classify="on", classifier=str(weights), device=device)  # type: ignore[arg-type]
        result = run_search(fil, Path(tmp) / "search", cfg, truth=truth)
    assert result.scored is not None and result.classification is not None
    fx = classifier_effect(result.scored, truth, result.classification["threshold"])
    return {
        "effect": fx,
        "classify_seconds": result.classification["seconds"],
        "search_seconds": result.seconds,
    }


def plot(results: dict[str, dict[str, Any]], default: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    for name, r in results.items():
        fp, tp = roc_curve(r["prob"], r["y"])
        axes[0].plot(fp, tp, label=f"{name} (AUC {r['auc']:.3f})", lw=1.4 if name == default else 0.9)
        rec, prec = pr_curve(r["prob"], r["y"])
        axes[1].plot(rec, prec, label=f"{name} (AP {r['ap']:.3f})", lw=1.4 if name == default else 0.9)
    axes[0].set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        title="ROC, held-out test split",
        xscale="log",
    )
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall, held-out test split")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    r = results[default]
    real = r["y"] == 1
    edges = np.array([6, 7, 8, 9, 10, 12, 15, 20, 30, 50, 1e9])
    centres, recall, counts = [], [], []
    for lo, hi in itertools.pairwise(edges):
        sel = real & (r["snr"] >= lo) & (r["snr"] < hi)
        if sel.any():
            centres.append(lo if hi > 1e8 else (lo + hi) / 2)
            recall.append(float((r["prob"][sel] >= r["threshold"]).mean()))
            counts.append(int(sel.sum()))
    axes[2].plot(centres, recall, "o-")
    for x, y, n in zip(centres, recall, counts, strict=True):
        axes[2].annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
    axes[2].axhline(GOAL_RECALL_10, color="tab:green", ls="--", lw=0.8)
    axes[2].axhline(GOAL_RECALL_7_10, color="tab:orange", ls=":", lw=0.8)
    axes[2].set(xscale="log", xlabel="search S/N", ylabel="recall at the threshold", ylim=(0, 1.03),
                title=f"{default}: recall against S/N\n(numbers: real candidates)")  # fmt: skip
    path = out / "radio_classifier.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, help="A set from `cudalab radio dataset` (with --quick: built here)."
    )
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--models", default="fetchlike,mobilenet,cnn_bilstm")
    ap.add_argument("--losses", default="focal,balanced")
    ap.add_argument("--epochs", type=int, default=None, help="Override the preset's epochs.")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--weights", type=Path, default=None, help="The demo's classifier (default: the first trained)."
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--throughput",
        action="store_true",
        help="Only each model's scoring rate (untrained weights: speed only).",
    )
    args = ap.parse_args()
    if args.throughput:
        speed_only(args.models.split(","), args.device)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="radio-classifier-bench-"))
    if args.quick:
        from cudalab.radio.classify.dataset import DatasetConfig, build_dataset

        args.data = tmp / "set"
        build_dataset(
            DatasetConfig(observations=6, seed=4, nchans=(128,), nchans_p=(1.0,), dm_range=(20.0, 300.0),
                          snr_range=(6.0, 30.0), split_every=3, max_candidates=12),
            args.data,
        )  # fmt: skip
        args.models, args.losses, args.epochs = "fetchlike", "focal", 1
    if args.data is None:
        ap.error("--data is required (or --quick)")
    models, losses = args.models.split(","), args.losses.split(",")
    default = f"{models[0]}-{losses[0]}"
    results: dict[str, dict[str, Any]] = {}
    for model in models:
        for loss in losses:
            name = f"{model}-{loss}"
            clf, seconds, cfg = train_one(
                args.data, model, loss, tmp / "runs", args.epochs, args.device, 8 if args.quick else None
            )
            test = held_out_figures(clf, args.data)
            rate = throughput(clf)
            rec, burst = test["recall_by_snr"], test["burst_recall_by_snr"]
            r10, r7 = rec[">=10"]["recall"], rec["7-10"]["recall"]
            results[name] = test
            emit(
                {
                    "benchmark": "radio_classifier",
                    "model": model,
                    "loss": loss,
                    "device": str(clf.device),
                    "train_seconds": round(seconds, 1),
                    "threshold": round(clf.threshold, 4),
                    "test_candidates": test["candidates"],
                    "test_real": test["real"],
                    "auc": round(test["auc"], 4),
                    "ap": round(test["ap"], 4),
                    "recall_snr_ge_10": r10,
                    "recall_snr_ge_10_n": rec[">=10"]["n"],
                    "reference_recall_snr_ge_10": GOAL_RECALL_10,
                    "ratio_recall_snr_ge_10": None if r10 is None else round(r10 / GOAL_RECALL_10, 4),
                    "recall_snr_7_10": r7,
                    "recall_snr_7_10_n": rec["7-10"]["n"],
                    "reference_recall_snr_7_10": GOAL_RECALL_7_10,
                    "burst_recall_snr_ge_10": burst[">=10"]["recall"],
                    "burst_recall_snr_ge_10_n": burst[">=10"]["n"],
                    "burst_recall_snr_7_10": burst["7-10"]["recall"],
                    "burst_recall_snr_7_10_n": burst["7-10"]["n"],
                    "reduction": round(test["reduction"], 4),
                    "list_reduction": round(test["list_reduction"], 4),
                    "reference_reduction": GOAL_REDUCTION,
                    "ratio_reduction": test["reduction"] / GOAL_REDUCTION,
                    "by_background": test["by_background"],
                    "candidates_per_s_256x256": round(rate, 1),
                    "reference_gpu_rate": GOAL_GPU_RATE,
                    "ratio_rate": round(rate / GOAL_GPU_RATE, 4),
                }
            )
            if name == default and args.weights is None:
                save_classifier(
                    tmp / "default.pt", clf.model, cfg.model, size=clf.size, threshold=clf.threshold, card={}
                )
    emit({"benchmark": "radio_classifier_plot", "path": str(plot(results, default, args.out))})
    demo = demo_figures(args.weights or tmp / "default.pt", args.device)
    fx = demo["effect"]
    emit(
        {
            "benchmark": "radio_classifier_demo",
            "model": default if args.weights is None else str(args.weights),
            "bursts_found": fx["burst"]["found"],
            "bursts_kept": fx["burst"]["kept"],
            "pulsar_pulses_found": fx["pulsar"]["found"],
            "pulsar_pulses_kept": fx["pulsar"]["kept"],
            "other_candidates": fx["other"]["candidates"],
            "other_removed": fx["other"]["removed"],
            "removed_fraction": fx["other"]["removed_fraction"],
            "reference_removed_fraction": GOAL_REDUCTION,
            "ratio": None
            if fx["other"]["removed_fraction"] is None
            else round(fx["other"]["removed_fraction"] / GOAL_REDUCTION, 4),
            "classify_seconds": demo["classify_seconds"],
        }
    )


if __name__ == "__main__":
    main()
