"""JupyterLab's side of the lab: where the token comes from, what the server config enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from cudalab.errors import CudalabError
from cudalab.lab import jupyter


def test_token_sources_in_order(tmp_path: Path) -> None:
    stored = tmp_path / "state" / "jupyter_token"
    generated = jupyter.resolve_token(None, {}, stored)
    assert generated.source == "generated" and len(generated.value) >= 40
    assert not stored.exists(), "resolving reads only"
    jupyter.store_token(generated, stored)
    assert stored.read_text().strip() == generated.value and stored.stat().st_mode & 0o777 == 0o600
    # the stored token survives a restart
    assert jupyter.resolve_token(None, {}, stored).value == generated.value
    # $JUPYTER_TOKEN overrides it, a token file overrides both; the one in force is stored
    from_env = jupyter.resolve_token(None, {"JUPYTER_TOKEN": "e" * 20}, stored)
    assert (from_env.value, from_env.source) == ("e" * 20, "JUPYTER_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("f" * 24 + "\n")
    from_file = jupyter.resolve_token(token_file, {"JUPYTER_TOKEN": "e" * 20}, stored)
    assert from_file.value == "f" * 24
    jupyter.store_token(from_file, stored)
    assert stored.read_text().strip() == "f" * 24


@pytest.mark.parametrize("bad", ["short", "has a space in it!!!", ""])
def test_weak_or_empty_tokens_are_refused(tmp_path: Path, bad: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(bad)
    with pytest.raises(CudalabError, match=f"^{token_file}: the Jupyter token must be"):
        jupyter.resolve_token(token_file, {}, tmp_path / "stored")


def test_missing_token_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CudalabError, match=r"absent: cannot read the token file"):
        jupyter.resolve_token(tmp_path / "absent", {}, tmp_path / "stored")


def test_server_config_never_opens_the_server(tmp_path: Path) -> None:
    s = jupyter.JupyterSettings("127.0.0.1", 8888, tmp_path, "t" * 43, None, allow_root=False)
    config = jupyter.server_config(s)
    server = config["ServerApp"]
    assert config["IdentityProvider"]["token"] == "t" * 43
    assert server["allow_unauthenticated_access"] is False and server["disable_check_xsrf"] is False
    assert server["port_retries"] == 0 and server["open_browser"] is False
    assert server["jpserver_extensions"] == {"cudalab.lab.jupyter_ext": True}
    assert "PasswordIdentityProvider" not in config
    path = jupyter.write_config(tmp_path / "c.json", s)
    assert path.stat().st_mode & 0o777 == 0o600


def test_password_is_stored_as_argon2_and_verifies(tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server")
    from jupyter_server.auth import passwd_check

    hashed = jupyter.hash_password("correct horse battery")
    assert hashed.startswith("argon2:")
    assert passwd_check(hashed, "correct horse battery") and not passwd_check(hashed, "wrong")
    with pytest.raises(CudalabError, match="at least 8"):
        jupyter.hash_password("short")
    stored = tmp_path / "pw"
    stored.write_text("sha1:abc:def\n")
    with pytest.raises(CudalabError, match="not an argon2 password hash"):
        jupyter.read_password_hash(stored)
    s = jupyter.JupyterSettings("127.0.0.1", 8888, tmp_path, "t" * 43, hashed, allow_root=False)
    assert jupyter.server_config(s)["PasswordIdentityProvider"]["hashed_password"] == hashed


def test_secrets_do_not_reach_the_server_or_its_kernels(tmp_path: Path) -> None:
    env = jupyter.environment(
        {
            "PATH": "/bin",
            "JUPYTER_TOKEN": "x",
            "CUDALAB_AUTHORIZED_KEYS": "k",
            "JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS": "true",
        },
        tmp_path,
    )
    assert env["PATH"] == "/bin" and env["JUPYTER_CONFIG_DIR"] == str(tmp_path)
    assert not {
        "JUPYTER_TOKEN",
        "CUDALAB_AUTHORIZED_KEYS",
        "JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS",
    } & set(env)
