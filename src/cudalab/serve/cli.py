"""``cudalab export RUN`` and ``cudalab serve ARTEFACT``: a trained vision run, exported and served."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cudalab.errors import CudalabError, ExitCode


class FormatChoice(StrEnum):
    onnx = "onnx"
    torch_export = "torch-export"


def export(
    run: Annotated[
        str, typer.Argument(help="A finished `cudalab train vision` run: path, kind/id or id prefix.")
    ],
    fmt: Annotated[
        FormatChoice, typer.Option("--format", "-f", help="onnx or torch-export.")
    ] = FormatChoice.onnx,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Artefact folder (default: RUN/export/FORMAT).")
    ] = None,
    images: Annotated[
        int, typer.Option("--images", min=1, help="Validation images of the parity check.")
    ] = 1000,
    runs: Annotated[Path, typer.Option("--runs", help="Where runs live.")] = Path("runs"),
) -> None:
    """Export a trained image classifier (dynamic batch) and check it against the eager model."""
    from rich.console import Console

    from cudalab.runs.rundir import resolve_run
    from cudalab.serve.export import export_run

    try:
        found = resolve_run(runs, run)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    target = out or found.path / "export" / fmt.value
    result = export_run(found, fmt.value, target, images=images)
    con = Console(stderr=True)
    verdict = "[green]passed[/]" if result["passed"] else "[red]FAILED[/]"
    con.print(
        f"[bold]exported[/]   {target} ({fmt.value})\n"
        f"[bold]parity[/]     {verdict}: top-1 agreement {result['top1_agreement']:.2%}, max |logit diff| "
        f"{result['max_abs_logit_diff']:.2e} (tolerance {result['tolerance']:.0e}) on {result['images']} "
        "validation images",
        highlight=False,
    )
    raise typer.Exit(ExitCode.OK if result["passed"] else ExitCode.PROBLEM)


def serve(
    artefact: Annotated[Path, typer.Argument(help="An artefact folder written by `cudalab export`.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535)] = 8000,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Images per model call at most.")] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0.0, help="How long a batch waits to fill.")
    ] = 0.0,
    queue: Annotated[int, typer.Option("--queue", min=1, help="Images waiting at most (then 503).")] = 1024,
    timeout_ms: Annotated[
        float, typer.Option("--timeout-ms", min=1.0, help="Latency cap: queued longer -> 503.")
    ] = 5000.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", min=0.001, help="Request body limit.")
    ] = 32.0,
    max_megapixels: Annotated[
        float, typer.Option("--max-megapixels", min=0.001, help="Pixels per image at most.")
    ] = 40.0,
    threads: Annotated[
        int, typer.Option("--threads", min=0, help="CPU threads of the model (0: one per core but one).")
    ] = 0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve an exported image classifier over HTTP: POST /predict, GET /healthz, /metrics, /docs."""
    from cudalab.serve.server import ServeConfig, load_artefact
    from cudalab.serve.server import serve as run_server

    if device not in ("auto", "cpu", "cuda"):
        raise CudalabError(f"--device {device}: one of auto, cpu, cuda")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not threads and device == "cpu":
        # the model runs beside the event loop that reads, decodes and answers requests: leave it a
        # core (a parallel loop with a descheduled thread waits for it, 3x slower on 2 cores)
        import os

        threads = max(1, len(os.sched_getaffinity(0)) - 1)
    model = load_artefact(artefact, device, threads)
    cfg = ServeConfig(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue,
        timeout_ms=timeout_ms,
        max_body_bytes=int(max_body_mb * (1 << 20)),
        max_pixels=int(max_megapixels * 1e6),
    )
    run_server(model, cfg, host, port, log_level)
    raise typer.Exit(ExitCode.OK)
