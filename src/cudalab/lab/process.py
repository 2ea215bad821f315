"""The lab's processes: a server record, starting one, telling whether it lives and answers, stopping it.

Nothing here knows which server is which: a :class:`Server` carries its command, its log and its
:class:`Probe` (how to tell it answers), and :mod:`cudalab.lab.supervise` runs a list of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

#: Seconds between SIGTERM and SIGKILL when stopping.
STOP_GRACE_S = 15.0
#: A server's log is moved to ``<name>.1`` at start once it is larger than this.
LOG_ROTATE_BYTES = 10 * 2**20


@dataclass(frozen=True)
class Probe:
    """How to tell that a server answers.

    ``http``: ``GET /api/status`` with the lab's token answers 200 (JupyterLab); ``ssh``: the port
    greets with an SSH protocol banner (sshd).
    """

    kind: Literal["http", "ssh"]
    host: str
    port: int
    scheme: str = "http"

    def answers(self, token: str, timeout: float = 3.0) -> bool:
        if self.kind == "http":
            return http_responds(self.scheme, self.host, self.port, token, timeout)
        return ssh_responds(self.host, self.port, timeout)

    @classmethod
    def from_record(cls, record: Any) -> Probe | None:
        """The probe a ``lab.json`` service record holds, or None when it is missing or malformed."""
        if not isinstance(record, dict):
            return None
        try:
            probe = cls(**record)
        except TypeError:
            return None
        ok = probe.kind in ("http", "ssh") and isinstance(probe.host, str) and isinstance(probe.port, int)
        return probe if ok else None


@dataclass(frozen=True)
class Server:
    """One server of the lab: how to start it, where it logs, how to tell it answers.

    ``info`` is what ``lab.json`` records about it beside its pid (URL, user, host keys, ...).
    """

    name: str
    argv: list[str]
    log: Path
    cwd: Path
    probe: Probe
    env: dict[str, str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM this child when the supervisor dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def spawn(server: Server) -> subprocess.Popen[bytes]:
    """Start ``server`` in its own session, appending to its log (rotated once past a size)."""
    log = server.log
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} {server.argv[0]}\n".encode())
        out.flush()
        return subprocess.Popen(
            server.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(server.env) if server.env is not None else None,
            cwd=server.cwd,
            start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor only
            preexec_fn=_die_with_parent,
        )


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), to tell a live pid from a reused one."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_line.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def alive(pid: Any, start: Any = None) -> bool:
    """True when ``pid`` runs and, where known, is still the process that started at ``start``."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None and proc_start(pid) not in (None, start):
        return False
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        if "State:\tZ" in status.read_text():
            return False
    return True


def http_responds(scheme: str, host: str, port: int, token: str, timeout: float = 3.0) -> bool:
    """True when ``GET /api/status`` with the token answers 200."""
    bracketed = f"[{host}]" if ":" in host else host
    request = urllib.request.Request(
        f"{scheme}://{bracketed}:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via $http_proxy
    if scheme == "https":  # our own server, probed on loopback: its name need not match the certificate
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ssh_responds(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when the port answers with an SSH protocol banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    A process an SSH session leaves behind (``nohup job &``, a double fork) is then reparented to the
    supervisor instead of init, so stopping the lab can find and end it. False where unsupported.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_child_subreaper = 36
    return bool(ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)


def descendants(root: int) -> list[int]:
    """Every live process under ``root`` in the process tree (read from /proc), nearest first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, frontier = [], [root]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        out += frontier
    return out


def reap_orphans(keep: set[int]) -> None:
    """Collect the exit status of dead descendants reparented here (a subreaper must), leaving the
    servers in ``keep`` to their own ``Popen``."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in keep:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def end_descendants(root: int, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process under ``root``, SIGKILL what is left after ``grace_s``; return them.

    What ends an SSH user's access: their sessions and whatever those started, not only the server
    that admitted them.
    """
    import time

    pids = descendants(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reap_orphans(set())
        if not any(alive(p) for p in pids):
            return pids
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    reap_orphans(set())
    return pids


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
