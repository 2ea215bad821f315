"""``cudalab lab up | status | stop | password``.

The service module (sockets, TLS, subprocess) is imported by each command, not here: every ``cudalab``
start, the doctor's included, imports this file.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cudalab._console import command_group, stdout_console
from cudalab.errors import CudalabError, ExitCode

if TYPE_CHECKING:
    from cudalab.lab.service import LabPaths

app = command_group("lab", "JupyterLab and SSH, hardened: the image's command, and usable on a bare server.")

StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Token, password hash, host keys and logs (default $CUDALAB_STATE_DIR or ~/.local/state/cudalab/lab).",
    ),
]


def _paths(state_dir: Path | None) -> LabPaths:
    from cudalab.lab import service

    return service.LabPaths((state_dir or service.default_state_dir()).expanduser().resolve())


@app.command()
def up(
    host: Annotated[
        str, typer.Option("--host", help="Address both servers listen on (0.0.0.0 in the image).")
    ] = "127.0.0.1",
    jupyter_port: Annotated[int, typer.Option("--jupyter-port", help="JupyterLab's port.")] = 8888,
    ssh_port: Annotated[int, typer.Option("--ssh-port", help="sshd's port.")] = 2222,
    state_dir: StateOption = None,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="JupyterLab's root folder (default $CUDALAB_WORKSPACE or here)."),
    ] = None,
    ssh: Annotated[bool, typer.Option("--ssh/--no-ssh", help="Run sshd beside JupyterLab.")] = True,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Read the Jupyter token from this file (else $JUPYTER_TOKEN, else generated).",
        ),
    ] = None,
    authorized_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--authorized-keys",
            metavar="FILE",
            help="Public keys that may log in by SSH (repeatable; also $CUDALAB_AUTHORIZED_KEYS and ~/.ssh/authorized_keys).",
        ),
    ] = None,
    certfile: Annotated[
        Path | None, typer.Option("--certfile", help="TLS certificate for JupyterLab.")
    ] = None,
    keyfile: Annotated[Path | None, typer.Option("--keyfile", help="TLS private key for JupyterLab.")] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise", help="Host name to print in the URLs (default: --host, or this machine's name)."
        ),
    ] = None,
    allow_root: Annotated[
        bool, typer.Option("--allow-root", help="Let root run the lab (JupyterLab as root; see --ssh-user).")
    ] = False,
    ssh_user: Annotated[
        str | None,
        typer.Option("--ssh-user", help="A root lab's sshd admits this account only (never root)."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return once both servers answer.")
    ] = False,
) -> None:
    """Start JupyterLab (token or password, never open) and a public-key-only sshd for this user."""
    from cudalab.lab import service

    env_workspace = os.environ.get("CUDALAB_WORKSPACE")
    opts = service.LabOptions(
        state_dir=_paths(state_dir).root,
        workspace=(workspace or Path(env_workspace or ".")).expanduser().resolve(),
        host=host,
        jupyter_port=jupyter_port,
        ssh_port=ssh_port,
        ssh=ssh,
        allow_root=allow_root,
        token_file=token_file,
        authorized_keys=tuple(authorized_keys or ()),
        certfile=certfile,
        keyfile=keyfile,
        advertise=advertise or os.environ.get("CUDALAB_ADVERTISE") or None,
        ssh_user=ssh_user,
    )
    console = stdout_console()
    prepared = service.prepare(opts)  # every check and its one-line error here, before anything starts
    raise typer.Exit(service.detach(prepared, console) if detach else service.up(prepared, console))


@app.command()
def status(
    state_dir: StateOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Which servers run, their pids and addresses; exit 0 only when every one answers (the HEALTHCHECK)."""
    from cudalab.lab import service

    report = service.status(_paths(state_dir))
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        service.print_status(report, stdout_console())
    raise typer.Exit(ExitCode.OK if report["healthy"] else ExitCode.PROBLEM)


@app.command()
def stop(state_dir: StateOption = None) -> None:
    """Stop the lab started from this state folder (SIGTERM, then SIGKILL after 15 s)."""
    from cudalab.lab import service

    paths = _paths(state_dir)
    console = stdout_console()
    if service.stop(paths, console.print):
        console.print(f"Stopped the lab of {paths.root}.")
    else:
        console.print(f"No lab is running from {paths.root}.")
    raise typer.Exit(ExitCode.OK)


@app.command()
def password(
    state_dir: StateOption = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from standard input.")] = False,
) -> None:
    """Set a JupyterLab login password (stored as an argon2 hash; used from the next `lab up`)."""
    from cudalab.lab import service

    if stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = getpass.getpass("New JupyterLab password: ")
        if getpass.getpass("Again: ") != secret:
            raise CudalabError("the two passwords differ; nothing was changed")
    path = service.write_password(_paths(state_dir), secret)
    stdout_console().print(
        f"Password hash saved to {path}; restart the lab (cudalab lab stop; cudalab lab up)."
    )
    raise typer.Exit(ExitCode.OK)
