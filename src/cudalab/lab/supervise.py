"""Supervision: start a lab's servers, wait until each answers, watch them, stop them together.

A server is a :class:`~cudalab.lab.process.Server` record (name, command, log, how to tell it
answers, what ``lab.json`` says of it); nothing here knows which server is which. ``up`` starts each in its own session (so a
Ctrl-C reaches only the supervisor), waits until each answers its :class:`Probe`, records
``lab.json`` and then watches: if one dies the others are stopped and ``up`` exits 1 (a container's
restart policy takes over); SIGTERM or Ctrl-C stops all and exits 0. The children get SIGTERM from the
kernel if the supervisor itself is killed (``PR_SET_PDEATHSIG``), so no server outlives its lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cudalab._io import atomic_write_json
from cudalab.errors import CudalabError, ExitCode
from cudalab.lab.process import (
    STOP_GRACE_S,
    Probe,
    Server,
    alive,
    become_subreaper,
    end_descendants,
    log_tail,
    proc_start,
    reap_orphans,
    spawn,
    stop_process,
)

#: Seconds each server gets to answer after it starts.
START_TIMEOUT_S = 120.0
# --------------------------------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------------------------------


class _Stop:
    """Set by SIGTERM, SIGINT or SIGHUP; the supervisor's loop checks it."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum


@dataclass(frozen=True)
class Lab:
    """What ``up`` supervises: the servers, the token their probes use, where ``lab.json`` goes, and
    the lab-wide facts it records (user, folders, token file)."""

    servers: list[Server]
    token: str
    state_file: Path
    record: dict[str, Any]


def up(lab: Lab, on_ready: Callable[[dict[str, Any]], None], say: Callable[[str], None]) -> int:
    """Start every server, wait until each answers, record ``lab.json``, call ``on_ready`` with it,
    and watch until told to stop (exit 0) or until a server dies (exit 1).

    However it ends, every process the lab started goes with it: the servers, and everything under
    them (an SSH session, what it left running in the background, a notebook's kernel), which the
    supervisor, as their subreaper, can still find.
    """
    become_subreaper()
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for server in lab.servers:
            procs[server.name] = spawn(server)
        _wait_ready(lab, procs, stop)
        if stop.signal is not None:
            return int(ExitCode.OK)
        state = _state(lab, procs)
        atomic_write_json(lab.state_file, state)
        on_ready(state)
        servers = {p.pid for p in procs.values()}
        while stop.signal is None:
            reap_orphans(servers)
            dead = [s for s in lab.servers if procs[s.name].poll() is not None]
            if dead:
                server = dead[0]
                say(
                    f"[bold red]{server.name} exited ({procs[server.name].returncode}); stopping the lab.[/] "
                    f"Last lines of {server.log}: {_escape(log_tail(server.log))}"
                )
                return int(ExitCode.PROBLEM)
            time.sleep(0.5)
        say(f"Received {signal.Signals(stop.signal).name}; stopping the lab.")
        return int(ExitCode.OK)
    finally:
        for proc in procs.values():
            stop_process(proc)
        end_descendants(os.getpid(), grace_s=5.0)  # the sessions sshd admitted, and what they left running
        with contextlib.suppress(OSError):
            state_now = read_state(lab.state_file)
            if state_now is not None and state_now.get("pid") == os.getpid():
                lab.state_file.unlink()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _wait_ready(lab: Lab, procs: dict[str, subprocess.Popen[bytes]], stop: _Stop) -> None:
    """Return when every server answers; raise (naming its log) when one exits or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = {s.name: s for s in lab.servers}
    while pending and stop.signal is None:
        for name in sorted(pending):
            server, proc = pending[name], procs[name]
            if proc.poll() is not None:
                raise CudalabError(
                    f"{server.log}: {name} exited with {proc.returncode} at start: {log_tail(server.log)}",
                    ExitCode.PROBLEM,
                )
            if server.probe.answers(lab.token):
                del pending[name]
        if pending and time.monotonic() > deadline:
            logs = ", ".join(str(s.log) for s in pending.values())
            raise CudalabError(
                f"{', '.join(sorted(pending))} did not answer within {START_TIMEOUT_S:.0f} s; see {logs}",
                ExitCode.PROBLEM,
            )
        if pending:
            time.sleep(0.2)


def _state(lab: Lab, procs: Mapping[str, subprocess.Popen[bytes]]) -> dict[str, Any]:
    services = {
        s.name: {
            "pid": procs[s.name].pid,
            "pid_start": proc_start(procs[s.name].pid),
            "probe": asdict(s.probe),
            "log": str(s.log),
            **s.info,
        }
        for s in lab.servers
    }
    return {
        "pid": os.getpid(),
        "pid_start": proc_start(os.getpid()),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **lab.record,
        "services": services,
    }


def detach(lab: Lab, log: Path, on_ready: Callable[[dict[str, Any]], None]) -> int:
    """Run :func:`up` in a forked, session-leading child (its output in ``log``); return once the
    lab is up, or with the child's error when it fails first. Nothing is checked or written twice:
    the child supervises what was prepared.
    """
    from rich.console import Console

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; the lab tests drive it through the CLI
        code = int(ExitCode.PROBLEM)
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for stream in (sys.stdout, sys.stderr):  # a file now: flush each line for `tail -f`
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            console = Console(file=sys.stdout, highlight=False)
            from cudalab.lab.render import print_lab

            code = up(lab, lambda state: print_lab(state, console), console.print)
        except CudalabError as exc:
            sys.stderr.write(f"cudalab: error: {exc}\n")
            code = int(exc.code)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + START_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        state = read_state(lab.state_file)
        if state is not None and state.get("pid") == pid:
            on_ready(state)
            return int(ExitCode.OK)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            sys.stderr.write(f"cudalab: error: the lab did not start (see {log}): {log_tail(log, 3)}\n")
            return os.waitstatus_to_exitcode(status) or int(ExitCode.PROBLEM)
        time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    raise CudalabError(f"the lab did not come up in time; see {log}", ExitCode.PROBLEM)


# --------------------------------------------------------------------------------------------------
# status and stop
# --------------------------------------------------------------------------------------------------


def read_state(state_file: Path) -> dict[str, Any] | None:
    """``lab.json``, or None when there is none (or it is unreadable: a lab is not running then)."""
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def service_records(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The service records of a ``lab.json`` that are records at all (a hand-edited file may hold
    anything)."""
    services = state.get("services")
    if not isinstance(services, dict):
        return {}
    return {str(k): v for k, v in services.items() if isinstance(v, dict)}


