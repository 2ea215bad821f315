"""``cudalab train radio-classifier``: the candidate classifier through the engine.

Only the workload's own options live here (the set, the model, the loss); the engine's (``--config
--set --device --seeds --epochs --runs --run-id --resume`` ...) come from
:func:`cudalab.train.cli.engine_command`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cudalab.errors import CudalabError, ExitCode
from cudalab.train.cli import EngineArgs, engine_command, run_engine_command


class ModelChoice(StrEnum):
    fetchlike = "fetchlike"
    mobilenet = "mobilenet"
    cnn_bilstm = "cnn_bilstm"


class LossChoice(StrEnum):
    focal = "focal"
    balanced = "balanced"
    bce = "bce"


@engine_command
def radio_classifier(
    data: Annotated[Path, typer.Option("--data", "-d", help="A set built by `cudalab radio dataset`.")],
    model: Annotated[
        ModelChoice, typer.Option("--model", "-m", help="Architecture.")
    ] = ModelChoice.fetchlike,
    loss: Annotated[
        LossChoice, typer.Option("--loss", help="focal, balanced (class-balanced CE) or bce.")
    ] = LossChoice.focal,
    *,
    engine: EngineArgs,
) -> None:
    """Train a candidate classifier (real burst or not) on a set of FETCH cutouts labelled by the search."""
    from cudalab.radio.classify.dataset import read_index
    from cudalab.radio.classify.task import experiment, preset

    try:
        read_index(data)  # a folder that is not a set fails here, in one line
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    run_engine_command(experiment(), preset(str(data), model.value, loss.value), engine)
    raise typer.Exit(ExitCode.OK)
