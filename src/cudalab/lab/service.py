"""``cudalab lab up | status | stop``: JupyterLab and sshd, started, watched and stopped together.

``up`` checks everything it can before starting anything (user, ports, binaries, the state folder's
safety, keys, the sshd configuration through ``sshd -t``), starts both servers in their own sessions
so a Ctrl-C reaches only the supervisor, waits until each answers, records ``lab.json`` and then
watches: if either server dies the other is stopped and ``up`` exits 1 (a container's restart policy
takes over); SIGTERM or Ctrl-C stops both and exits 0. The children get SIGTERM from the kernel if
the supervisor itself is killed (``PR_SET_PDEATHSIG``), so no server outlives its lab.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cudalab._io import atomic_write_json, atomic_write_text
from cudalab.errors import CudalabError, ExitCode
from cudalab.lab import jupyter, sshd

#: Seconds each server gets to answer after it starts.
START_TIMEOUT_S = 120.0
#: Seconds between SIGTERM and SIGKILL when stopping.
STOP_GRACE_S = 15.0

_WILDCARDS = ("0.0.0.0", "::", "")


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
        return socket.getfqdn() if self.options.host in _WILDCARDS else self.options.host

    @property
    def probe_host(self) -> str:
        return "127.0.0.1" if self.options.host in _WILDCARDS else self.options.host


# --------------------------------------------------------------------------------------------------
# checks and preparation
# --------------------------------------------------------------------------------------------------


def _private_folder(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700, and tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _check_port(host: str, port: int, option: str) -> None:
    if not 1 <= port <= 65535:
        raise CudalabError(f"{option} {port}: not a TCP port (1-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as exc:
            raise CudalabError(
                f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror}); choose another port"
            ) from exc


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CudalabError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def prepare(opts: LabOptions, environ: Mapping[str, str] = os.environ) -> Prepared:
    """Check the options and the machine, write the configurations; start nothing.

    Raises :class:`CudalabError` (exit 2 for a wrong option or file, 1 for a missing program) before
    anything is started, so a failed ``up`` leaves no server behind.
    """
    uid = os.geteuid()
    try:
        account = pwd.getpwuid(uid)
    except KeyError:  # `docker run --user 4242` without a passwd entry
        if opts.ssh:
            raise CudalabError(
                f"uid {uid} has no account in /etc/passwd, which sshd needs: run as a user that has one "
                "(the image's is uid 1000), or with --no-ssh"
            ) from None
        account = pwd.struct_passwd((f"uid{uid}", "*", uid, os.getgid(), "", str(Path.home()), "/bin/sh"))
    if uid == 0 and not opts.allow_root:
        raise CudalabError(
            "refusing to run the lab as root: start it as an unprivileged user (the image's is uid 1000), "
            "or pass --allow-root (with --ssh-user NAME, or --no-ssh)"
        )
    ssh_account = _ssh_account(opts, account) if opts.ssh else account
    if opts.ssh and opts.ssh_port == opts.jupyter_port:
        raise CudalabError(f"--ssh-port {opts.ssh_port}: the same port as --jupyter-port")
    if not opts.workspace.is_dir():
        raise CudalabError(f"{opts.workspace}: the workspace is not a folder")
    if bool(opts.certfile) != bool(opts.keyfile):
        raise CudalabError("--certfile and --keyfile go together (TLS needs both)")
    for tls in (opts.certfile, opts.keyfile):
        if tls is not None and not tls.is_file():
            raise CudalabError(f"{tls}: no such file")
    jupyter.check_installed()
    sshd_bin = keygen = ssh_client = None
    if opts.ssh:
        sshd_bin = sshd.require_binary("sshd", "openssh-server")
        keygen = sshd.require_binary("ssh-keygen", "openssh-client")
        ssh_client = sshd.find_binary("ssh")

    paths = LabPaths(opts.state_dir.expanduser().resolve())
    running = read_state(paths)
    if running is not None and _alive(running.get("pid"), running.get("pid_start")):
        raise CudalabError(
            f"{paths.root}: a lab is already running there (pid {running['pid']}); `cudalab lab stop` first"
        )
    _check_port(opts.host, opts.jupyter_port, "--jupyter-port")
    if opts.ssh:
        _check_port(opts.host, opts.ssh_port, "--ssh-port")
    token = jupyter.resolve_token(opts.token_file, environ, paths.token)
    password = jupyter.read_password_hash(paths.password)
    keys = _check_ssh(paths, opts, ssh_account, environ) if opts.ssh else []

    # every check passed: from here on the state folder is written
    _private_folder(paths.root)
    _private_folder(paths.jupyter_dir)
    jupyter.store_token(token, paths.token)
    settings = jupyter.JupyterSettings(
        host=opts.host,
        port=opts.jupyter_port,
        root_dir=opts.workspace.resolve(),
        token=token.value,
        password_hash=password,
        allow_root=uid == 0,
        certfile=opts.certfile.resolve() if opts.certfile else None,
        keyfile=opts.keyfile.resolve() if opts.keyfile else None,
    )
    jupyter.write_config(paths.jupyter_config, settings)
    prepared = Prepared(
        options=opts,
        paths=paths,
        user=account.pw_name,
        token=token,
        password=password is not None,
        jupyter_cmd=jupyter.command(paths.jupyter_config),
        jupyter_env=jupyter.environment(environ, paths.jupyter_dir),
    )
    if opts.ssh:
        assert sshd_bin is not None and keygen is not None
        _prepare_sshd(prepared, sshd_bin, keygen, ssh_client, ssh_account, keys, environ)
    return prepared


def _check_ssh(
    paths: LabPaths, opts: LabOptions, account: pwd.struct_passwd, environ: Mapping[str, str]
) -> list[tuple[str, list[str]]]:
    """Check what sshd will need before anything is written; each key source with its checked keys.

    sshd's StrictModes would silently ignore keys kept in an unsafe folder (under /tmp, say), and a
    privileged sshd reads them as the admitted user, who must be able to reach them.
    """
    why = sshd.unsafe_component(paths.ssh_dir, account.pw_uid, Path(account.pw_dir))
    if why:
        raise CudalabError(
            f"{paths.root}: sshd (StrictModes) would refuse keys kept here: {why}; choose a --state-dir "
            "whose folders only you and root can write (under your home, say)"
        )
    if os.geteuid() == 0:
        groups = [account.pw_gid, *(g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem)]
        # the state folder and its ssh/ are opened to 0711 at start; the folders above must let them in
        blocked = sshd.unreachable_component(paths.root.parent, account.pw_uid, groups)
        if blocked:
            raise CudalabError(
                f"{paths.root}: {account.pw_name} cannot reach the authorized keys kept here ({blocked} is "
                f"closed to them); choose a --state-dir {account.pw_name} can enter"
            )
    sources: list[tuple[str, str]] = []
    for f in opts.authorized_keys:
        sources.append((str(f), _read_text(f, "the authorized keys")))
    if environ.get("CUDALAB_AUTHORIZED_KEYS", "").strip():
        sources.append(("CUDALAB_AUTHORIZED_KEYS", environ["CUDALAB_AUTHORIZED_KEYS"].replace("\\n", "\n")))
    return [(origin, sshd.parse_authorized_keys(text, origin)) for origin, text in sources]


def _ssh_account(opts: LabOptions, me: pwd.struct_passwd) -> pwd.struct_passwd:
    """The one account sshd admits: the lab user, or (a root lab only) ``--ssh-user``; never root.

    An unprivileged sshd can only log its own user in. A root lab runs sshd privileged, the classic
    way, and must be told whom to admit.
    """
    if me.pw_uid != 0:
        if opts.ssh_user not in (None, me.pw_name):
            raise CudalabError(
                f"--ssh-user {opts.ssh_user}: a lab run by {me.pw_name} can only admit {me.pw_name} by SSH"
            )
        return me
    if not opts.ssh_user:
        raise CudalabError(
            "a root lab needs --ssh-user NAME (the account sshd admits, never root) or --no-ssh"
        )
    try:
        account = pwd.getpwnam(opts.ssh_user)
    except KeyError:
        raise CudalabError(f"--ssh-user {opts.ssh_user}: no such user") from None
    if account.pw_uid == 0:
        raise CudalabError(f"--ssh-user {opts.ssh_user}: the lab's sshd never admits root")
    if _locked(account.pw_name):
        raise CudalabError(
            f"--ssh-user {account.pw_name}: the account is locked (its password field starts with '!'), and "
            f"sshd without PAM refuses locked accounts even with a key; unlock it without giving it a "
            f"password: usermod -p '*' {account.pw_name}"
        )
    return account


def _locked(user: str, shadow: Path = Path("/etc/shadow")) -> bool:
    """True when ``user``'s shadow entry is locked the way OpenSSH checks it (``!`` or ``*LK*``)."""
    try:
        lines = shadow.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(":")
        if len(fields) > 1 and fields[0] == user:
            return fields[1].startswith("!") or fields[1].startswith("*LK*")
    return False


