"""Preparation: check everything a lab needs before anything starts, then write its configuration.

``prepare`` checks the user, ports, binaries, the state folder's safety, keys and the sshd
configuration (through ``sshd -t``), and only then writes the state folder (token, Jupyter and sshd
configurations, host keys). A failed check is a one-line error with exit 2 (or 1 for a missing
program) and nothing is started. :func:`servers` turns the result into the
:class:`~cudalab.lab.supervise.Server` records that :mod:`cudalab.lab.supervise` runs.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
from collections.abc import Mapping
from pathlib import Path

from cudalab._io import atomic_write_text
from cudalab.errors import CudalabError
from cudalab.lab import jupyter, sshd
from cudalab.lab.paths import LabOptions, LabPaths, Prepared
from cudalab.lab.process import Probe, Server, alive
from cudalab.lab.supervise import Lab, read_state

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
    running = read_state(paths.state)
    if running is not None and alive(running.get("pid"), running.get("pid_start")):
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
# what the supervisor runs
# --------------------------------------------------------------------------------------------------


def servers(p: Prepared) -> list[Server]:
    """JupyterLab, and sshd when asked for, as the supervisor's server records."""
    opts = p.options
    out = [
        Server(
            name="jupyter",
            argv=p.jupyter_cmd,
            log=p.paths.jupyter_log,
            cwd=opts.workspace,
            env=p.jupyter_env,
            probe=Probe("http", p.probe_host, opts.jupyter_port, p.scheme),
            info={
                "label": "JupyterLab",
                "host": opts.host,
                "port": opts.jupyter_port,
                "url": jupyter.url(p.scheme, p.shown_host, opts.jupyter_port),
                "password": p.password,
            },
        )
    ]
    if p.sshd_cmd is not None:
        out.append(
            Server(
                name="ssh",
                argv=p.sshd_cmd,
                log=p.paths.sshd_log,
                cwd=p.paths.root,
                probe=Probe("ssh", p.probe_host, opts.ssh_port),
                info={
                    "label": "SSH",
                    "host": opts.host,
                    "port": opts.ssh_port,
                    "user": p.ssh_user,
                    "command": f"ssh -p {opts.ssh_port} {p.ssh_user}@{p.shown_host}",
                    "host_keys": p.host_keys,
                    "authorized_keys": p.keys,
                    "key_sources": p.key_sources,
                    "config": str(p.paths.sshd_config),
                },
            )
        )
    return out


def lab(p: Prepared) -> Lab:
    """The whole lab as the supervisor takes it."""
    return Lab(
        servers=servers(p),
        token=p.token.value,
        state_file=p.paths.state,
        record={
            "user": p.user,
            "state_dir": str(p.paths.root),
            "workspace": str(p.options.workspace.resolve()),
            "token_file": str(p.paths.token),
            "token_source": p.token.source,
        },
    )


def write_password(paths: LabPaths, password: str) -> Path:
    """Store the argon2 hash of ``password`` (0600); the next ``lab up`` asks for it at login."""
    _private_folder(paths.root)
    hashed = jupyter.hash_password(password)
    return atomic_write_text(paths.password, hashed + "\n", mode=0o600)
