"""``cudalab train protein``: ESM-2-shaped MLM pretraining on proteomes, through the engine.

Only the workload's own options live here; the engine's (``--config --set --device --precision
--compile --seeds --epochs --runs --run-id --resume`` ...) come from :func:`cudalab.train.cli.engine_command`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cudalab.errors import CudalabError, ExitCode
from cudalab.train.cli import EngineArgs, engine_command, run_engine_command


class ShapeChoice(StrEnum):
    tiny = "tiny"
    small = "small"
    esm2_8m = "8M"
    esm2_35m = "35M"
    esm2_150m = "150M"
    esm2_650m = "650M"


@engine_command
def protein(
    data: Annotated[Path, typer.Option("--data", "-d", help="A folder of FASTA files, one proteome each.")],
    validate: Annotated[
        str | None, typer.Option("--validate", help="The proteome held out (a file name in --data).")
    ] = None,
    shape: Annotated[
        ShapeChoice, typer.Option("--shape", help="Model size: small (CPU) or ESM-2's.")
    ] = ShapeChoice.small,
    checkpointing: Annotated[
        bool, typer.Option("--checkpointing", help="Activation checkpointing (less memory, more compute).")
    ] = False,
    *,
    engine: EngineArgs,
) -> None:
    """Pretrain a protein language model (masked LM, ESM-2's architecture) with whole proteomes held out."""
    from cudalab.protein.task import experiment, fasta_files, preset

    try:
        names = [p.name for p in fasta_files(data)]
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    held = validate or names[0]
    if held not in names:
        raise CudalabError(f"--validate {held}: not among the FASTA files of {data} ({', '.join(names)})")
    overrides: dict[str, Any] = {"data": {"validate": held}}
    if checkpointing:
        overrides["model"] = {"checkpointing": True}
    run_engine_command(experiment(), preset(str(data), shape.value), engine, overrides)
    raise typer.Exit(ExitCode.OK)
