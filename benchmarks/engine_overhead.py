"""Engine step time against a bare training loop on the same model, data and precision (goal <= 3 %).

Both run the same GNN preset full-batch for the same steps; the bare loop is the minimal
`zero_grad / forward / backward / step` under the same autocast. The engine's time comes from its
own metrics.jsonl (wall clock between two logged steps, so start-up, the final evaluation and the
final checkpoint are excluded); evaluation and checkpoints are pushed past the end, logging and
TensorBoard stay on at their defaults.

    python benchmarks/engine_overhead.py --data-root ../shared/data/planetoid [--model gat] [--steps 600]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from cudalab.env.device import resolve_device
from cudalab.graph.data import load_planetoid
from cudalab.graph.task import NodeClassification, preset
from cudalab.runs.rundir import RunDir, read_metrics
from cudalab.train.distributed import DistInfo
from cudalab.train.optim import build_optimizer
from cudalab.train.precision import resolve_precision
from cudalab.train.trainer import train_run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(task: NodeClassification, cfg, steps: int, warmup: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per step of the minimal loop."""
    device, _ = resolve_device(cfg.train.device)
    plan = resolve_precision(cfg.train.precision, device)
    task.setup(device, DistInfo(), cfg.train.seed)
    model = task.build_model().to(device)
    opt = build_optimizer(cfg.train, task.param_groups(model))
    amp = (
        torch.autocast(device.type, dtype=plan.autocast_dtype)
        if plan.autocast_dtype
        else contextlib.nullcontext()
    )
    t0 = 0.0
    for i in range(steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = task.training_step(model, None)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / (steps - warmup)


def engine(task: NodeClassification, cfg, steps: int, warmup: int, run: RunDir) -> float:  # type: ignore[no-untyped-def]
    """Seconds per step of the engine, from its own log between step ``warmup`` and the last (a fresh
    run directory each time: an existing one would be resumed)."""
    t = replace(
        cfg.train,
        max_epochs=steps,
        log_every=warmup,
        eval_every=10 * steps,
        checkpoint_every=10 * steps,
        early_stop_metric="",
        tiebreak_metric="",
        patience=0,
        progress=False,
    )
    train_run(task, t, run, kind="bench", environment={}, console=Console(quiet=True))
    times = {r["step"]: r["time_s"] for r in read_metrics(run.metrics_path) if "time_s" in r}
    last = max(times)
    return (times[last] - times[warmup]) / (last - warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--model", default="gcn")
    ap.add_argument("--dataset", default="Cora")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = preset(args.model, args.dataset)
    cfg = replace(cfg, train=replace(cfg.train, device=args.device))
    data = load_planetoid(args.data_root, args.dataset)
    warmup = max(1, args.steps // 6)
    bare_s, engine_s = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):  # interleaved, best of each: the machine's noise hits both alike
            bare_s.append(bare(NodeClassification(cfg, data), cfg, args.steps, warmup))
            run = RunDir(Path(d) / "bench" / f"engine-{i}")
            engine_s.append(engine(NodeClassification(cfg, data), cfg, args.steps, warmup, run))
    device, why = resolve_device(args.device)
    row = {
        "config": f"{args.model}/{args.dataset} full-batch",
        "device": why,
        "precision": resolve_precision(cfg.train.precision, device).name,
        "steps": args.steps,
        "bare_step_ms": round(1000 * min(bare_s), 4),
        "engine_step_ms": round(1000 * min(engine_s), 4),
        "overhead_pct": round(100 * (min(engine_s) / min(bare_s) - 1), 2),
        "goal_pct": 3.0,
    }
    print(json.dumps(row))
    print(
        f"bare {row['bare_step_ms']:.3f} ms/step   engine {row['engine_step_ms']:.3f} ms/step   "
        f"overhead {row['overhead_pct']:+.2f} % (goal <= 3 %)"
    )


if __name__ == "__main__":
    main()