def status(state_file: Path, token: str) -> dict[str, Any]:
    """What runs: each server's pid, whether it is alive and answering; ``healthy`` when all are.

    A partial or hand-edited ``lab.json`` is reported as it is (a service without a usable probe is
    not answering), never a crash.
    """
    state = read_state(state_file)
    if state is None or not alive(state.get("pid"), state.get("pid_start")):
        return {"running": False, "healthy": False}
    report: dict[str, Any] = {**state, "running": True, "services": {}}
    services = service_records(state)
    healthy = bool(services)
    for name, svc in services.items():
        is_alive = alive(svc.get("pid"), svc.get("pid_start"))
        probe = Probe.from_record(svc.get("probe"))
        answering = is_alive and probe is not None and probe.answers(token)
        report["services"][name] = {**svc, "alive": is_alive, "answering": answering}
        healthy = healthy and answering
    report["healthy"] = healthy
    return report


def stop(state_file: Path, echo: Callable[[str], None]) -> bool:
    """Stop the lab recorded in ``state_file`` (SIGTERM, then SIGKILL after the grace time); False if
    none ran."""
    state = read_state(state_file)
    if state is None or not alive(state.get("pid"), state.get("pid_start")):
        state_file.unlink(missing_ok=True)
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S + 5
    while time.monotonic() < deadline and alive(pid, state.get("pid_start")):
        time.sleep(0.1)
    if alive(pid, state.get("pid_start")):
        echo(f"the supervisor (pid {pid}) ignored SIGTERM; killing it, its servers and their sessions")
        end_descendants(pid, grace_s=1.0)  # before the supervisor: its orphans would go to init
        targets = [(pid, state.get("pid_start"))] + [
            (svc.get("pid"), svc.get("pid_start")) for svc in service_records(state).values()
        ]
        for target, start in targets:
            if isinstance(target, int) and alive(target, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return True
