"""The lab as users get it: `cudalab lab up` started for real on loopback, then probed from outside.

JupyterLab must refuse anyone without the token (403 for the API, a redirect to the login page for
the UI) and serve whoever has it; sshd must admit the lab user's key and refuse root and passwords;
the token must never show on a command line; `status`, `stop` and the supervisor must do what they
say. A root test run starts the lab with --allow-root --ssh-user cudalab-test (a privileged sshd);
tests/lab/test_sshd.py runs the image's way (an unprivileged sshd) with the same checks.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab import checks
from tests.lab.conftest import free_port

pytest.importorskip("jupyterlab", reason="the lab needs the [lab] extra")


@dataclass
class Lab:
    state: Path
    base: str
    token: str
    ssh_port: int
    user: str
    key: Path

    def status(self) -> subprocess.CompletedProcess[str]:
        return cudalab("lab", "status", "--json", f"--state-dir={self.state}")

    def record(self) -> dict:
        return json.loads((self.state / "lab.json").read_text())


def cudalab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cudalab", *args], capture_output=True, text=True, timeout=240, env=env
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "CUDALAB_AUTHORIZED_KEYS")}
    env["COLUMNS"] = "200"
    return env


def start_lab(state: Path, workspace: Path, key: Path, account: pwd.struct_passwd) -> Lab:
    jport, sport = free_port(), free_port()
    args = [
        "lab",
        "up",
        "--detach",
        f"--state-dir={state}",
        f"--workspace={workspace}",
        "--host=127.0.0.1",
        f"--jupyter-port={jport}",
        f"--ssh-port={sport}",
        f"--authorized-keys={key}.pub",
    ]
    if os.geteuid() == 0:
        args += ["--allow-root", f"--ssh-user={account.pw_name}"]
    proc = cudalab(*args, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    token = (state / "jupyter_token").read_text().strip()
    assert token in proc.stdout, "up prints the URL with its token"
    return Lab(state, f"http://127.0.0.1:{jport}", token, sport, account.pw_name, key)


@pytest.fixture
def lab(safe_dir: Path, tmp_path: Path, client_key: Path, lab_account: pwd.struct_passwd) -> Iterator[Lab]:
    running = start_lab(safe_dir, tmp_path, client_key, lab_account)
    yield running
    cudalab("lab", "stop", f"--state-dir={safe_dir}")


def test_the_running_lab_is_locked_down(lab: Lab) -> None:
    """One lab, every check of issue 6 against it (a start costs seconds; the checks share it)."""
    # JupyterLab without credentials: the API answers 403, the UI sends you to the login page
    for path in ("/api", "/api/status", "/api/contents", "/api/kernels"):
        assert checks.denied_without_token(lab.base, path).status == 403, path
    ui = checks.denied_without_token(lab.base, "/lab")
    assert ui.status == 302 and "/login" in ui.location
    assert checks.http(lab.base + "/api/kernels", method="POST").status == 403
    assert checks.http(lab.base + "/api", token="x" * 43).status == 403, "a wrong token is no token"
    # no response names the server's version, and the static manifests are not served to strangers
    assert checks.reveals_nothing(lab.base, lab.token) == []
    assert checks.http(lab.base + "/static/lab/package.json").status in (302, 403)
    # ... and with the token: the UI, the API, and a kernel that starts
    assert checks.http(lab.base + "/lab", token=lab.token).status == 200
    assert checks.http(lab.base + "/api", token=lab.token).status == 200
    kernel = checks.http(lab.base + "/api/kernels", token=lab.token, method="POST")
    assert kernel.status == 201
    # the token is in no command line and in no environment a notebook inherits
    jupyter_pid = lab.record()["services"]["jupyter"]["pid"]
    assert lab.token not in Path(f"/proc/{jupyter_pid}/cmdline").read_text(errors="replace")
    assert lab.token not in Path(f"/proc/{jupyter_pid}/environ").read_text(errors="replace")
    for secret in ("jupyter_token", "jupyter/lab_config.json", "ssh/ssh_host_ed25519_key"):
        assert (lab.state / secret).stat().st_mode & 0o077 == 0, f"{secret} is readable by others"

    # sshd: the lab user's key works; root (even with that key) and passwords do not
    ok = checks.ssh_key_login("127.0.0.1", lab.ssh_port, lab.user, lab.key)
    assert ok.rc == 0 and ok.out == lab.user, ok
    root = checks.ssh_root_login("127.0.0.1", lab.ssh_port, lab.key)
    assert checks.refused_offering_publickey_only(root), root
    password = checks.ssh_password_login("127.0.0.1", lab.ssh_port, lab.user)
    assert checks.refused_offering_publickey_only(password), password
    stranger = checks.ssh("127.0.0.1", lab.ssh_port, lab.user, key=lab.key.with_name("absent"))
    assert stranger.rc == 255
    log = (lab.state / "sshd.log").read_text()
    assert f"Accepted publickey for {lab.user}" in log
    assert "User root from 127.0.0.1 not allowed because" in log  # refused by policy, before any key

    # status: both up, exit 0 (the image's HEALTHCHECK)
    status = lab.status()
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] and set(report["services"]) == {"jupyter", "ssh"}
    assert all(s["answering"] for s in report["services"].values())

    # a second lab on the same state is refused with a one-line error and exit 2
    again = cudalab("lab", "up", f"--state-dir={lab.state}", "--no-ssh", "--allow-root", env=_env())
    assert again.returncode == 2 and "already running" in again.stderr and "Traceback" not in again.stderr


def test_a_dying_server_takes_the_lab_down_and_stop_cleans_up(
    safe_dir: Path, tmp_path: Path, client_key: Path, lab_account: pwd.struct_passwd
) -> None:
    lab = start_lab(safe_dir, tmp_path, client_key, lab_account)
    record = lab.record()
    supervisor = record["pid"]
    sshd_pid = record["services"]["ssh"]["pid"]
    os.kill(record["services"]["jupyter"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{supervisor}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{supervisor}").exists(), "the supervisor exits when a server dies"
    assert not Path(f"/proc/{sshd_pid}").exists(), "and stops the other one"
    assert not (safe_dir / "lab.json").exists()
    assert "jupyter exited" in (safe_dir / "lab.log").read_text()
    assert lab.status().returncode == 1

    # restart on the same state: same token, same host keys; then stop ends every process
    keys_before = (safe_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text()
    lab = start_lab(safe_dir, tmp_path, client_key, lab_account)
    assert lab.token == (safe_dir / "jupyter_token").read_text().strip()
    assert (safe_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text() == keys_before
    pids = [lab.record()["pid"], *(s["pid"] for s in lab.record()["services"].values())]
    stopped = cudalab("lab", "stop", f"--state-dir={safe_dir}")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    time.sleep(0.5)
    assert not [p for p in pids if _running(p)]
    assert cudalab("lab", "status", f"--state-dir={safe_dir}").returncode == 1
    assert "No lab is running" in cudalab("lab", "stop", f"--state-dir={safe_dir}").stdout


def _running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_servers_die_with_a_killed_supervisor(
    safe_dir: Path, tmp_path: Path, client_key: Path, lab_account: pwd.struct_passwd
) -> None:
    """SIGKILL gives the supervisor no chance to clean up: the kernel stops its servers (PDEATHSIG)."""
    lab = start_lab(safe_dir, tmp_path, client_key, lab_account)
    record = lab.record()
    os.kill(record["pid"], signal.SIGKILL)
    servers = [s["pid"] for s in record["services"].values()]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(p) for p in servers):
        time.sleep(0.2)
    assert not any(_running(p) for p in servers)
    assert (safe_dir / "lab.json").exists(), "the record is stale now"
    assert lab.status().returncode == 1, "a stale record is not a running lab"
    lab = start_lab(safe_dir, tmp_path, client_key, lab_account)  # and does not block a new one
    assert cudalab("lab", "stop", f"--state-dir={safe_dir}").returncode == 0


def _processes(match: str) -> list[int]:
    """Live processes whose command line contains ``match``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if match in cmd and _running(int(entry.name)):
                out.append(int(entry.name))
    return out


