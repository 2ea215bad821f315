"""`cudalab lab` on bad input: one line naming the fault, exit 2, no server and no lab record left."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cudalab.cli import main
from tests.lab.conftest import free_port

pytest.importorskip("jupyterlab", reason="the lab needs the [lab] extra")

ROOT = os.geteuid() == 0


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["lab", "up", *args])
    err = capsys.readouterr().err
    return rc, err


def base(state: Path, workspace: Path) -> list[str]:
    args = [f"--state-dir={state}", f"--workspace={workspace}", f"--jupyter-port={free_port()}"]
    return [*args, "--allow-root"] if ROOT else args


def check_clean(state: Path) -> None:
    assert not (state / "lab.json").exists()
    assert not (state / "jupyter_token").exists(), "a refused start writes nothing"


def test_root_needs_to_be_told(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("only a root run can check the refusal to run as root")
    rc, err = run(capsys, f"--state-dir={tmp_path / 's'}", "--no-ssh")
    assert rc == 2 and err.startswith("cudalab: error: refusing to run the lab as root")
    rc, err = run(capsys, f"--state-dir={tmp_path / 's'}", "--allow-root")
    assert rc == 2 and "--ssh-user" in err
    for user, fault in (("root", "never admits root"), ("no-such-user-x", "no such user")):
        rc, err = run(capsys, f"--state-dir={tmp_path / 's'}", "--allow-root", f"--ssh-user={user}")
        assert rc == 2 and fault in err
    check_clean(tmp_path / "s")


def test_unprivileged_lab_admits_only_its_own_user(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if ROOT:
        pytest.skip("a root run checks --ssh-user the other way")
    rc, err = run(capsys, *base(tmp_path / "s", tmp_path), "--ssh-user=somebody-else")
    assert rc == 2 and "can only admit" in err
    check_clean(tmp_path / "s")


@pytest.mark.parametrize(
    ("extra", "fault"),
    [
        (["--workspace=/no/such/folder"], "/no/such/folder: the workspace is not a folder"),
        (["--certfile=/etc/hostname"], "--certfile and --keyfile go together"),
        (["--jupyter-port=70000"], "--jupyter-port 70000: not a TCP port"),
        (["--token-file=/no/such/token"], "/no/such/token: cannot read the token file"),
    ],
)
def test_bad_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], fault: str
) -> None:
    rc, err = run(capsys, *base(tmp_path / "s", tmp_path), "--no-ssh", *extra)
    assert rc == 2, err
    assert err.count("\n") == 1 and fault in err and "Traceback" not in err
    check_clean(tmp_path / "s")


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, err = run(capsys, *base(tmp_path / "s", tmp_path), "--no-ssh", f"--jupyter-port={port}")
    assert rc == 2 and f"--jupyter-port {port}: cannot listen" in err
    check_clean(tmp_path / "s")


def test_bad_authorized_keys_name_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, safe_dir: Path, lab_account: object
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# mine\n-----BEGIN OPENSSH PRIVATE KEY-----\n")
    user = [f"--ssh-user={lab_account.pw_name}"] if ROOT else []  # type: ignore[attr-defined]
    rc, err = run(
        capsys, *base(safe_dir, tmp_path), f"--ssh-port={free_port()}", f"--authorized-keys={keys}", *user
    )
    assert rc == 2 and f"{keys}:2: this is a private key" in err
    check_clean(safe_dir)


def test_state_dir_sshd_would_distrust(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab_account: object
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    user = [f"--ssh-user={lab_account.pw_name}"] if ROOT else []  # type: ignore[attr-defined]
    rc, err = run(capsys, *base(shared / "s", tmp_path), f"--ssh-port={free_port()}", *user)
    assert rc == 2 and "StrictModes" in err and "writable by group or others" in err
    check_clean(shared / "s")


def test_status_and_stop_without_a_lab(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["lab", "status", f"--state-dir={tmp_path}"]) == 1
    assert "No lab is running" in capsys.readouterr().out
    assert main(["lab", "stop", f"--state-dir={tmp_path}"]) == 0


def test_password_is_hashed_into_the_state_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    assert main(["lab", "password", "--stdin", f"--state-dir={tmp_path}"]) == 0
    stored = (tmp_path / "jupyter_password").read_text()
    assert stored.startswith("argon2:") and "a long enough secret" not in stored
    assert (tmp_path / "jupyter_password").stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["lab", "password", "--stdin", f"--state-dir={tmp_path}"]) == 2
