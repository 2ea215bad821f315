"""What ``cudalab lab`` prints: the addresses once a lab is up, and its status as a table.

Both read a ``lab.json`` record (which a user may have edited or truncated): a missing field shows
as blank, never as a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cudalab.lab.paths import read_token
from cudalab.lab.supervise import service_records


def print_lab(state: Mapping[str, Any], console: Console, detached: bool = False) -> None:
    """The addresses to use, as ``up`` prints them once every server answers (URLs never cut)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    token_file = str(state.get("token_file", ""))
    token = read_token(Path(token_file)) if token_file else None
    first_url = None
    for name, svc in service_records(state).items():
        if "url" in svc:  # a web server behind the token
            first_url = first_url or (f"{svc['url']}?token={token}" if token else str(svc["url"]))
            auth = f"token in {token_file}"
            if svc.get("password"):
                auth = f"your password, or the {auth}"
            table.add_row(str(svc.get("label", name)), f"log in with the {auth}")
        if "command" in svc:  # a login server
            table.add_row(str(svc.get("label", name)), str(svc["command"]))
            table.add_row("", f"host keys {', '.join(map(str, svc.get('host_keys') or []))}")
            if svc.get("authorized_keys"):
                sources = ", ".join(map(str, svc.get("key_sources") or []))
                table.add_row("", f"{svc['authorized_keys']} authorized key(s) from {sources}")
            else:
                table.add_row(
                    "",
                    "[yellow]no authorized keys yet: nobody can log in. Add one with --authorized-keys, "
                    "CUDALAB_AUTHORIZED_KEYS or ~/.ssh/authorized_keys[/]",
                )
    table.add_row("Workspace", str(state.get("workspace", "")))
    table.add_row("State", f"{state.get('state_dir', '')} (logs, keys, token)")
    table.add_row("Stop", "cudalab lab stop" if detached else "cudalab lab stop, or Ctrl-C here")
    console.print(f"[bold green]cudalab lab is up[/] for {state.get('user')} (pid {state.get('pid')})")
    if first_url:  # the address on a line of its own, never wrapped, so it can be copied whole
        console.print(first_url, soft_wrap=True)
    console.print(table)


def print_status(report: Mapping[str, Any], console: Console) -> None:
    """``cudalab lab status`` as a table."""
    if not report.get("running"):
        console.print(f"No lab is running from {report.get('state_dir')}.")
        return
    table = Table(title=f"cudalab lab (pid {report.get('pid')}, since {report.get('started')})")
    for col in ("service", "pid", "state", "address"):
        table.add_column(col)
    for name, svc in service_records(report).items():
        state = (
            "[green]up[/]"
            if svc.get("answering")
            else ("[yellow]not answering[/]" if svc.get("alive") else "[red]dead[/]")
        )
        table.add_row(name, str(svc.get("pid")), state, str(svc.get("url") or svc.get("command", "")))
    console.print(table)
    console.print(f"Token: {report.get('token_file')}   State: {report.get('state_dir')}")
