"""``cudalab train graph``: GNN node classification on Planetoid with the published presets."""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cudalab._console import stdout_console
from cudalab.errors import CudalabError, ExitCode
from cudalab.train.config import from_dict, load_toml, parse_overrides, update


class ModelChoice(StrEnum):
    gcn = "gcn"
    gat = "gat"
    appnp = "appnp"
    sage = "sage"


class DatasetChoice(StrEnum):
    Cora = "Cora"
    CiteSeer = "CiteSeer"


class ResumeChoice(StrEnum):
    auto = "auto"
    never = "never"


def graph(
    model: Annotated[
        ModelChoice, typer.Option("--model", "-m", help="Architecture (its paper's preset).")
    ] = ModelChoice.gcn,
    dataset: Annotated[
        DatasetChoice, typer.Option("--dataset", "-d", help="Planetoid graph.")
    ] = DatasetChoice.Cora,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="Seeds to train; summary has mean +- std.")
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Folder with <Dataset>/raw/ind.* (downloaded when absent)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A config.toml (e.g. a run's) instead of the preset.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config key: --set train.lr=0.02 (repeatable)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="train.max_epochs.")] = None,
    sampled: Annotated[
        bool | None,
        typer.Option("--sampled/--full-batch", help="Neighbour-sampled mini-batches or the whole graph."),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, bf16, fp16 or fp32.")] = None,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Bitwise-repeatable: deterministic kernels and seeds.")
    ] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    runs_root: Annotated[Path, typer.Option("--runs", help="Root of the run directories.")] = Path("runs"),
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: time + config hash).")
    ] = None,
    resume: Annotated[
        ResumeChoice, typer.Option("--resume", help="auto: continue the unfinished run with this config.")
    ] = ResumeChoice.auto,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Rich progress bar.")] = True,
) -> None:
    """Train a GNN on Cora or CiteSeer; report test accuracy at best validation over seeds."""
    if importlib.util.find_spec("torch_geometric") is None:
        raise CudalabError("the graph workload needs torch_geometric: pip install 'cudalab[graph]'")
    # torch and PyG load here, not at import: `cudalab doctor` must not pay for them
    from cudalab.graph.task import GraphConfig, preset, train_graph
    from cudalab.train.distributed import env_world
    from cudalab.train.loop import print_config

    console = Console(stderr=True)
    try:
        cfg = from_dict(GraphConfig, load_toml(config)) if config else preset(model.value, dataset.value)
        direct: dict[str, object] = {}
        if seeds is not None:
            direct["seeds"] = seeds
        data: dict[str, object] = {}
        if data_root is not None:
            data["root"] = str(data_root)
        if sampled is not None:
            data["sampled"] = sampled
        train: dict[str, object] = {"progress": progress}
        for key, value in (("max_epochs", epochs), ("device", device), ("precision", precision)):
            if value is not None:
                train[key] = value
        if deterministic:
            train["deterministic"] = True
        if compile_:
            train["compile"] = True
        cfg = update(cfg, {**direct, "data": data, "train": train})
        cfg = update(cfg, parse_overrides(overrides or []))
    except ValueError as exc:
        raise CudalabError(f"{config or 'config'}: {exc}") from None
    is_main = env_world()[0] == 0  # under torchrun only rank 0 prints
    console.quiet = not is_main
    print_config(cfg, console)
    try:
        run, summary = train_graph(
            cfg, runs_root=runs_root, run_id=run_id, resume=resume.value, console=console
        )
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    if not is_main:
        raise typer.Exit(ExitCode.OK)
    table = Table(title=f"{cfg.model.name} on {cfg.data.dataset}: test accuracy at best validation")
    for col in ("seed", "test acc %", "val acc %", "best step", "epochs", "epoch ms"):
        table.add_column(col, justify="right")
    for r in summary["seeds"]:
        table.add_row(
            str(r["seed"]),
            f"{100 * r['test_acc']:.2f}",
            f"{100 * r['val_acc']:.2f}",
            str(r["best_step"]),
            str(r["epochs"]),
            f"{r['epoch_time_ms']:.1f}",
        )
    out = stdout_console()
    out.print(table)
    out.print(
        f"test_acc {100 * summary['test_acc_mean']:.2f} +- {100 * summary['test_acc_std']:.2f} % "
        f"over {summary['n_seeds']} seed(s)   run: {run.path}"
    )
    raise typer.Exit(ExitCode.OK)
