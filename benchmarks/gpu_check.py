"""The GPU acceptance run: every GPU test and benchmark, in one command, inside a time budget.

What a user runs on a new GPU node to see that it and cudalab work, and what a session lent a GPU
runs first. From a plain checkout, with no venv and no network, on a machine whose Python has torch:

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out DIR [--budget-s 480]
    python3 benchmarks/gpu_check.py --dry-run           # the plan: steps, estimates, caps, commands

The steps (``gpu_steps.py``) run in order, each a subprocess in its own session with its own cap;
one that no longer fits what is left of the budget (by its estimate) is skipped and says so. After
every step the results so far are written, so a later failure or hang never loses them:

    DIR/gpu_check.json   one record per step: command, status, seconds, figures; the environment
    DIR/gpu_check.md     the table, ready to paste into benchmarks/RESULTS.md
    DIR/logs/NAME.log    each step's output

Exit codes: 0 every step that ran passed (some may be skipped), 1 a step failed or ran out of time,
2 bad usage or no usable CUDA GPU (one line says which).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "src")]

from gpu_steps import STEPS, Step  # noqa: E402

#: Seconds a stopped step gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 5.0


@dataclass
class Result:
    """What became of one step."""

    name: str
    what: str
    command: list[str]
    status: str
    """passed, failed, timeout, or skipped."""
    seconds: float = 0.0
    returncode: int | None = None
    reason: str = ""
    """Why it was skipped, or the tail of a failure."""
    estimate_s: float = 0.0
    cap_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    log: str = ""


# --------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------


def data_root(explicit: Path | None = None) -> Path | None:
    """The real-data folder: ``--data``, ``$CUDALAB_DATA``, ``../shared/data``, or ``.data`` in the
    checkout (where a session that carries it puts it); None when none exists."""
    candidates = [explicit] if explicit else []
    if os.environ.get("CUDALAB_DATA"):
        candidates.append(Path(os.environ["CUDALAB_DATA"]))
    candidates += [REPO.parent / "shared" / "data", REPO / ".data"]
    return next((p.resolve() for p in candidates if p is not None and p.is_dir()), None)


def command(step: Step, python: str, data: Path | None) -> list[str]:
    return [
        a.replace("{python}", python).replace("{data}", str(data) if data else "<no data>") for a in step.argv
    ]


def missing(step: Step, data: Path | None, importable: Callable[[str], bool]) -> str:
    """Why ``step`` cannot run here ('' when it can): modules or data folders it lacks."""
    mods = [m for m in step.needs if not importable(m)]
    if mods:
        return f"missing Python packages: {', '.join(mods)}"
    folders = [d for d in step.data if data is None or not (data / d).is_dir()]
    if folders:
        return f"missing real data: {', '.join(folders)} (set CUDALAB_DATA or --data)"
    return ""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def print_plan(steps: Sequence[Step], budget_s: float, python: str, data: Path | None) -> None:
    """``--dry-run``: what would run, in order, with estimates and caps, and whether it fits."""
    total = 0.0
    print(f"GPU acceptance plan: budget {budget_s:.0f} s; real data: {data or 'none found'}")
    for step in steps:
        total += step.estimate_s
        fits = "fits" if total <= budget_s else "over budget: would be skipped"
        why = missing(step, data, _importable)
        print(
            f"- {step.name}: ~{step.estimate_s:.0f} s (cap {step.cap_s:.0f} s), {total:.0f} s so far, {fits}"
        )
        print(f"    {step.what}")
        print(f"    $ {' '.join(command(step, python, data))}")
        if why:
            print(f"    here: {why}")
    print(f"estimated total {total:.0f} s of {budget_s:.0f} s")


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's whole process group, then SIGKILL what is left after the grace time."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, argv: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> Result:
    """Run one step to completion or to ``timeout_s``; its output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    result = Result(
        step.name, step.what, argv, "failed", estimate_s=step.estimate_s, cap_s=step.cap_s, log=str(log)
    )
    t0 = time.perf_counter()
    with log.open("wb") as fh:
        try:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a timeout stops everything it started
            )  # fmt: skip
        except OSError as exc:
            result.reason = f"could not start: {exc.strerror}"
            return result
        try:
            result.returncode = proc.wait(timeout_s)
            result.status = "passed" if result.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(proc)
            result.status = "timeout"
            result.reason = f"stopped after {timeout_s:.0f} s"
    result.seconds = round(time.perf_counter() - t0, 2)
    text = log.read_text(errors="replace")
    result.figures = figures(step, text)
    if result.status == "failed":
        result.reason = " | ".join(text.strip().splitlines()[-3:])[-400:]
    return result