def _prepare_sshd(
    p: Prepared,
    sshd_bin: str,
    keygen: str,
    ssh_client: str | None,
    account: pwd.struct_passwd,
    sources: list[tuple[str, list[str]]],
    environ: Mapping[str, str],
) -> None:
    paths, opts = p.paths, p.options
    privileged = os.geteuid() == 0
    _private_folder(paths.ssh_dir)
    if privileged:
        # sshd reads authorized_keys as the admitted user: it must be able to reach that file (public
        # keys, 0644); host keys, token and password stay 0600 root, and the folders cannot be listed.
        paths.root.chmod(0o711)
        paths.ssh_dir.chmod(0o711)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation's empty chroot
    p.keys = sshd.write_authorized_keys(
        paths.authorized_keys, [k for _, keys in sources for k in keys], mode=0o644 if privileged else 0o600
    )
    p.key_sources = [origin for origin, _ in sources]
    home_keys = Path(account.pw_dir) / ".ssh" / "authorized_keys"
    if home_keys.is_file():
        p.key_sources.append(str(home_keys))
        with contextlib.suppress(CudalabError, OSError):
            p.keys += len(sshd.parse_authorized_keys(home_keys.read_text(encoding="utf-8"), str(home_keys)))
    keys = sshd.ensure_host_keys(paths.ssh_dir, keygen)
    p.host_keys = sshd.fingerprints(keys, keygen)
    p.ssh_user = account.pw_name
    settings = sshd.SshdSettings(
        user=account.pw_name,
        listen=opts.host or "0.0.0.0",
        port=opts.ssh_port,
        host_keys=keys,
        pid_file=paths.sshd_pid,
        authorized_keys=(str(paths.authorized_keys), ".ssh/authorized_keys"),
        env={} if privileged else sshd.session_env(environ),  # another account keeps its own
        kex=sshd.supported(ssh_client, "kex", sshd.PREFERRED_KEX),
        ciphers=sshd.supported(ssh_client, "cipher", sshd.PREFERRED_CIPHERS),
        macs=sshd.supported(ssh_client, "mac", sshd.PREFERRED_MACS),
    )
    atomic_write_text(paths.sshd_config, sshd.render_config(settings), mode=0o600)
    sshd.check(sshd_bin, paths.sshd_config)
    p.sshd_cmd = [sshd_bin, "-D", "-e", "-f", str(paths.sshd_config)]


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


