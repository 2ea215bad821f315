"""The ``cudalab`` command.

:func:`main` takes its arguments and returns an exit code (:class:`~cudalab.errors.ExitCode`)
instead of exiting, so tests run the CLI in-process; :func:`run` is the console-script entry point.
User mistakes print one line on stderr and exit 2; they never show a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cudalab import __version__
from cudalab._console import command_group
from cudalab._console import stdout_console as _console
from cudalab._io import atomic_write_json
from cudalab.env.device import DeviceChoice
from cudalab.errors import CudalabError, ExitCode

app = command_group("cudalab", "A reproducible PyTorch-CUDA research environment.")


def _emit_json(obj: Any, out: Path | None) -> None:
    if out is not None:
        atomic_write_json(out, obj)
    else:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"cudalab {__version__}\n")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """A reproducible PyTorch-CUDA research environment."""


# --------------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------------


@app.command()
def doctor(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print facts, findings and verdict as JSON.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also save the JSON report to this file (to send it to us)."),
    ] = None,
    facts: Annotated[
        Path | None,
        typer.Option("--facts", help="Diagnose a report recorded on another machine (doctor --json)."),
    ] = None,
    require_gpu: Annotated[
        bool,
        typer.Option("--require-gpu", help="Exit 1 unless a GPU is usable (CPU-only machines included)."),
    ] = False,
    import_torch: Annotated[
        bool | None,
        typer.Option(
            "--import-torch/--no-import-torch",
            help="Import torch even without a GPU (default: only when there is a sign of one).",
        ),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke/--no-smoke", help="Run the functional GPU tests.")] = True,
    banner: Annotated[
        bool,
        typer.Option(
            "--banner", help="Only the verdict, framed with cause and fix when not ready (container start)."
        ),
    ] = False,
) -> None:
    """Say whether this machine can do GPU work; if not, the cause and the fix."""
    from cudalab.env.doctor import run_doctor
    from cudalab.env.report import render_banner, render_doctor

    report = run_doctor(facts, import_torch=import_torch, smoke=smoke)
    data = report.to_dict()
    if output is not None:
        atomic_write_json(output, data)
    if json_out:
        _emit_json(data, None)
    elif banner:
        render_banner(report, _console(), image=os.environ.get("CUDALAB_IMAGE"))
    else:
        console = _console()
        render_doctor(report, console, origin=str(facts) if facts else None)
        if require_gpu and report.verdict.state != "ready":
            console.print(f"--require-gpu: no usable GPU ({report.verdict.state})", style="bold red")
    raise typer.Exit(report.exit_code(require_gpu))


# --------------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------------


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: a few seconds.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also save the JSON to this file.")
    ] = None,
    device: Annotated[
        DeviceChoice, typer.Option("--device", help="auto: the GPU when one is usable.")
    ] = DeviceChoice.auto,
) -> None:
    """Measure what the GPU (or CPU) delivers against its datasheet peak."""
    from cudalab.env.bench import full_config, quick_config, run_bench

    cfg = quick_config() if quick else full_config()
    console = _console()
    try:
        if json_out:
            result = run_bench(cfg, device=device.value)
        else:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("starting", total=None)
                result = run_bench(
                    cfg, device=device.value, progress=lambda msg: progress.update(task, description=msg)
                )
    except RuntimeError as exc:
        raise CudalabError(f"--device {device.value}: {exc}", ExitCode.PROBLEM) from None
    if output is not None:
        atomic_write_json(output, result)
    if json_out:
        _emit_json(result, None)
        raise typer.Exit(ExitCode.OK)
    dev = result["device"]
    title = f"cudalab bench - {dev['name']}" + (
        f" (peaks: {dev['peak_model']} datasheet)" if dev.get("peak_model") else ""
    )
    table = Table(title=title)
    for col, justify in (
        ("Figure", "left"),
        ("Measured", "right"),
        ("Peak", "right"),
        ("% of peak", "right"),
        ("How", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in result["figures"]:
        peak = f"{f['peak']:.1f} {f['unit']}" if f["peak"] else "unknown"
        pct = f"{f['percent']:.0f} %" if f["percent"] is not None else "unknown"
        table.add_row(f["name"], f"{f['value']:.1f} {f['unit']}", peak, pct, f["detail"])
    console.print(table)
    raise typer.Exit(ExitCode.OK)


# --------------------------------------------------------------------------------------------------
# env
# --------------------------------------------------------------------------------------------------


@app.command("env")
def env_cmd(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSON to this file instead.")
    ] = None,
    packages: Annotated[
        bool,
        typer.Option(
            "--packages/--no-packages", help="Include the full package list (its hash is always there)."
        ),
    ] = True,
) -> None:
    """Print the environment fingerprint every run stores (JSON)."""
    from cudalab.env.fingerprint import fingerprint

    _emit_json(fingerprint(packages=packages), output)
    raise typer.Exit(ExitCode.OK)


def _add_workloads() -> None:
    """Each workload contributes its own sub-commands; one whose extras are missing says so when used."""
    try:
        from cudalab.radio.cli import app as radio_app
    except ImportError as exc:  # cudalab installed without [radio]
        missing = exc.name or "a radio dependency"
        radio_app = command_group("radio", "Radio search (needs: pip install 'cudalab[radio]').")

        @radio_app.callback(invoke_without_command=True)
        def _missing() -> None:
            raise CudalabError(f"the radio commands need {missing}: pip install 'cudalab[radio]'")

    app.add_typer(radio_app, name="radio")

    from cudalab.graph.cli import graph
    from cudalab.train.cli import add_workload
    from cudalab.train.cli import app as train_app

    add_workload("graph", graph)
    try:
        from cudalab.radio.classify.cli import radio_classifier
    except ImportError:  # without [radio]: the radio group already says what is missing
        pass
    else:
        add_workload("radio-classifier", radio_classifier)
    from cudalab.protein.cli import protein

    add_workload("protein", protein)
    from cudalab.vision.cli import vision

    add_workload("vision", vision)
    app.add_typer(train_app, name="train")

    from cudalab.serve.cli import export, serve

    app.command("export")(export)
    app.command("serve")(serve)

    from cudalab.runs.cli import app as runs_app

    app.add_typer(runs_app, name="runs")

    from cudalab.lab.cli import app as lab_app

    app.add_typer(lab_app, name="lab")


_add_workloads()


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (``sys.argv[1:]`` by default) and return the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=args or ["--help"], prog_name="cudalab", standalone_mode=False)
    except CudalabError as exc:
        sys.stderr.write(f"cudalab: error: {exc}\n")
        return int(exc.code)
    except typer.TyperException as exc:  # bad option, missing argument, bad value: the CLI's usage errors
        sys.stderr.write(f"cudalab: error: {exc.format_message()}\n")
        return int(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("cudalab: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    return int(rc) if isinstance(rc, int) else int(ExitCode.OK)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