_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def figures(step: Step, text: str) -> dict[str, Any]:
    """What a step's output says: pytest's counts and failures, or the JSON records it printed (kept
    even from a step stopped half-way)."""
    if step.shown == ("pytest",):
        summary = [line for line in text.splitlines() if " in " in line and _PYTEST_COUNTS.search(line)]
        counts = (
            {
                k.rstrip("s") if k.startswith("error") else k: int(n)
                for n, k in _PYTEST_COUNTS.findall(summary[-1])
            }
            if summary
            else {}
        )
        failures = [
            line.split(" ", 1)[1].split(" - ")[0]
            for line in text.splitlines()
            if line.startswith(("FAILED ", "ERROR "))
        ]
        return {"counts": counts, "failures": failures}
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    records.append(rec)
    return {"records": records}


def run(
    steps: Sequence[Step],
    out: Path,
    budget_s: float,
    *,
    python: str = sys.executable,
    data: Path | None = None,
    environment: dict[str, Any] | None = None,
    importable: Callable[[str], bool] = _importable,
    clock: Callable[[], float] = time.monotonic,
) -> list[Result]:
    """Run ``steps`` in order within ``budget_s`` seconds, writing the reports after each."""
    start = clock()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    if data is not None:
        env["CUDALAB_DATA"] = str(data)
    results: list[Result] = []
    header = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "budget_s": budget_s}
    for step in steps:
        argv = command(step, python, data)
        left = budget_s - (clock() - start)
        why = missing(step, data, importable)
        if not why and step.estimate_s > left:
            why = f"needs ~{step.estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left"
        if why:
            results.append(
                Result(
                    step.name,
                    step.what,
                    argv,
                    "skipped",
                    reason=why,
                    estimate_s=step.estimate_s,
                    cap_s=step.cap_s,
                )
            )
            print(f"[{step.name}] skipped: {why}", flush=True)
        else:
            print(f"[{step.name}] {step.what} (cap {min(step.cap_s, left):.0f} s)", flush=True)
            result = run_step(step, argv, out / "logs" / f"{step.name}.log", min(step.cap_s, left), env)
            results.append(result)
            print(
                f"[{step.name}] {result.status} in {result.seconds:.1f} s {result.reason}".rstrip(),
                flush=True,
            )
        write_reports(out, results, steps, header, environment or {})
    return results


