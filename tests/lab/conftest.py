"""Fixtures for the lab's tests: the SSH tools, the account sshd admits, safe folders, client keys."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cudalab.lab.sshd import find_binary, unsafe_component

#: The account a root test run lets sshd admit (created for the session when absent).
LAB_USER = "cudalab-test"


@pytest.fixture(scope="session")
def ssh_tools() -> dict[str, str]:
    """sshd, ssh and ssh-keygen; skip (naming the packages) where they are not installed."""
    tools = {name: find_binary(name) for name in ("sshd", "ssh", "ssh-keygen")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(
            f"needs {', '.join(missing)}: install openssh-server and openssh-client (make test does, as root)"
        )
    return {k: v for k, v in tools.items() if v}


@pytest.fixture(scope="session")
def lab_account(ssh_tools: dict[str, str]) -> Iterator[pwd.struct_passwd]:
    """The account sshd admits: yourself, or when the tests run as root, ``cudalab-test``.

    A root run creates that account (no password, not locked: ``*``) and removes it afterwards.
    """
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid())
        return
    created = False
    try:
        account = pwd.getpwnam(LAB_USER)
    except KeyError:
        useradd = find_binary("useradd")
        if useradd is None:
            pytest.skip("running as root without useradd: cannot make an unprivileged account for sshd")
        subprocess.run(
            [useradd, "--create-home", "--shell", "/bin/sh", "--password", "*", LAB_USER],
            check=True,
            capture_output=True,
        )
        created = True
        account = pwd.getpwnam(LAB_USER)
    yield account
    if created:
        userdel = find_binary("userdel")
        if userdel:
            subprocess.run([userdel, "--remove", LAB_USER], check=False, capture_output=True)


@pytest.fixture
def safe_dir(lab_account: pwd.struct_passwd) -> Iterator[Path]:
    """A fresh folder sshd's StrictModes accepts and the admitted account can reach (not under /tmp).

    Under the account's home: a root run's folders are root's, inside the test user's home.
    """
    home = Path(lab_account.pw_dir)
    base = home / ".cache" / "cudalab-tests" if os.geteuid() != 0 else home
    path = base / f"lab-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, mode=0o700)
    why = unsafe_component(path, lab_account.pw_uid, home)
    if why:
        shutil.rmtree(path, ignore_errors=True)
        pytest.skip(f"no StrictModes-safe folder for the test: {why}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def client_key(tmp_path: Path, ssh_tools: dict[str, str]) -> Path:
    """A fresh ed25519 key pair for the SSH client; returns the private key."""
    key = tmp_path / "client" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    subprocess.run(
        [ssh_tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "lab-test", "-f", str(key)],
        check=True,
    )
    return key


def free_port() -> int:
    """A TCP port nobody listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
