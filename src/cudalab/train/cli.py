"""``cudalab train <workload>``: the engine options every workload shares, and ``train custom``.

:func:`engine_command` gives a workload's command the one shared set of engine options
(``--config --set --print-config --device --precision --deterministic --compile --seeds --epochs
--progress --runs --run-id --resume``), gathered into an :class:`EngineArgs`;
:func:`run_engine_command` resolves the config through them, prints it, runs the
:class:`~cudalab.train.experiment.Experiment` and prints the per-seed table. A workload's command
adds only its own options (a model, a dataset). Torch is imported when a command runs, never when the
CLI starts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cudalab._console import command_group, stdout_console
from cudalab.env.device import DeviceChoice
from cudalab.errors import CudalabError, ExitCode
from cudalab.runs.cli import ConfigOption, PrintConfigOption, RootOption, SetOption, print_config_toml
from cudalab.runs.config import describe, resolve
from cudalab.runs.rundir import ResumeChoice, check_root, check_run_id
from cudalab.train.config import PrecisionChoice

if TYPE_CHECKING:
    from cudalab.train.experiment import Experiment

app = command_group("train", "Train a workload, or your own model, with the experiment engine.")


@dataclass(frozen=True, slots=True)
class EngineArgs:
    """The shared engine options of a ``cudalab train`` command, as given (None: not given)."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()
    print_config: bool = False
    device: str | None = None
    precision: str | None = None
    deterministic: bool = False
    compile: bool = False
    seeds: int | None = None
    epochs: int | None = None
    progress: bool | None = None
    runs: Path = Path("runs")
    run_id: str | None = None
    resume: str = "auto"
    allow_env_change: bool = False

    def train_flags(self) -> dict[str, Any]:
        """The ``train`` section the flags set (only what was given, so a --config's values stand)."""
        given = {
            "device": self.device,
            "precision": self.precision,
            "seeds": self.seeds,
            "max_epochs": self.epochs,
            "progress": self.progress,
        }
        out: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if self.deterministic:
            out["deterministic"] = True
        if self.compile:
            out["compile"] = True
        return out


_ENGINE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "config": (ConfigOption, None),
    "overrides": (SetOption, None),
    "print_config": (PrintConfigOption, False),
    "device": (
        Annotated[DeviceChoice | None, typer.Option("--device", help="auto (GPU when usable), cpu or cuda.")],
        None,
    ),
    "precision": (
        Annotated[
            PrecisionChoice | None,
            typer.Option(
                "--precision", help="auto: bf16 on a GPU of compute capability >= 8.0, fp32 on a CPU."
            ),
        ],
        None,
    ),
    "deterministic": (
        Annotated[bool, typer.Option("--deterministic", help="Bitwise-repeatable: deterministic kernels.")],
        False,
    ),
    "compile": (Annotated[bool, typer.Option("--compile", help="torch.compile the model.")], False),
    "seeds": (
        Annotated[int | None, typer.Option("--seeds", help="Seeds to train (train.seeds); mean +- std.")],
        None,
    ),
    "epochs": (Annotated[int | None, typer.Option("--epochs", help="train.max_epochs.")], None),
    "progress": (
        Annotated[
            bool | None,
            typer.Option(
                "--progress/--no-progress",
                help="Progress: a bar in a terminal, a plain line per log interval in a log file.",
            ),
        ],
        None,
    ),
    "runs": (RootOption, Path("runs")),
    "run_id": (
        Annotated[str | None, typer.Option("--run-id", help="Name the run (default: time + config hash).")],
        None,
    ),
    "resume": (
        Annotated[
            ResumeChoice,
            typer.Option("--resume", help="auto: continue the unfinished run of this config (or --run-id)."),
        ],
        ResumeChoice.auto,
    ),
    "allow_env_change": (
        Annotated[
            bool,
            typer.Option(
                "--allow-env-change",
                help="Resume even if torch, CUDA, cuDNN, NCCL, the driver or the packages changed (recorded).",
            ),
        ],
        False,
    ),
}