# --------------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------------


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_reports(
    out: Path,
    results: list[Result],
    steps: Sequence[Step],
    header: dict[str, Any],
    environment: dict[str, Any],
) -> None:
    """gpu_check.json and gpu_check.md as they stand now (each written whole, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {**header, "environment": environment, "steps": [asdict(r) for r in results]}
    _atomic(out / "gpu_check.json", json.dumps(doc, indent=2, default=str) + "\n")
    _atomic(out / "gpu_check.md", markdown(results, steps, header, environment))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def shown_figures(step: Step | None, result: Result) -> str:
    """A step's figures in a table cell: pytest's counts, or the shown fields of each full record."""
    f = result.figures
    if "counts" in f:
        counts = ", ".join(f"{n} {k}" for k, n in f["counts"].items())
        failing = f"; failed: {', '.join(f['failures'][:5])}" if f.get("failures") else ""
        return counts + failing
    keys = step.shown if step else ()
    rows = [r for r in f.get("records", []) if keys and all(k in r for k in keys)]
    return "<br>".join(" ".join(f"{k}={_cell(r[k])}" for k in keys) for r in rows)


def markdown(
    results: list[Result], steps: Sequence[Step], header: dict[str, Any], environment: dict[str, Any]
) -> str:
    """The table for RESULTS.md: a header line (GPU, driver, torch, commit), then a row per step."""
    by_name = {s.name: s for s in steps}
    gpus = ", ".join(str(g.get("name")) for g in environment.get("gpus") or [] if isinstance(g, dict)) or "?"
    torch = environment.get("torch") or {}
    git = environment.get("git") or {}
    driver = (environment.get("driver") or {}).get("version")
    lines = [
        f"GPU acceptance ({header['started']}, budget {header['budget_s']:.0f} s): {gpus}; driver {driver}; "
        f"torch {torch.get('version')} (CUDA {torch.get('cuda')}); commit {git.get('commit', '?')}"
        + (" (dirty)" if git.get("dirty") else ""),
        "",
        "| step | status | seconds | figures |",
        "|---|---|---|---|",
    ]
    for r in results:
        status = r.status + (f" ({r.reason})" if r.status in ("skipped", "timeout") else "")
        figs = shown_figures(by_name.get(r.name), r) or (r.reason if r.status == "failed" else "")
        lines.append(f"| {r.name} | {status} | {r.seconds:.1f} | {figs.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def gpu_here() -> str | None:
    """None when torch sees a usable CUDA GPU, else why not (one line)."""
    try:
        import torch
    except ImportError:
        return "torch is not importable here"
    if not torch.cuda.is_available():
        return "no usable CUDA GPU here (`cudalab doctor` says why)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="Folder for gpu_check.json, gpu_check.md and logs/.")
    ap.add_argument("--budget-s", type=float, default=480.0, help="Seconds for everything (default 480).")
    ap.add_argument("--dry-run", action="store_true", help="Print the plan and exit (runs anywhere).")
    ap.add_argument("--data", type=Path, default=None, help="The real-data folder (default: found).")
    ap.add_argument("--only", default="", help="Comma-separated step names to run (default: all).")
    args = ap.parse_args(argv)
    steps = [s for s in STEPS if not args.only or s.name in args.only.split(",")]
    if args.only and len(steps) != len(args.only.split(",")):
        names = ", ".join(s.name for s in STEPS)
        print(f"gpu_check: error: --only names a step that does not exist (steps: {names})", file=sys.stderr)
        return 2
    if args.budget_s <= 0:
        print(f"gpu_check: error: --budget-s must be > 0, not {args.budget_s}", file=sys.stderr)
        return 2
    data = data_root(args.data)
    if args.dry_run:
        print_plan(steps, args.budget_s, sys.executable, data)
        return 0
    if args.out is None:
        print("gpu_check: error: --out DIR is required (or --dry-run)", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"gpu_check: error: {args.out}: exists and is not a folder", file=sys.stderr)
        return 2
    why = gpu_here()
    if why:
        print(f"gpu_check: error: {why}; --dry-run prints the plan", file=sys.stderr)
        return 2
    absent = sorted({m for s in steps for m in s.needs if not _importable(m)})
    if absent:  # said once, at the start; the steps that need them are skipped
        print(f"gpu_check: missing Python packages: {', '.join(absent)} (steps that need them are skipped)")
    from cudalab.env.fingerprint import fingerprint

    environment = fingerprint(packages=False)
    results = run(steps, args.out, args.budget_s, data=data, environment=environment)
    print((args.out / "gpu_check.md").read_text())
    return 1 if any(r.status in ("failed", "timeout") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
