"""``cudalab train graph``: GNN node classification on Planetoid with the published presets.

Only the workload's own options live here (model, dataset, data folder, sampling); the engine's
(``--config --set --device --seeds --runs --run-id --resume`` ...) come from
:func:`cudalab.train.cli.engine_command`.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cudalab.errors import CudalabError, ExitCode
from cudalab.train.cli import EngineArgs, engine_command, run_engine_command


class ModelChoice(StrEnum):
    gcn = "gcn"
    gat = "gat"
    appnp = "appnp"
    sage = "sage"


class DatasetChoice(StrEnum):
    Cora = "Cora"
    CiteSeer = "CiteSeer"


@engine_command
def graph(
    model: Annotated[
        ModelChoice, typer.Option("--model", "-m", help="Architecture (its paper's preset).")
    ] = ModelChoice.gcn,
    dataset: Annotated[
        DatasetChoice, typer.Option("--dataset", "-d", help="Planetoid graph.")
    ] = DatasetChoice.Cora,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Folder with <Dataset>/raw/ind.* (downloaded when absent)."),
    ] = None,
    sampled: Annotated[
        bool | None,
        typer.Option("--sampled/--full-batch", help="Neighbour-sampled mini-batches or the whole graph."),
    ] = None,
    *,
    engine: EngineArgs,
) -> None:
    """Train a GNN on Cora or CiteSeer; report test accuracy at best validation over seeds."""
    if importlib.util.find_spec("torch_geometric") is None:
        raise CudalabError("the graph workload needs torch_geometric: pip install 'cudalab[graph]'")
    # torch and PyG load here, not at import: `cudalab doctor` must not pay for them
    from cudalab.graph.task import experiment, preset

    data: dict[str, Any] = {}
    if data_root is not None:
        data["root"] = str(data_root)
    if sampled is not None:
        data["sampled"] = sampled
    run_engine_command(
        experiment(),
        preset(model.value, dataset.value),
        engine,
        {"data": data} if data else None,
    )
    raise typer.Exit(ExitCode.OK)
