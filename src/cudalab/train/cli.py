"""``cudalab runs list | show RUN | diff RUN_A RUN_B``: what ran, where, and what differs.

Reads run directories only (no torch import), so it is instant and works on a laptop holding
runs copied from a cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cudalab._console import command_group, stdout_console
from cudalab.errors import CudalabError, ExitCode
from cudalab.train.config import flatten, load_toml
from cudalab.train.run import CONFIG, RunDir, list_runs, resolve_run

app = command_group("runs", "List, show and compare run directories.")

RootOption = Annotated[Path, typer.Option("--runs", help="Root of the run directories.")]

#: Environment facts a diff reports, as (label, path into manifest["environment"]).
ENV_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cudalab", ("cudalab",)),
    ("python", ("python", "version")),
    ("torch", ("torch", "version")),
    ("torch CUDA", ("torch", "cuda")),
    ("cuDNN", ("torch", "cudnn")),
    ("NCCL", ("torch", "nccl")),
    ("driver", ("driver", "version")),
    ("kernel", ("platform", "kernel")),
    ("host", ("platform", "hostname")),
    ("container image", ("container", "image")),
    ("image digest", ("container", "image_digest")),
    ("git commit", ("git", "commit")),
    ("git dirty", ("git", "dirty")),
    ("packages sha256", ("packages_sha256",)),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _resolve(root: Path, ref: str) -> RunDir:
    try:
        return resolve_run(root, ref)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None


def _config(run: RunDir) -> dict[str, Any]:
    path = run.path / CONFIG
    if not path.is_file():
        return {}
    try:
        return flatten(load_toml(path))
    except ValueError as exc:
        raise CudalabError(str(exc)) from None


def _headline(summary: dict[str, Any] | None) -> str:
    """The one number a list shows: mean test accuracy, or the best/final metric."""
    if not summary:
        return ""
    if "test_acc_mean" in summary:
        return (
            f"test_acc {100 * summary['test_acc_mean']:.2f} +- {100 * summary.get('test_acc_std', 0):.2f} %"
        )
    best = summary.get("best") or {}
    if best.get("metric") and best.get("value") is not None:
        return f"{best['metric']} {best['value']:.4g}"
    return ""


def environment_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The environment facts worth comparing, flattened, GPUs and packages included."""
    env = manifest.get("environment") or {}
    out = {label: _get(env, path) for label, path in ENV_FIELDS}
    gpus = env.get("gpus") or []
    out["GPUs"] = ", ".join(str(g.get("name")) for g in gpus) or "none"
    out["world size"] = manifest.get("world_size")
    out["device"] = manifest.get("device")
    out["precision"] = (manifest.get("precision") or {}).get("name")
    return out


def package_diff(a: list[str], b: list[str]) -> list[tuple[str, str, str]]:
    """(name, version in A, version in B) for every package that differs ('-' when absent)."""

    def parse(items: list[str]) -> dict[str, str]:
        out = {}
        for item in items:
            name, _, version = item.partition("==")
            out[name.lower().replace("_", "-")] = version
        return out

    pa, pb = parse(a), parse(b)
    return [
        (n, pa.get(n, "-"), pb.get(n, "-")) for n in sorted(pa.keys() | pb.keys()) if pa.get(n) != pb.get(n)
    ]