#: A server's log is moved to ``<name>.1`` at start once it is larger than this.
LOG_ROTATE_BYTES = 10 * 2**20


def _spawn(cmd: list[str], log: Path, env: Mapping[str, str] | None, cwd: Path) -> subprocess.Popen[bytes]:
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} {cmd[0]}\n".encode())
        out.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor only
            preexec_fn=_die_with_parent,
        )


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), to tell a live pid from a reused one."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_line.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _alive(pid: Any, start: Any = None) -> bool:
    """True when ``pid`` runs and, where known, is still the process that started at ``start``."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None and _proc_start(pid) not in (None, start):
        return False
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        if "State:\tZ" in status.read_text():
            return False
    return True


def jupyter_responds(scheme: str, host: str, port: int, token: str, timeout: float = 3.0) -> bool:
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


def sshd_responds(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when the port answers with an SSH protocol banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
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


# --------------------------------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------------------------------


class _Stop:
    """Set by SIGTERM, SIGINT or SIGHUP; the supervisor's loop checks it."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum


def up(p: Prepared, console: Console) -> int:
    """Start, wait until both servers answer, record, print, and watch until told to stop."""
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["jupyter"] = _spawn(p.jupyter_cmd, p.paths.jupyter_log, p.jupyter_env, p.options.workspace)
        if p.sshd_cmd is not None:
            procs["ssh"] = _spawn(p.sshd_cmd, p.paths.sshd_log, None, p.paths.root)
        _wait_ready(p, procs, stop)
        if stop.signal is not None:
            return int(ExitCode.OK)
        state = _state(p, procs)
        atomic_write_json(p.paths.state, state)
        print_lab(state, console)
        while stop.signal is None:
            dead = [name for name, proc in procs.items() if proc.poll() is not None]
            if dead:
                name = dead[0]
                log = p.paths.jupyter_log if name == "jupyter" else p.paths.sshd_log
                console.print(
                    f"[bold red]{name} exited ({procs[name].returncode}); stopping the lab.[/] "
                    f"Last lines of {log}: {escape(_log_tail(log))}"
                )
                return int(ExitCode.PROBLEM)
            time.sleep(0.5)
        console.print(f"Received {signal.Signals(stop.signal).name}; stopping the lab.")
        return int(ExitCode.OK)
    finally:
        for proc in procs.values():
            _stop_process(proc)
        with contextlib.suppress(OSError):
            state_now = read_state(p.paths)
            if state_now is not None and state_now.get("pid") == os.getpid():
                p.paths.state.unlink()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_ready(p: Prepared, procs: dict[str, subprocess.Popen[bytes]], stop: _Stop) -> None:
    """Return when every server answers; raise (naming its log) when one exits or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = set(procs)
    while pending and stop.signal is None:
        for name in sorted(pending):
            proc = procs[name]
            log = p.paths.jupyter_log if name == "jupyter" else p.paths.sshd_log
            if proc.poll() is not None:
                raise CudalabError(
                    f"{log}: {name} exited with {proc.returncode} at start: {_log_tail(log)}",
                    ExitCode.PROBLEM,
                )
            if name == "jupyter":
                ok = jupyter_responds(p.scheme, p.probe_host, p.options.jupyter_port, p.token.value)
            else:
                ok = sshd_responds(p.probe_host, p.options.ssh_port)
            if ok:
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise CudalabError(
                f"{', '.join(sorted(pending))} did not answer within {START_TIMEOUT_S:.0f} s; "
                f"see {p.paths.root}/*.log",
                ExitCode.PROBLEM,
            )
        if pending:
            time.sleep(0.2)


def _state(p: Prepared, procs: Mapping[str, subprocess.Popen[bytes]]) -> dict[str, Any]:
    opts = p.options
    services: dict[str, Any] = {
        "jupyter": {
            "pid": procs["jupyter"].pid,
            "pid_start": _proc_start(procs["jupyter"].pid),
            "host": opts.host,
            "port": opts.jupyter_port,
            "scheme": p.scheme,
            "url": jupyter.url(p.scheme, p.shown_host, opts.jupyter_port),
            "password": p.password,
            "log": str(p.paths.jupyter_log),
        }
    }
    if "ssh" in procs:
        services["ssh"] = {
            "pid": procs["ssh"].pid,
            "pid_start": _proc_start(procs["ssh"].pid),
            "host": opts.host,
            "port": opts.ssh_port,
            "user": p.ssh_user,
            "command": f"ssh -p {opts.ssh_port} {p.ssh_user}@{p.shown_host}",
            "host_keys": p.host_keys,
            "authorized_keys": p.keys,
            "key_sources": p.key_sources,
            "config": str(p.paths.sshd_config),
            "log": str(p.paths.sshd_log),
        }
    return {
        "pid": os.getpid(),
        "pid_start": _proc_start(os.getpid()),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": p.user,
        "state_dir": str(p.paths.root),
        "workspace": str(opts.workspace.resolve()),
        "token_file": str(p.paths.token),
        "token_source": p.token.source,
        "services": services,
    }


def print_lab(state: Mapping[str, Any], console: Console, detached: bool = False) -> None:
    """The addresses to use, as ``up`` prints them once both servers answer (URLs never cut)."""
    services = state["services"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    j = services["jupyter"]
    token = _read_token(Path(state["token_file"]))
    auth = f"token in {state['token_file']}"
    if j.get("password"):
        auth = f"your password, or the {auth}"
    table.add_row("JupyterLab", f"log in with the {auth}")
    if "ssh" in services:
        s = services["ssh"]
        table.add_row("SSH", s["command"])
        table.add_row("", f"host keys {', '.join(s['host_keys'])}")
        if s["authorized_keys"]:
            table.add_row("", f"{s['authorized_keys']} authorized key(s) from {', '.join(s['key_sources'])}")
        else:
            table.add_row(
                "",
                "[yellow]no authorized keys yet: nobody can log in. Add one with --authorized-keys, "
                "CUDALAB_AUTHORIZED_KEYS or ~/.ssh/authorized_keys[/]",
            )
    table.add_row("Workspace", state["workspace"])
    table.add_row("State", f"{state['state_dir']} (logs, keys, token)")
    table.add_row("Stop", "cudalab lab stop" if detached else "cudalab lab stop, or Ctrl-C here")
    console.print(f"[bold green]cudalab lab is up[/] for {state['user']} (pid {state['pid']})")
    # the address on a line of its own, never wrapped, so it can be copied whole
    console.print(f"{j['url']}?token={token}" if token else j["url"], soft_wrap=True)
    console.print(table)


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def detach(p: Prepared, console: Console) -> int:
    """Run :func:`up` in a forked, session-leading child (its output in ``lab.log``); return once the
    lab is up, or with the child's error when it fails first. Nothing is checked or written twice:
    the child supervises what ``p`` prepared.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; the lab tests drive it through the CLI
        code = int(ExitCode.PROBLEM)
        try:
            os.setsid()
            log = os.open(p.paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            for stream in (sys.stdout, sys.stderr):  # a file now: flush each line for `tail -f`
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            code = up(p, Console(file=sys.stdout, highlight=False))
        except CudalabError as exc:
            sys.stderr.write(f"cudalab: error: {exc}\n")
            code = int(exc.code)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + START_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        state = read_state(p.paths)
        if state is not None and state.get("pid") == pid:
            print_lab(state, console, detached=True)
            return int(ExitCode.OK)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            tail = _log_tail(p.paths.log, 3)
            sys.stderr.write(f"cudalab: error: the lab did not start (see {p.paths.log}): {tail}\n")
            return os.waitstatus_to_exitcode(status) or int(ExitCode.PROBLEM)
        time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    raise CudalabError(f"the lab did not come up in time; see {p.paths.log}", ExitCode.PROBLEM)


# --------------------------------------------------------------------------------------------------
# status and stop
# --------------------------------------------------------------------------------------------------


def read_state(paths: LabPaths) -> dict[str, Any] | None:
    """``lab.json``, or None when there is none (or it is unreadable: a lab is not running then)."""
    try:
        data = json.loads(paths.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(paths: LabPaths) -> dict[str, Any]:
    """What runs: each server's pid, whether it is alive and answering; ``healthy`` when all are."""
    state = read_state(paths)
    if state is None or not _alive(state.get("pid"), state.get("pid_start")):
        return {"running": False, "healthy": False, "state_dir": str(paths.root)}
    token = _read_token(Path(state["token_file"])) or ""
    report: dict[str, Any] = {**state, "running": True}
    healthy = True
    for name, svc in state["services"].items():
        alive = _alive(svc.get("pid"), svc.get("pid_start"))
        host = "127.0.0.1" if svc["host"] in _WILDCARDS else svc["host"]
        if name == "jupyter":
            answering = alive and jupyter_responds(svc["scheme"], host, svc["port"], token)
        else:
            answering = alive and sshd_responds(host, svc["port"])
        report["services"][name] = {**svc, "alive": alive, "answering": answering}
        healthy = healthy and answering
    report["healthy"] = healthy
    return report


def print_status(report: Mapping[str, Any], console: Console) -> None:
    """``cudalab lab status`` as a table."""
    if not report["running"]:
        console.print(f"No lab is running from {report['state_dir']}.")
        return
    table = Table(title=f"cudalab lab (pid {report['pid']}, since {report['started']})")
    for col in ("service", "pid", "state", "address"):
        table.add_column(col)
    for name, svc in report["services"].items():
        state = (
            "[green]up[/]"
            if svc["answering"]
            else ("[yellow]not answering[/]" if svc["alive"] else "[red]dead[/]")
        )
        table.add_row(name, str(svc["pid"]), state, svc.get("url") or svc.get("command", ""))
    console.print(table)
    console.print(f"Token: {report['token_file']}   State: {report['state_dir']}")


def stop(paths: LabPaths, echo: Callable[[str], None]) -> bool:
    """Stop the lab recorded in ``paths`` (SIGTERM, then SIGKILL after the grace time); False if none ran."""
    state = read_state(paths)
    if state is None or not _alive(state.get("pid"), state.get("pid_start")):
        paths.state.unlink(missing_ok=True)
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S + 5
    while time.monotonic() < deadline and _alive(pid, state.get("pid_start")):
        time.sleep(0.1)
    if _alive(pid, state.get("pid_start")):
        echo(f"the supervisor (pid {pid}) ignored SIGTERM; killing it and its servers")
        targets = [(pid, state.get("pid_start"))] + [
            (svc.get("pid"), svc.get("pid_start")) for svc in state["services"].values()
        ]
        for target, start in targets:
            if _alive(target, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(target), signal.SIGKILL)
    paths.state.unlink(missing_ok=True)
    return True


def write_password(paths: LabPaths, password: str) -> Path:
    """Store the argon2 hash of ``password`` (0600); the next ``lab up`` asks for it at login."""
    _private_folder(paths.root)
    hashed = jupyter.hash_password(password)
    return atomic_write_text(paths.password, hashed + "\n", mode=0o600)
