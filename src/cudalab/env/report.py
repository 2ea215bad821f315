"""Rich rendering of doctor, bench and env results for a terminal."""

from __future__ import annotations

from rich.console import Console
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
