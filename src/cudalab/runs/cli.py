"""``cudalab runs list | show RUN | diff RUN_A RUN_B``, and the config options every job command shares.

Reads run directories only (no torch import), so it is instant and works on a laptop holding
runs copied from a cluster. Every kind of run is shown the same way: a training run, a
multi-seed experiment, a radio search.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cudalab._console import command_group, stdout_console
from cudalab.env.fingerprint import package_diff, value_at
from cudalab.errors import CudalabError, ExitCode
from cudalab.runs.config import dumps, flatten, load_toml
from cudalab.runs.rundir import RunDir, list_runs, resolve_run

app = command_group("runs", "List, show and compare run directories (training runs and searches).")

# -- options shared by every command that makes a run ---------------------------------------------------

RootOption = Annotated[Path, typer.Option("--runs", help="Root of the run directories.")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A config.toml (e.g. a run's) instead of the preset.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="Override any config key, e.g. train.lr=0.02 (repeatable)."
    ),
]
PrintConfigOption = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config as TOML and exit.")
]


def print_config_toml(cfg: Any, header: str = "") -> None:
    """``--print-config``: the resolved config as the TOML that ``--config`` reads back, on stdout."""
    sys.stdout.write(dumps(cfg, header=header))


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


def _resolve(root: Path, ref: str) -> RunDir:
    try:
        return resolve_run(root, ref)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None


def _config(run: RunDir) -> dict[str, Any]:
    if not run.config_path.is_file():
        return {}
    try:
        return flatten(load_toml(run.config_path))
    except ValueError as exc:
        raise CudalabError(str(exc)) from None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def headline(summary: dict[str, Any] | None) -> str:
    """The one result a list shows: the summary's ``headline`` (metric, value, std, unit), robust to
    a summary written by hand or by another version."""
    if not summary:
        return ""
    h = summary.get("headline")
    if not isinstance(h, dict):
        return ""
    name, value, std = str(h.get("metric", "")), h.get("value"), _number(h.get("std"))
    unit = str(h.get("unit", ""))
    num = _number(value)
    if num is None:
        text = str(value)[:40]
    elif math.isfinite(num) and num == int(num) and abs(num) < 1e15:
        text = str(int(num))
    else:
        text = f"{num:.4g}"
    if std is not None:
        text += f" +- {std:.2g}"
    return f"{name} {text}{' ' + unit if unit else ''}".strip()


def environment_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The environment facts worth comparing, flattened, GPUs and packages included."""
    env = manifest.get("environment") or {}
    out = {label: value_at(env, path) for label, path in ENV_FIELDS}
    gpus = env.get("gpus") if isinstance(env, dict) else None
    out["GPUs"] = (
        ", ".join(str(g.get("name")) for g in gpus if isinstance(g, dict)) if isinstance(gpus, list) else ""
    )
    out["GPUs"] = out["GPUs"] or "none"
    out["world size"] = manifest.get("world_size")
    out["device"] = manifest.get("device")
    precision = manifest.get("precision")
    out["precision"] = precision.get("name") if isinstance(precision, dict) else None
    return out


def numeric_metrics(summary: dict[str, Any] | None) -> dict[str, float]:
    """Every number in a summary, flattened (per-seed lists and the headline left out)."""
    if not summary:
        return {}
    flat = flatten({k: v for k, v in summary.items() if k not in ("seeds", "headline")})
    return {k: v for k, v in flat.items() if _number(v) is not None}


def _row(run: RunDir) -> dict[str, Any]:
    m = run.manifest() or {}
    return {
        "kind": run.kind,
        "run_id": run.run_id,
        "path": str(run.path),
        "status": run.status(),
        "subject": m.get("subject") if isinstance(m.get("subject"), str) else "",
        "started_at": m.get("started_at"),
        "ended_at": m.get("ended_at"),
        "seed": m.get("seed"),
        "headline": headline(run.summary()),
        "summary": run.summary(),
    }


@app.command("list")
def list_cmd(
    root: RootOption = Path("runs"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Every run under the root (``<root>/<kind>/<id>`` or ``<root>/<id>``), oldest first."""
    runs = list_runs(root)
    if json_out:
        for run in runs:
            sys.stdout.write(json.dumps(_row(run), default=str) + "\n")
        raise typer.Exit(ExitCode.OK)
    table = Table(title=f"runs under {root}")
    for col in ("kind", "run id", "status", "started", "subject", "result"):
        table.add_column(col)
    for run in runs:
        r = _row(run)
        table.add_row(
            r["kind"], r["run_id"], r["status"], str(r["started_at"] or ""), r["subject"], r["headline"]
        )
    con = stdout_console()
    con.print(table)
    if not runs:
        con.print(f"no runs under {root}")
    raise typer.Exit(ExitCode.OK)


@app.command()
def show(
    run_ref: Annotated[
        str, typer.Argument(metavar="RUN", help="Path, kind/run-id, or a unique run-id prefix.")
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
            "kind": run.kind,
            "status": run.status(),
            "config": _config(run),
            "manifest": manifest,
            "summary": summary,
        }
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
        raise typer.Exit(ExitCode.OK)
    con = stdout_console()
    con.print(f"[bold]{run.kind}/{run.run_id}[/]  {run.status()}  ({run.path})")
    if manifest.get("subject"):
        con.print(f"subject {manifest['subject']}", highlight=False)
    resumptions = manifest.get("resumptions")
    con.print(
        f"started {manifest.get('started_at')}  ended {manifest.get('ended_at')}  "
        f"resumed {len(resumptions) if isinstance(resumptions, list) else 0} time(s)"
    )
    command = manifest.get("command")
    con.print(f"command {' '.join(map(str, command)) if isinstance(command, list) else ''}", highlight=False)
    if manifest.get("error"):
        con.print(f"error {manifest['error']}", highlight=False)
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
        value_at(ma, ("environment", "packages")) or [], value_at(mb, ("environment", "packages")) or []
    )
    sa, sb = numeric_metrics(a.summary()), numeric_metrics(b.summary())
    metric_rows = [(k, sa.get(k), sb.get(k)) for k in sorted(sa.keys() | sb.keys())]
    if json_out:
        out = {
            "a": str(a.path),
            "b": str(b.path),
            "kinds": [a.kind, b.kind],
            "config": {k: [va, vb] for k, va, vb in config_rows},
            "environment": {k: [va, vb] for k, va, vb in env_rows},
            "packages": {k: [va, vb] for k, va, vb in pkg_rows},
            "metrics": {k: [va, vb] for k, va, vb in metric_rows},
        }
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
        raise typer.Exit(ExitCode.OK)
    con = stdout_console()
    con.print(f"[bold]A[/] {a.kind}/{a.run_id}   [bold]B[/] {b.kind}/{b.run_id}")
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
        delta = f"{vb - va:+.4g}" if va is not None and vb is not None else ""
        table.add_row(key, _fmt(va), _fmt(vb), delta)
    con.print(table)
    raise typer.Exit(ExitCode.OK)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
