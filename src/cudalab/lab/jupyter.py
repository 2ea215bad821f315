"""The lab's JupyterLab: a token that is never empty, an optional argon2 password, a locked config.

The token and password live in files of the state directory (mode 0600) and reach the server
through a config file of the same mode, never through the command line (which every user of a
shared machine can read in ``ps``).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cudalab._io import atomic_write_json, atomic_write_text
from cudalab.errors import CudalabError

#: Shortest token accepted from a user (a generated one has 43 characters, 256 bits).
MIN_TOKEN_CHARS = 16

#: Variables the server and its kernels must not inherit (secrets of the lab itself).
SECRET_ENV = ("JUPYTER_TOKEN", "CUDALAB_AUTHORIZED_KEYS", "JUPYTER_PASSWORD")


@dataclass(frozen=True)
class Token:
    """The token in force and where it came from (``JUPYTER_TOKEN``, a file, or generated)."""

    value: str
    source: str


def resolve_token(token_file: Path | None, environ: Mapping[str, str], stored: Path) -> Token:
    """The lab's token: from ``token_file``, else ``$JUPYTER_TOKEN``, else ``stored``, else a new one.

    Reads only; :func:`store_token` then writes the token in force to ``stored``, the file
    ``lab status`` names so the user can always find it.
    """
    if token_file is not None:
        try:
            value = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CudalabError(f"{token_file}: cannot read the token file: {exc.strerror}") from exc
        token = Token(value, str(token_file))
    elif environ.get("JUPYTER_TOKEN", "").strip():
        token = Token(environ["JUPYTER_TOKEN"].strip(), "JUPYTER_TOKEN")
    elif stored.is_file() and stored.read_text(encoding="utf-8").strip():
        token = Token(stored.read_text(encoding="utf-8").strip(), str(stored))
    else:
        token = Token(secrets.token_urlsafe(32), "generated")
    if len(token.value) < MIN_TOKEN_CHARS or any(c.isspace() for c in token.value):
        raise CudalabError(
            f"{token.source}: the Jupyter token must be at least {MIN_TOKEN_CHARS} characters without spaces"
        )
    return token


def store_token(token: Token, stored: Path) -> None:
    """Write ``token`` to ``stored`` (0600) unless it came from there."""
    if token.source != str(stored):
        atomic_write_text(stored, token.value + "\n", mode=0o600)


def hash_password(password: str) -> str:
    """Jupyter's ``argon2:...`` form of ``password`` (argon2id through argon2-cffi)."""
    if len(password) < 8:
        raise CudalabError("the password must have at least 8 characters")
    try:
        from jupyter_server.auth import passwd
    except ImportError as exc:
        raise CudalabError("the lab needs JupyterLab: pip install 'cudalab[lab]'") from exc
    hashed: str = passwd(password, algorithm="argon2")
    return hashed


def read_password_hash(path: Path) -> str | None:
    """The stored ``argon2:`` hash, None when no password was set; an error for anything else."""
    if not path.is_file():
        return None
    value = path.read_text(encoding="utf-8").strip()
    if not value.startswith("argon2:"):
        raise CudalabError(f"{path}: not an argon2 password hash; set it again with `cudalab lab password`")
    return value


@dataclass(frozen=True)
class JupyterSettings:
    """What the server configuration is made of."""

    host: str
    port: int
    root_dir: Path
    token: str
    password_hash: str | None
    allow_root: bool
    certfile: Path | None = None
    keyfile: Path | None = None
    base_url: str = "/"


def server_config(s: JupyterSettings) -> dict[str, Any]:
    """The Jupyter Server configuration (JSON form) the lab runs with."""
    server: dict[str, Any] = {
        "ip": s.host,
        "port": s.port,
        "port_retries": 0,  # a taken port is an error, not a silent move to another one
        "open_browser": False,
        "root_dir": str(s.root_dir),
        "base_url": s.base_url,
        "allow_root": s.allow_root,
        "allow_unauthenticated_access": False,
        "disable_check_xsrf": False,
        "jpserver_extensions": {"cudalab.lab.jupyter_ext": True},
        "tornado_settings": {"headers": {"X-Content-Type-Options": "nosniff"}},
    }
    if s.certfile:
        server["certfile"] = str(s.certfile)
    if s.keyfile:
        server["keyfile"] = str(s.keyfile)
    config: dict[str, Any] = {
        "ServerApp": server,
        "IdentityProvider": {"token": s.token},
    }
    if s.password_hash:
        config["PasswordIdentityProvider"] = {
            "hashed_password": s.password_hash,
            "allow_password_change": False,
        }
    return config


def write_config(path: Path, s: JupyterSettings) -> Path:
    """Write :func:`server_config` to ``path`` (0600: it holds the token)."""
    return atomic_write_json(path, server_config(s), mode=0o600)


def command(config: Path) -> list[str]:
    """The JupyterLab command line: this Python, the lab's config file, nothing secret."""
    return [sys.executable, "-m", "jupyterlab", f"--config={config}"]


def environment(environ: Mapping[str, str], config_dir: Path) -> dict[str, str]:
    """The server's environment: ``environ`` without the lab's secrets, Jupyter's folders in the state dir.

    JUPYTER_CONFIG_DIR is the lab's own, so a personal ``~/.jupyter`` config cannot switch the token
    off; the system and venv config folders (which enable JupyterLab itself) still apply.
    """
    env = {k: v for k, v in environ.items() if k not in SECRET_ENV}
    env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    env["JUPYTER_RUNTIME_DIR"] = str(config_dir / "runtime")
    env.pop("JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS", None)
    return env


def check_installed() -> None:
    """A one-line error when JupyterLab is not installed in this Python."""
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise CudalabError(f"JupyterLab is not installed in {sys.prefix}: pip install 'cudalab[lab]'")


def url(scheme: str, host: str, port: int, base_url: str = "/") -> str:
    """The address of the lab's UI."""
    bracketed = f"[{host}]" if ":" in host else host
    return f"{scheme}://{bracketed}:{port}{base_url.rstrip('/')}/lab"
