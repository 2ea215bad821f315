"""``cudalab train vision``: an image classifier on an ImageFolder tree, through the engine.

Only the workload's own options live here (the data, the recipe, the architecture, a weights file);
the engine's (``--config --set --device --precision --compile --seeds --epochs --runs --run-id
--resume`` ...) come from :func:`cudalab.train.cli.engine_command`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cudalab.errors import CudalabError, ExitCode
from cudalab.train.cli import EngineArgs, engine_command, run_engine_command


class RecipeChoice(StrEnum):
    resnet18 = "resnet18"
    fast = "fast"


class ArchChoice(StrEnum):
    resnet18 = "resnet18"
    resnet50 = "resnet50"
    vit_s = "vit_s"
    fastnet = "fastnet"


@engine_command
def vision(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="An ImageFolder tree (<class>/<image>, or train|val/<class>/<image>) or a tar of one.",
        ),
    ],
    recipe: Annotated[
        RecipeChoice, typer.Option("--recipe", help="resnet18 (SGD, cosine) or fast (after airbench94).")
    ] = RecipeChoice.resnet18,
    arch: Annotated[
        ArchChoice | None, typer.Option("--arch", "-m", help="Network (default: the recipe's).")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="Start from this weights file (a state dict); no downloads."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=8, help="Input side in pixels (default: the images').")
    ] = None,
    *,
    engine: EngineArgs,
) -> None:
    """Train an image classifier (ResNet, ViT-S or the fast CIFAR net) on a folder of labelled images."""
    from cudalab.vision.data import open_image_folder
    from cudalab.vision.task import experiment, preset

    try:
        open_image_folder(data)  # a folder that is not a tree fails here, in one line
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    if weights is not None and not weights.is_file():
        raise CudalabError(f"--weights {weights}: no such file")
    overrides: dict[str, Any] = {}
    if arch is not None:
        overrides["model"] = {"arch": arch.value}
    if weights is not None:
        overrides.setdefault("model", {})["weights"] = str(weights)
    if image_size is not None:
        overrides["data"] = {"image_size": image_size}
    # the absolute path: the run's export finds its validation images from any folder
    run_engine_command(experiment(), preset(str(data.resolve()), recipe.value), engine, overrides)
    raise typer.Exit(ExitCode.OK)
