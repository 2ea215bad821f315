"""The GNN table of issue 3: each model's published preset on Cora and CiteSeer over N seeds.

Prints one JSON line per row (test accuracy at best validation, mean +- sample std, wall time per
epoch) with the target it must meet, then a short table. Each row is also a run directory under
--runs, so `cudalab runs show` gives its environment.

    python benchmarks/graph_table.py --data-root ../shared/data/planetoid [--seeds 10] [--models gcn,gat]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from cudalab.graph.task import DATASETS, MODELS, preset, train_graph

#: Issue 3's targets (10-seed mean test accuracy, %), Cora / CiteSeer.
TARGETS = {
    ("gcn", "Cora"): 81.0,
    ("gcn", "CiteSeer"): 70.0,
    ("gat", "Cora"): 82.5,
    ("gat", "CiteSeer"): 71.5,
    ("appnp", "Cora"): 82.5,
    ("appnp", "CiteSeer"): 71.0,
    ("sage", "Cora"): 80.0,
    ("sage", "CiteSeer"): 69.0,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--runs", type=Path, default=Path("runs-bench"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=0, help="override the presets' epochs (smoke runs only)")
    args = ap.parse_args()
    quiet = Console(quiet=True)
    rows = []
    for model in args.models.split(","):
        for dataset in args.datasets.split(","):
            cfg = preset(model, dataset)  # type: ignore[arg-type]
            cfg = replace(
                cfg,
                data=replace(cfg.data, root=str(args.data_root)),
                train=replace(
                    cfg.train,
                    seeds=args.seeds,
                    progress=False,
                    device=args.device,
                    max_epochs=args.epochs or cfg.train.max_epochs,
                ),
            )
            run, s = train_graph(cfg, runs_root=args.runs, resume="never", console=quiet)
            device = (run.manifest() or {}).get("device")
            row = {
                "config": f"{model}/{dataset}",
                "device": device,
                "seeds": s["n_seeds"],
                "test_acc_mean": round(100 * s["test_acc_mean"], 2),
                "test_acc_std": round(100 * s["test_acc_std"], 2),
                "target": TARGETS[(model, dataset)],
                "meets_target": 100 * s["test_acc_mean"] >= TARGETS[(model, dataset)],
                "epoch_time_ms": round(s["epoch_time_ms_mean"], 2),
                "run": str(run.path),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'config':<16} {'test acc %':>16} {'target':>7} {'ok':>4} {'epoch ms':>9}")
    for r in rows:
        acc = f"{r['test_acc_mean']:.2f} +- {r['test_acc_std']:.2f}"
        print(
            f"{r['config']:<16} {acc:>16} {r['target']:>7.1f} {'yes' if r['meets_target'] else 'NO':>4} "
            f"{r['epoch_time_ms']:>9.2f}"
        )


if __name__ == "__main__":
    main()