def test_stop_ends_every_ssh_session_and_what_it_left_running(
    safe_dir: Path, tmp_path: Path, client_key: Path, lab_account: pwd.struct_passwd
) -> None:
    """Access ends with the lab: an open session, a job it left in the background, new logins."""
    lab = start_lab(safe_dir, tmp_path, client_key, lab_account)
    tag = f"{os.getpid()}{time.monotonic_ns() % 100000}"
    # a job a session leaves behind (nohup ... &, the session exits), then a session kept open
    left = checks.ssh(
        "127.0.0.1", lab.ssh_port, lab.user, key=lab.key, command=f"nohup sleep 3{tag} >/dev/null 2>&1 &"
    )
    assert left.rc == 0, left
    session = subprocess.Popen(
        ["ssh", "-p", str(lab.ssh_port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
         "-i", str(lab.key), f"{lab.user}@127.0.0.1", f"sleep 4{tag}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (_processes(f"sleep 3{tag}") and _processes(f"sleep 4{tag}")):
        time.sleep(0.2)
    assert _processes(f"sleep 3{tag}") and _processes(f"sleep 4{tag}"), "both jobs run on the lab"

    stopped = cudalab("lab", "stop", f"--state-dir={safe_dir}")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    assert session.wait(timeout=30) != 0, "the open session was closed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_processes(f"sleep 3{tag}") or _processes(f"sleep 4{tag}")):
        time.sleep(0.2)
    assert not _processes(f"sleep 3{tag}"), "the job left in the background ended with the lab"
    assert not _processes(f"sleep 4{tag}"), "the session's own process ended with the lab"
    again = checks.ssh_key_login("127.0.0.1", lab.ssh_port, lab.user, lab.key)
    assert again.rc == 255, "and nobody gets in any more"


def test_status_reads_a_partial_state_folder_without_crashing(safe_dir: Path) -> None:
    """A lab.json cut short or edited by hand: status reports what it can, exit 1, one line at most."""
    records = [
        {"pid": os.getpid()},  # no services, no token file, no start time
        {"pid": os.getpid(), "services": {"jupyter": {"pid": "x"}, "ssh": 7}},
        {"pid": os.getpid(), "services": {"jupyter": {"pid": os.getpid(), "probe": {"kind": "gopher"}}}},
        [1, 2, 3],
    ]
    for record in records:
        (safe_dir / "lab.json").write_text(json.dumps(record))
        for args in (["--json"], []):
            r = cudalab("lab", "status", f"--state-dir={safe_dir}", *args)
            assert r.returncode == 1 and "Traceback" not in r.stderr, (record, r.stderr)
    (safe_dir / "lab.json").write_text("{")
    assert cudalab("lab", "status", f"--state-dir={safe_dir}").returncode == 1
