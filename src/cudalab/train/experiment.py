"""The engine's driver: one experiment = one run directory, one child run per seed.

A workload hands the driver an :class:`Experiment` (its kind, a task factory, and what its summary
adds) and a config with a ``train`` section; the driver joins torchrun's process group, checks the
device before anything is written, chooses the run directory (resuming the unfinished run of the same
config), probes the environment once, trains ``train.seeds`` seeds as child runs ``seed-<n>/`` (a
finished seed is skipped on resume, an unfinished one continues from its newest checkpoint), and
writes the run's summary: every evaluation metric's mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console

from cudalab.runs.rundir import Resume, RunDir, choose_run, now
from cudalab.train import distributed as dist
from cudalab.train.distributed import DistInfo
from cudalab.train.task import Task
from cudalab.train.trainer import FitResult, Trainer

C = TypeVar("C")


@dataclass(frozen=True)
class Experiment(Generic[C]):
    """What a workload gives the driver.

    Attributes
    ----------
    kind
        The run's kind and folder: ``runs/<kind>/<run-id>``.
    make_task
        Builds the task for one seed's config (``cfg.train.seed`` set). The first seed's task is built
        before the run directory is created, so a factory that reads its data fails before anything
        is written.
    subject
        What the run is about, for ``runs list`` ("gcn on Cora").
    summarise
        Extra summary fields from the config and the aggregated summary. Without a ``headline`` of
        its own, the run's is the first column's mean +- std over seeds.
    columns
        The per-seed metrics the command's table shows (default: the early-stop metric, else every
        evaluation metric).
    """

    kind: str
    make_task: Callable[[C], Task]
    subject: Callable[[C], str] = lambda cfg: ""
    summarise: Callable[[C, dict[str, Any]], dict[str, Any]] = lambda cfg, summary: {}
    columns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """The run directory, its summary, and the last seed's trained model (this rank's view)."""

    run: RunDir
    summary: dict[str, Any]
    last: FitResult | None


def seed_result(seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One seed's line: every metric at the best evaluation (the final one without early stopping)."""
    best = summary.get("best") or {}
    metrics = best.get("metrics") or summary.get("final") or {}
    epochs = max(1, int(summary.get("epochs", 0)))
    return {
        "seed": seed,
        **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "best_step": best.get("step"),
        "epochs": summary.get("epochs"),
        "stopped_early": summary.get("stopped_early"),
        # wall time per epoch, evaluation and checkpoints included
        "epoch_time_ms": 1000.0 * float(summary.get("train_time_s", 0.0)) / epochs,
    }


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (n-1) of every per-seed metric; NaNs are left out."""
    out: dict[str, Any] = {"n_seeds": len(per_seed)}
    skip = {"seed", "best_step", "epochs", "stopped_early"}
    keys = [k for k in per_seed[0] if k not in skip] if per_seed else []
    for key in keys:
        values = [
            float(r[key])
            for r in per_seed
            if isinstance(r.get(key), int | float)
            and not isinstance(r.get(key), bool)
            and not math.isnan(r[key])
        ]
        if values:
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = per_seed
    return out


def run_experiment(
    experiment: Experiment[C],
    cfg: C,
    *,
    runs_root: Path = Path("runs"),
    run_id: str | None = None,
    resume: Resume = "auto",
    console: Console | None = None,
    info: DistInfo | None = None,
    allow_env_change: bool = False,
) -> ExperimentResult:
    """Train ``cfg.train.seeds`` seeds of ``experiment`` into one run directory (see the module).

    A run resumed in an environment that differs from the one it last ran in (torch, CUDA, cuDNN,
    NCCL, driver, Python or the package set: :func:`cudalab.env.fingerprint.drift`) is refused with
    the difference, unless ``allow_env_change``; then the difference is recorded in the manifest's
    resumption entry.
    """
    con = console or Console(stderr=True)
    train_cfg = cfg.train  # type: ignore[attr-defined]
    owns_group = info is None
    info = info or dist.init(train_cfg.device)
    try:
        return _run(experiment, cfg, runs_root, run_id, resume, con, info, allow_env_change)
    finally:
        if owns_group:
            dist.shutdown()


def _seed_config(cfg: C, seed: int) -> C:
    return replace(cfg, train=replace(cfg.train, seed=seed, seeds=1))  # type: ignore[type-var, attr-defined]


def _run(
    experiment: Experiment[C],
    cfg: C,
    root: Path,
    run_id: str | None,
    resume: Resume,
    con: Console,
    info: DistInfo,
    allow_env_change: bool = False,
) -> ExperimentResult:
    from cudalab.env.device import resolve_device
    from cudalab.env.fingerprint import fingerprint

    train_cfg = cfg.train  # type: ignore[attr-defined]
    resolve_device(train_cfg.device, info.local_rank)  # fails before any run directory exists
    first_task = experiment.make_task(_seed_config(cfg, train_cfg.seed))  # so does the task's data
    run = _choose(experiment.kind, cfg, root, run_id, resume, info)
    subject = experiment.subject(cfg)
    environment = fingerprint() if info.is_main else {}
    changes = _environment_changes(run, environment, allow_env_change, info)
    if info.is_main:
        run.start(cfg, kind=experiment.kind, subject=subject, seed=train_cfg.seed, environment=environment)
        if changes:
            m = run.manifest() or {}
            m["resumptions"][-1]["environment_changes"] = changes
            run.update_manifest(resumptions=m["resumptions"])
            con.print(
                f"[yellow]resumed in a changed environment (--allow-env-change):[/] {'; '.join(changes)}"
            )
    results: list[dict[str, Any]] = []
    last: FitResult | None = None
    try:
        for i in range(train_cfg.seeds):
            seed = train_cfg.seed + i
            child = RunDir(run.path / f"seed-{seed}")
            if child.finished:
                child_summary = child.summary() or {}
            else:
                if info.is_main:
                    con.print(f"[bold]seed[/]       {seed} ({i + 1} of {train_cfg.seeds})")
                seed_cfg = _seed_config(cfg, seed)
                task = first_task if i == 0 else experiment.make_task(seed_cfg)
                last = Trainer(
                    task,
                    seed_cfg.train,  # type: ignore[attr-defined]
                    child,
                    kind=experiment.kind,
                    subject=subject,
                    resume=resume,
                    environment=environment,
                    run_config=seed_cfg,
                    console=con,
                    info=info,
                ).fit()
                child_summary = last.summary
                finish = getattr(task, "finish", None)
                if info.is_main and callable(finish):  # the task's pictures and files of the trained model
                    finish(last.model, child)
                if info.is_main and i == 0:  # the parent states where its seeds ran
                    m = child.manifest() or {}
                    run.update_manifest(
                        world_size=info.world_size, device=m.get("device"), precision=m.get("precision")
                    )
            results.append(seed_result(seed, child_summary))
            if info.is_main:
                shown = _columns(experiment, train_cfg, results)
                con.print(f"  seed {seed}: " + _seed_line(results[-1], shown), highlight=False)
        summary: dict[str, Any] = {"kind": experiment.kind, "subject": subject, **aggregate(results)}
        summary["columns"] = list(_columns(experiment, train_cfg, results))
        summary.update(experiment.summarise(cfg, summary))
        if "headline" not in summary and summary["columns"]:
            key = summary["columns"][0]
            summary["headline"] = {
                "metric": key,
                "value": summary.get(f"{key}_mean"),
                "std": summary.get(f"{key}_std") if train_cfg.seeds > 1 else None,
            }
        summary["finished_at"] = now()
        if info.is_main:
            run.finish(summary)
    except BaseException as exc:
        if info.is_main:
            run.fail(exc)
        raise
    return ExperimentResult(run=run, summary=summary, last=last)


def _columns(experiment: Experiment[Any], train_cfg: Any, results: list[dict[str, Any]]) -> tuple[str, ...]:
    """The metrics a table shows: the experiment's choice, else the early-stop metric, else all."""
    if experiment.columns:
        return experiment.columns
    if train_cfg.early_stop_metric:
        return (train_cfg.early_stop_metric,)
    skip = {"seed", "best_step", "epochs", "stopped_early", "epoch_time_ms"}
    return tuple(k for k in (results[0] if results else {}) if k not in skip)