def engine_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Add the shared engine options to a workload's typer command; it receives them as ``engine``."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "engine"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in _ENGINE_OPTIONS.items()
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in _ENGINE_OPTIONS}
        given["overrides"] = tuple(given["overrides"] or ())
        for choice in ("device", "precision"):
            given[choice] = given[choice].value if given[choice] is not None else None
        given["resume"] = given["resume"].value
        fn(**kwargs, engine=EngineArgs(**given))

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer reads __signature__, not the wrapped function's
    return command


def run_engine_command(
    experiment: Experiment[Any],
    base: Any,
    engine: EngineArgs,
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve the config (preset or --config, then flags, then --set), print it, run the experiment on
    every rank, and print the per-seed table on rank 0. Returns the run's summary."""
    from cudalab.train.distributed import env_world

    merged = dict(flags or {})
    train = {**merged.pop("train", {}), **engine.train_flags()}
    try:
        cfg = resolve(
            base,
            config_file=engine.config,
            flags={**merged, "train": train},
            overrides=list(engine.overrides),
        )
    except ValueError as exc:
        raise CudalabError(str(exc) if engine.config else f"config: {exc}") from None
    if engine.print_config:
        print_config_toml(cfg, header=f"cudalab train {experiment.kind}: resolved config")
        raise typer.Exit(ExitCode.OK)
    try:  # where the run goes, checked before anything is printed or loaded
        check_root(engine.runs)
        if engine.run_id is not None:
            check_run_id(engine.run_id)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    rank = env_world()[0]
    console = Console(stderr=True, quiet=rank != 0)  # under torchrun only rank 0 prints
    console.print("[bold]config[/]")
    for key, value in describe(cfg):
        console.print(f"  {key} = {value}", highlight=False)
    from cudalab.train.experiment import run_experiment

    try:
        result = run_experiment(
            experiment,
            cfg,
            runs_root=engine.runs,
            run_id=engine.run_id,
            resume=engine.resume,  # type: ignore[arg-type]  # a ResumeChoice value
            console=console,
            allow_env_change=engine.allow_env_change,
        )
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    if rank == 0:
        title = f"{experiment.subject(cfg)}: metrics at the best evaluation, per seed"
        _print_seeds(result.summary, tuple(result.summary.get("columns") or ()), title, result.run.path)
    return result.summary


def _print_seeds(summary: dict[str, Any], columns: tuple[str, ...], title: str, path: Path) -> None:
    from cudalab.runs.cli import headline

    table = Table(title=title or None)
    for col in ("seed", *columns, "best step", "epochs", "epoch ms"):
        table.add_column(col, justify="right")
    for r in summary["seeds"]:
        cells = [_fmt(r.get(c)) for c in columns]
        table.add_row(
            str(r["seed"]), *cells, str(r.get("best_step")), str(r.get("epochs")), f"{r['epoch_time_ms']:.1f}"
        )
    out = stdout_console()
    out.print(table)
    out.print(f"{headline(summary)} over {summary['n_seeds']} seed(s)   run: {path}", highlight=False)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


# --------------------------------------------------------------------------------------------------
# train custom: the user's own task
# --------------------------------------------------------------------------------------------------


@engine_command
def custom(
    factory: Annotated[
        str,
        typer.Argument(
            metavar="FILE.py[:NAME] | MODULE:NAME",
            help="Your task factory: NAME(cfg) -> Task in a Python file or an importable module "
            "(NAME defaults to make_task). cfg is the dataclass its first parameter is annotated with.",
        ),
    ],
    engine: EngineArgs,
) -> None:
    """Train your own Task with the whole engine: AMP, DDP under torchrun, resume, manifest, TensorBoard."""
    from cudalab.train.custom import custom_experiment

    try:
        experiment, base = custom_experiment(factory)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    run_engine_command(experiment, base, engine)
    raise typer.Exit(ExitCode.OK)


app.command("custom")(custom)


def add_workload(name: str, command: Callable[..., None]) -> None:
    """Register a workload's ``cudalab train <name>`` command."""
    app.command(name)(command)


__all__ = ["EngineArgs", "add_workload", "app", "engine_command", "run_engine_command"]
