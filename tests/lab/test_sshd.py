"""The sshd configuration: what it says (pure), what sshd makes of it (-t, -T), and a real login.

The login test runs sshd the image's way: unprivileged, as the lab user itself (on a root test run,
as ``cudalab-test`` through runuser), with host keys and config made by the lab's own functions.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cudalab.errors import CudalabError
from cudalab.lab import sshd
from tests.lab import checks
from tests.lab.conftest import free_port

ED25519 = (
    "ssh-ed25519 "
    + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + bytes(32)).decode()
)


def settings(tmp: Path, user: str = "alice", **kw: object) -> sshd.SshdSettings:
    base = {
        "user": user,
        "listen": "127.0.0.1",
        "port": 2222,
        "host_keys": (tmp / "ssh_host_ed25519_key",),
        "pid_file": tmp / "sshd.pid",
        "authorized_keys": (str(tmp / "authorized_keys"), ".ssh/authorized_keys"),
    }
    base.update(kw)
    return sshd.SshdSettings(**base)  # type: ignore[arg-type]


def test_config_states_the_whole_policy(tmp_path: Path) -> None:
    text = sshd.render_config(settings(tmp_path, env={"PATH": "/opt/venv/bin:/usr/bin", "BAD": 'x"y'}))
    lines = set(text.splitlines())
    for line in (
        "AllowUsers alice",
        "PermitRootLogin no",
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "HostbasedAuthentication no",
        "StrictModes yes",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding local",
        "PermitUserEnvironment no",
        "UsePAM no",
    ):
        assert line in lines, line
    assert 'SetEnv "PATH=/opt/venv/bin:/usr/bin"' in lines, (
        "sessions get the lab's PATH; a value with a quote is dropped"
    )


def test_root_is_never_the_lab_user(tmp_path: Path) -> None:
    with pytest.raises(CudalabError, match="never admits root"):
        sshd.render_config(settings(tmp_path, user="root"))


def test_authorized_keys_are_checked_line_by_line() -> None:
    text = f'# team keys\n\n{ED25519} alice@laptop\nfrom="10.0.0.0/8",no-pty {ED25519} ci\n'
    assert len(sshd.parse_authorized_keys(text, "keys")) == 2
    with pytest.raises(CudalabError, match=r"^keys:2: not an OpenSSH public key line"):
        sshd.parse_authorized_keys(f"{ED25519}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI-truncated\n", "keys")
    with pytest.raises(CudalabError, match=r"^keys:1: .*private key"):
        sshd.parse_authorized_keys("-----BEGIN OPENSSH PRIVATE KEY-----\n", "keys")
    mislabelled = "ssh-rsa " + ED25519.split()[1]  # the blob says ed25519
    with pytest.raises(CudalabError, match="not an OpenSSH public key"):
        sshd.parse_authorized_keys(mislabelled, "keys")


def test_strict_modes_precheck(tmp_path: Path) -> None:
    uid = os.geteuid()
    assert sshd.unsafe_component(Path("/tmp"), uid, None) is not None, "/tmp is writable by all"
    private = tmp_path / "p"
    private.mkdir(mode=0o700)
    shared = private / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert "writable by group or others" in (sshd.unsafe_component(shared, uid, private) or "")
    assert sshd.unsafe_component(private, uid, private) is None, "the walk stops at the home folder"


def test_reachability_precheck(safe_dir: Path) -> None:
    """A privileged sshd reads authorized_keys as the user: every folder on the way must let them in."""
    inner = safe_dir / "closed" / "inner"
    inner.mkdir(parents=True)
    (safe_dir / "closed").chmod(0o700)
    stranger = 65533
    assert "closed" in (sshd.unreachable_component(inner, stranger, []) or "")
    if (
        sshd.unreachable_component(safe_dir.parent, stranger, []) is None
    ):  # a home closed to others stops here
        safe_dir.chmod(0o711)
        (safe_dir / "closed").chmod(0o711)
        inner.chmod(0o711)
        assert sshd.unreachable_component(inner, stranger, []) is None


def test_algorithms_are_cut_to_what_openssh_knows(ssh_tools: dict[str, str]) -> None:
    kex = sshd.supported(ssh_tools["ssh"], "kex", sshd.PREFERRED_KEX)
    assert kex and set(kex) <= set(sshd.PREFERRED_KEX)
    assert sshd.supported(ssh_tools["ssh"], "kex", ("no-such-kex",)) == ()
    assert sshd.supported(None, "kex", sshd.PREFERRED_KEX) == ()


def _prepared(
    folder: Path, account: pwd.struct_passwd, tools: dict[str, str], port: int, pubkey: Path
) -> Path:
    keys = sshd.ensure_host_keys(folder, tools["ssh-keygen"])
    sshd.write_authorized_keys(
        folder / "authorized_keys", sshd.parse_authorized_keys(pubkey.read_text(), str(pubkey))
    )
    s = sshd.SshdSettings(
        user=account.pw_name,
        listen="127.0.0.1",
        port=port,
        host_keys=keys,
        pid_file=folder / "sshd.pid",
        authorized_keys=(str(folder / "authorized_keys"),),
        kex=sshd.supported(tools["ssh"], "kex", sshd.PREFERRED_KEX),
        ciphers=sshd.supported(tools["ssh"], "cipher", sshd.PREFERRED_CIPHERS),
        macs=sshd.supported(tools["ssh"], "mac", sshd.PREFERRED_MACS),
    )
    config = folder / "sshd_config"
    config.write_text(sshd.render_config(s))
    if os.geteuid() == 0 and account.pw_uid != 0:  # the image's sshd owns its state
        for path in [folder, *folder.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
    return config


def test_sshd_accepts_the_config_and_resolves_it_hardened(
    safe_dir: Path, lab_account: pwd.struct_passwd, ssh_tools: dict[str, str], client_key: Path
) -> None:
    config = _prepared(safe_dir, lab_account, ssh_tools, 2222, client_key.with_suffix(".pub"))
    sshd.check(ssh_tools["sshd"], config)  # sshd -t
    eff = sshd.effective(ssh_tools["sshd"], config)  # sshd -T
    expected = {
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "pubkeyauthentication": "yes",
        "authenticationmethods": "publickey",
        "permitemptypasswords": "no",
        "hostbasedauthentication": "no",
        "usepam": "no",
        "strictmodes": "yes",
        "x11forwarding": "no",
        "allowagentforwarding": "no",
        "allowtcpforwarding": "local",
        "permittunnel": "no",
        "allowusers": lab_account.pw_name,
    }
    assert {k: eff.get(k) for k in expected} == expected
    assert "diffie-hellman-group1-sha1" not in eff["kexalgorithms"]


def test_sshd_refuses_a_broken_config(tmp_path: Path, ssh_tools: dict[str, str]) -> None:
    bad = tmp_path / "sshd_config"
    bad.write_text("PermitRootLogin maybe\n")
    with pytest.raises(CudalabError, match="sshd -t rejects"):
        sshd.check(ssh_tools["sshd"], bad)


def test_unprivileged_sshd_admits_the_key_and_refuses_root_and_passwords(
    safe_dir: Path, lab_account: pwd.struct_passwd, ssh_tools: dict[str, str], client_key: Path
) -> None:
    """The image's sshd: run by the lab user itself, so it can log in nobody else."""
    port = free_port()
    config = _prepared(safe_dir, lab_account, ssh_tools, port, client_key.with_suffix(".pub"))
    argv = [ssh_tools["sshd"], "-D", "-e", "-f", str(config)]
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", lab_account.pw_name, "--", *argv]
    log = safe_dir / "sshd.log"
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "Server listening" not in log.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            time.sleep(0.1)
        ok = checks.ssh_key_login("127.0.0.1", port, lab_account.pw_name, client_key)
        assert ok.rc == 0 and ok.out == lab_account.pw_name, ok
        assert checks.refused_offering_publickey_only(checks.ssh_root_login("127.0.0.1", port, client_key))
        assert checks.refused_offering_publickey_only(
            checks.ssh_password_login("127.0.0.1", port, lab_account.pw_name)
        )
    finally:
        server.terminate()
        server.wait(10)
    text = log.read_text()
    assert f"Accepted publickey for {lab_account.pw_name}" in text
    # "User root not allowed because account is locked" or "... from 127.0.0.1 not allowed because ..."
    assert re.search(r"User root (from \S+ )?not allowed because", text), text
