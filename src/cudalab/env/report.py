"""Rich rendering of doctor, bench and env results for a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cudalab.env.doctor import DoctorReport

_STYLE = {
    "pass": ("PASS", "green"),
    "info": ("INFO", "cyan"),
    "warn": ("WARN", "yellow"),
    "fail": ("FAIL", "bold red"),
}
_VERDICT_STYLE = {
    "ready": "bold green",
    "cpu-only": "bold cyan",
    "unchecked": "bold yellow",
    "unusable": "bold red",
}


def render_doctor(report: DoctorReport, console: Console, *, origin: str | None = None) -> None:
    """Print the findings table (status, one line of evidence, the fix) and the verdict."""
    title = "cudalab doctor" + (f" - facts from {origin}" if origin else "")
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Evidence / Fix", overflow="fold")
    for f in report.findings:
        label, style = _STYLE[f.status]
        cell = Text(f.evidence)
        if f.fix and f.status != "pass":
            cell.append("\nHint: " if f.status == "info" else "\nFix: ", style="bold")
            cell.append(f.fix)
        table.add_row(Text(label, style=style), f.title, cell)
    console.print(table)
    v = report.verdict
    console.print(Text(v.headline, style=_VERDICT_STYLE[v.state]))
    if v.cause is not None and v.cause.fix:
        console.print(Text.assemble(("Fix first: ", "bold"), v.cause.fix))
    if origin is None:  # probed here, not read from a file
        console.print(Text(f"probed in {report.elapsed_s:.2f} s", style="dim"))


def render_banner(report: DoctorReport, console: Console, *, image: str | None = None) -> None:
    """The doctor in a few lines, as the image's entrypoint prints it at every container start.

    One line when the GPU is ready; otherwise a framed banner that cannot be missed in ``docker logs``,
    with the cause and the fix (for a driver too old for this image's CUDA, the fix names the image
    variant this driver runs).
    """
    v = report.verdict
    where = f" in {image}" if image else ""
    if v.state == "ready" and not v.problems:
        console.print(Text(f"cudalab doctor{where}: {v.headline}", style=_VERDICT_STYLE[v.state]))
        return
    body = Text(v.headline, style=_VERDICT_STYLE[v.state])
    if v.cause is not None:
        if v.cause.evidence not in v.headline:
            body.append(f"\n{v.cause.title}: {v.cause.evidence}")
        if v.cause.fix:
            body.append("\nFix: ", style="bold")
            body.append(v.cause.fix)
    elif v.state == "cpu-only" and report.facts.value("container", "runtime"):
        body.append(
            "\nNo NVIDIA GPU is visible in this container; everything runs on the CPU. On a GPU server start "
            "it with GPUs: docker run --gpus all ... (compose: deploy.resources.reservations.devices), with "
            "the NVIDIA Container Toolkit installed on the host."
        )
    body.append("\nDetails: cudalab doctor", style="dim")
    console.print(
        Panel(body, title=f"cudalab doctor{where}", border_style=_VERDICT_STYLE[v.state], expand=False)
    )
