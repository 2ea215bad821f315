"""The terminal every command prints to."""

from __future__ import annotations

import sys

from rich.console import Console


def stdout_console() -> Console:
    """A rich console on whatever ``sys.stdout`` is now (created per call so tests can capture it)."""
    return Console(file=sys.stdout, highlight=False)