def numeric_metrics(summary: dict[str, Any] | None) -> dict[str, float]:
    """Every number in a summary, flattened (per-seed lists left out)."""
    if not summary:
        return {}
    flat = flatten({k: v for k, v in summary.items() if k != "seeds"})
    return {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@app.command("list")
def list_cmd(
    root: RootOption = Path("runs"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Every run under the root, oldest first."""
    runs = list_runs(root)
    if json_out:
        for run in runs:
            m = run.manifest() or {}
            rec = {
                "task": run.task,
                "run_id": run.run_id,
                "path": str(run.path),
                "status": run.status(),
                "started_at": m.get("started_at"),
                "ended_at": m.get("ended_at"),
                "seed": m.get("seed"),
                "summary": run.summary(),
            }
            sys.stdout.write(json.dumps(rec) + "\n")
        raise typer.Exit(ExitCode.OK)
    table = Table(title=f"runs under {root}")
    for col in ("task", "run id", "status", "started", "seed", "result"):
        table.add_column(col)
    for run in runs:
        m = run.manifest() or {}
        table.add_row(
            run.task,
            run.run_id,
            run.status(),
            str(m.get("started_at", "")),
            str(m.get("seed", "")),
            _headline(run.summary()),
        )
    stdout_console().print(table)
    if not runs:
        stdout_console().print(f"no runs under {root}")
    raise typer.Exit(ExitCode.OK)


@app.command()
def show(
    run_ref: Annotated[
        str, typer.Argument(metavar="RUN", help="Path, task/run-id, or a unique run-id prefix.")
    ],
    root: RootOption = Path("runs"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print config, manifest and summary as JSON.")
    ] = False,
) -> None:
    """One run: where, when, on what, with which config, and its result."""
    run = _resolve(root, run_ref)
    manifest, summary = run.manifest() or {}, run.summary()
    if json_out:
        out = {
            "path": str(run.path),
            "status": run.status(),
            "config": _config(run),
            "manifest": manifest,
            "summary": summary,
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        raise typer.Exit(ExitCode.OK)
    con = stdout_console()
    con.print(f"[bold]{run.task}/{run.run_id}[/]  {run.status()}  ({run.path})")
    con.print(
        f"started {manifest.get('started_at')}  ended {manifest.get('ended_at')}  "
        f"resumed {len(manifest.get('resumptions') or [])} time(s)"
    )
    con.print(f"command {' '.join(manifest.get('command') or [])}", highlight=False)
    env = Table(title="environment", show_header=False)
    for key, value in environment_summary(manifest).items():
        env.add_row(key, "" if value is None else str(value))
    con.print(env)
    cfg = Table(title="config", show_header=False)
    for key, value in _config(run).items():
        cfg.add_row(key, repr(value))
    con.print(cfg)
    metrics = numeric_metrics(summary)
    if metrics:
        res = Table(title="summary", show_header=False)
        for key, value in metrics.items():
            res.add_row(key, f"{value:.6g}")
        con.print(res)
    raise typer.Exit(ExitCode.OK)


@app.command()
def diff(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B")],
    root: RootOption = Path("runs"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
) -> None:
    """What differs between two runs: config, environment, packages, and the final metrics side by side."""
    a, b = _resolve(root, run_a), _resolve(root, run_b)
    ca, cb = _config(a), _config(b)
    config_rows = [
        (k, ca.get(k, "-"), cb.get(k, "-")) for k in sorted(ca.keys() | cb.keys()) if ca.get(k) != cb.get(k)
    ]
    ma, mb = a.manifest() or {}, b.manifest() or {}
    ea, eb = environment_summary(ma), environment_summary(mb)
    env_rows = [(k, ea[k], eb.get(k)) for k in ea if ea[k] != eb.get(k)]
    pkg_rows = package_diff(
        _get(ma, ("environment", "packages")) or [], _get(mb, ("environment", "packages")) or []
    )
    sa, sb = numeric_metrics(a.summary()), numeric_metrics(b.summary())
    metric_rows = [(k, sa.get(k), sb.get(k)) for k in sorted(sa.keys() | sb.keys())]
    if json_out:
        out = {
            "a": str(a.path),
            "b": str(b.path),
            "config": {k: [va, vb] for k, va, vb in config_rows},
            "environment": {k: [va, vb] for k, va, vb in env_rows},
            "packages": {k: [va, vb] for k, va, vb in pkg_rows},
            "metrics": {k: [va, vb] for k, va, vb in metric_rows},
        }
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
        raise typer.Exit(ExitCode.OK)
    con = stdout_console()
    con.print(f"[bold]A[/] {a.task}/{a.run_id}   [bold]B[/] {b.task}/{b.run_id}")
    for title, rows in (("config", config_rows), ("environment", env_rows), ("packages", pkg_rows)):
        if not rows:
            con.print(f"{title}: identical")
            continue
        table = Table(title=f"{title} differences")
        for col in ("key", "A", "B"):
            table.add_column(col)
        for key, va, vb in rows:
            table.add_row(key, _fmt(va), _fmt(vb))
        con.print(table)
    table = Table(title="final metrics")
    for col in ("metric", "A", "B", "B - A"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, va, vb in metric_rows:
        delta = f"{vb - va:+.4g}" if isinstance(va, int | float) and isinstance(vb, int | float) else ""
        table.add_row(key, _fmt(va), _fmt(vb), delta)
    con.print(table)
    raise typer.Exit(ExitCode.OK)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
