"""Where a lab keeps its state, the options of ``lab up``, and what preparation hands the supervisor."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cudalab.lab import jupyter

WILDCARDS = ("0.0.0.0", "::", "")


def default_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$CUDALAB_STATE_DIR``, else ``$XDG_STATE_HOME/cudalab/lab``, else ``~/.local/state/cudalab/lab``."""
    if environ.get("CUDALAB_STATE_DIR"):
        return Path(environ["CUDALAB_STATE_DIR"]).expanduser()
    base = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "cudalab" / "lab"


@dataclass(frozen=True)
class LabPaths:
    """Where a lab keeps its state (one folder, mode 0700; persistent in the image)."""

    root: Path

    @property
    def state(self) -> Path:
        """``lab.json``: pids, ports, URLs of the running lab."""
        return self.root / "lab.json"

    @property
    def log(self) -> Path:
        """The supervisor's own output when started with ``--detach``."""
        return self.root / "lab.log"

    @property
    def token(self) -> Path:
        return self.root / "jupyter_token"

    @property
    def password(self) -> Path:
        return self.root / "jupyter_password"

    @property
    def jupyter_dir(self) -> Path:
        return self.root / "jupyter"

    @property
    def jupyter_config(self) -> Path:
        return self.jupyter_dir / "lab_config.json"

    @property
    def jupyter_log(self) -> Path:
        return self.root / "jupyter.log"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def sshd_pid(self) -> Path:
        return self.ssh_dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"


@dataclass(frozen=True)
class LabOptions:
    """The options of ``cudalab lab up``."""

    state_dir: Path
    workspace: Path
    host: str = "127.0.0.1"
    jupyter_port: int = 8888
    ssh_port: int = 2222
    ssh: bool = True
    allow_root: bool = False
    token_file: Path | None = None
    authorized_keys: tuple[Path, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    advertise: str | None = None
    ssh_user: str | None = None


@dataclass
class Prepared:
    """Everything checked and written; what remains is to start the processes."""

    options: LabOptions
    paths: LabPaths
    user: str
    token: jupyter.Token
    password: bool
    jupyter_cmd: list[str]
    jupyter_env: dict[str, str]
    sshd_cmd: list[str] | None = None
    host_keys: list[str] = field(default_factory=list)
    keys: int = 0
    key_sources: list[str] = field(default_factory=list)
    ssh_user: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.options.certfile else "http"

    @property
    def shown_host(self) -> str:
        if self.options.advertise:
            return self.options.advertise
        return socket.getfqdn() if self.options.host in WILDCARDS else self.options.host

    @property
    def probe_host(self) -> str:
        return "127.0.0.1" if self.options.host in WILDCARDS else self.options.host


def read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
