"""``cudalab lab up | status | stop | password``.

The lab's modules (sockets, TLS, subprocess) are imported by each command, not here: every ``cudalab``
start, the doctor's included, imports this file. Preparation is :mod:`~cudalab.lab.prepare`,
supervision :mod:`~cudalab.lab.supervise`, and what is printed :mod:`~cudalab.lab.render`.
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
    from cudalab.lab.paths import LabPaths

app = command_group("lab", "JupyterLab and SSH, hardened: the image's command, and usable on a bare server.")

StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Token, password hash, host keys and logs (default $CUDALAB_STATE_DIR or ~/.local/state/cudalab/lab).",
    ),
]


def _paths(state_dir: Path | None) -> LabPaths:
    from cudalab.lab.paths import LabPaths, default_state_dir

    return LabPaths((state_dir or default_state_dir()).expanduser().resolve())


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
    from cudalab.lab import prepare, supervise
    from cudalab.lab.paths import LabOptions
    from cudalab.lab.render import print_lab

    env_workspace = os.environ.get("CUDALAB_WORKSPACE")
    opts = LabOptions(
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
    prepared = prepare.prepare(opts)  # every check and its one-line error here, before anything starts
    lab = prepare.lab(prepared)
    if detach:
        code = supervise.detach(
            lab, prepared.paths.log, lambda state: print_lab(state, console, detached=True)
        )
    else:
        code = supervise.up(lab, lambda state: print_lab(state, console), console.print)
    raise typer.Exit(code)


@app.command()
def status(
    state_dir: StateOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Which servers run, their pids and addresses; exit 0 only when every one answers (the HEALTHCHECK)."""
    from cudalab.lab import supervise
    from cudalab.lab.paths import read_token
    from cudalab.lab.render import print_status

    paths = _paths(state_dir)
    report = {"state_dir": str(paths.root), **supervise.status(paths.state, read_token(paths.token) or "")}
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        print_status(report, stdout_console())
    raise typer.Exit(ExitCode.OK if report["healthy"] else ExitCode.PROBLEM)


@app.command()
def stop(state_dir: StateOption = None) -> None:
    """Stop the lab started from this state folder (SIGTERM, then SIGKILL after 15 s)."""
    from cudalab.lab import supervise

    paths = _paths(state_dir)
    console = stdout_console()
    if supervise.stop(paths.state, console.print):
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
    from cudalab.lab.prepare import write_password

    if stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = getpass.getpass("New JupyterLab password: ")
        if getpass.getpass("Again: ") != secret:
            raise CudalabError("the two passwords differ; nothing was changed")
    path = write_password(_paths(state_dir), secret)
    stdout_console().print(
        f"Password hash saved to {path}; restart the lab (cudalab lab stop; cudalab lab up)."
    )
    raise typer.Exit(ExitCode.OK)
