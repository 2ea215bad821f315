"""The terminal every command prints to, and the one way a command group is made."""

from __future__ import annotations

import sys

import typer
from rich.console import Console


def stdout_console() -> Console:
    """A rich console on whatever ``sys.stdout`` is now (created per call so tests can capture it)."""
    return Console(file=sys.stdout, highlight=False)


def command_group(name: str, help: str) -> typer.Typer:
    """A typer app with the settings every cudalab command shares: no shell-completion commands, and
    no rich tracebacks or markup (errors are one line, raised as ``CudalabError`` and printed by
    ``cudalab.cli.main``)."""
    return typer.Typer(
        name=name, help=help, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
    )