def _seed_line(r: dict[str, Any], columns: tuple[str, ...]) -> str:
    shown = [f"{k} {r[k]:.4g}" for k in columns if isinstance(r.get(k), int | float)]
    return ", ".join([*shown, f"epoch time {r['epoch_time_ms']:.1f} ms"])


def _environment_changes(
    run: RunDir, environment: dict[str, Any], allowed: bool, info: DistInfo
) -> list[str]:
    """How the environment differs from the one an unfinished run last ran in (rank 0 decides; a
    change not ``allowed`` is a ``ValueError`` on every rank)."""
    from cudalab.env.fingerprint import drift

    verdict: list[str] | str = []
    if info.is_main:
        m = run.manifest()
        if m is not None and not run.finished:
            last = ([m.get("environment")] + [r.get("environment") for r in m.get("resumptions", [])])[
                -1
            ] or {}
            changes = drift(last, environment) if last else []
            if changes and not allowed:
                verdict = (
                    f"{run.path}: the environment changed since this run last ran ({'; '.join(changes)}); "
                    "resume with --allow-env-change to continue in it (recorded), or start a new run"
                )
            else:
                verdict = changes
    verdict = dist.broadcast(verdict, info)
    if isinstance(verdict, str):
        raise ValueError(verdict)
    return list(verdict or [])


def _choose(kind: str, cfg: Any, root: Path, run_id: str | None, resume: Resume, info: DistInfo) -> RunDir:
    """Rank 0 chooses the run directory and the others take its choice (or its refusal)."""
    choice: Path | str | None = None
    if info.is_main:
        try:
            choice = choose_run(root, kind, cfg, run_id, resume).path
        except ValueError as exc:
            choice = f"error: {exc}"
    choice = dist.broadcast(choice, info)
    if isinstance(choice, str):
        raise ValueError(choice.removeprefix("error: "))
    assert choice is not None
    return RunDir(choice)
