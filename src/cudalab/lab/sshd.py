"""The lab's sshd: a hardened configuration, host keys kept in the state directory, checked keys.

The sshd runs as the lab user, unprivileged (as in the image, where that user is uid 1000): it can
only ever log that one user in, it needs no PAM, and nothing of it is baked into an image. Its
configuration is rendered by a pure function (:func:`render_config`) so that tests read exactly
what the server is given; ``sshd -t`` validates it before the server starts.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cudalab._io import atomic_write_text
from cudalab.errors import CudalabError, ExitCode

#: Host key types generated at first start (ed25519 for every modern client, RSA for old ones).
HOST_KEY_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ed25519", ()),
    ("rsa", ("-b", "3072")),
)

#: Preferred algorithms, strongest first; each list is cut to what the installed OpenSSH knows.
PREFERRED_KEX = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group16-sha512",
)
PREFERRED_CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
PREFERRED_MACS = (
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
)

#: Variables an SSH session inherits from the lab (sshd's SetEnv), so that ``ssh lab python train.py``
#: finds the same Python, venv and GPUs as the notebooks. Secrets are never among them.
SESSION_ENV = (
    "PATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDALAB_STATE_DIR",
    "CUDALAB_DATA",
    "CUDALAB_PINNED",
    "HF_HOME",
    "TORCH_HOME",
)

#: Public key types sshd accepts in authorized_keys (``ssh -Q key`` on OpenSSH 9).
KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    }
)

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_binary(name: str) -> str | None:
    """Absolute path of ``name`` on PATH or in the sbin folders (which a user's PATH often lacks)."""
    found = shutil.which(name)
    if found:
        return str(Path(found).resolve())
    for folder in _SEARCH_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_binary(name: str, package: str) -> str:
    """:func:`find_binary` or a one-line error naming the package that provides it."""
    path = find_binary(name)
    if path is None:
        raise CudalabError(
            f"{name} not found: install {package} (Debian/Ubuntu: apt-get install {package}) or run with --no-ssh",
            ExitCode.PROBLEM,
        )
    return path


@dataclass(frozen=True)
class SshdSettings:
    """Everything the rendered configuration depends on.

    Attributes
    ----------
    user
        The only account allowed to log in (the lab user; never root).
    listen
        Address to listen on.
    port
        TCP port.
    host_keys
        Private host key files, in the state directory.
    pid_file
        Where sshd writes its pid.
    authorized_keys
        Files sshd reads the user's public keys from, at every login (absolute, or relative to home).
    env
        Variables every session starts with (``SetEnv``).
    kex, ciphers, macs
        Algorithms offered; empty means OpenSSH's defaults.
    """

    user: str
    listen: str
    port: int
    host_keys: tuple[Path, ...]
    pid_file: Path
    authorized_keys: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    kex: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()


def _quote(value: str) -> str:
    """A token sshd_config reads back verbatim (double-quoted when it holds a space)."""
    return f'"{value}"' if any(c.isspace() for c in value) else value


def render_config(s: SshdSettings) -> str:
    """The sshd_config text for ``s``: public keys only, one user, no root, nothing forwarded but ports.

    Each setting is spelled out even where OpenSSH's default agrees, so that the file documents the
    policy and a distribution's changed default cannot weaken it.
    """
    if s.user == "root":
        raise CudalabError("the lab's sshd never admits root; run the lab as an unprivileged user")
    lines = [
        "# Generated by `cudalab lab up` at every start; edits are overwritten.",
        f"Port {s.port}",
        f"ListenAddress {s.listen}",
        *(f"HostKey {_quote(str(k))}" for k in s.host_keys),
        f"PidFile {_quote(str(s.pid_file))}",
        "",
        "# Who and how: the lab user, with a public key, and nothing else.",
        f"AllowUsers {s.user}",
        "PermitRootLogin no",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "IgnoreRhosts yes",
        "PermitEmptyPasswords no",
        "UsePAM no",
        "StrictModes yes",
        f"AuthorizedKeysFile {' '.join(_quote(k) for k in s.authorized_keys)}",
        "MaxAuthTries 3",
        "MaxSessions 10",
        "MaxStartups 10:30:60",
        "LoginGraceTime 30",
        "",
        "# What a session may do: shells, sftp and local port forwards (TensorBoard), no more.",
        "AllowTcpForwarding local",
        "AllowStreamLocalForwarding no",
        "GatewayPorts no",
        "PermitTunnel no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "PermitUserEnvironment no",
        "PermitUserRC no",
        "PrintMotd no",
        "ClientAliveInterval 120",
        "ClientAliveCountMax 3",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if s.kex:
        lines.append(f"KexAlgorithms {','.join(s.kex)}")
    if s.ciphers:
        lines.append(f"Ciphers {','.join(s.ciphers)}")
    if s.macs:
        lines.append(f"MACs {','.join(s.macs)}")
    env = [f'"{k}={v}"' for k, v in s.env.items() if '"' not in v and "\n" not in v]
    if env:
        lines.append(f"SetEnv {' '.join(env)}")
    return "\n".join(lines) + "\n"


def supported(ssh: str | None, query: str, preferred: Sequence[str]) -> tuple[str, ...]:
    """``preferred`` cut to what ``ssh -Q <query>`` lists (the same OpenSSH build as the server).

    Returns ``()`` (OpenSSH's defaults) when the client is missing or lists none of them.
    """
    if ssh is None:
        return ()
    try:
        out = subprocess.run([ssh, "-Q", query], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ()
    known = set(out.stdout.split())
    return tuple(a for a in preferred if a in known)


def session_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The :data:`SESSION_ENV` variables set in ``environ``."""
    return {k: environ[k] for k in SESSION_ENV if environ.get(k)}


# --------------------------------------------------------------------------------------------------
# host keys and authorized keys
# --------------------------------------------------------------------------------------------------


def ensure_host_keys(folder: Path, ssh_keygen: str) -> tuple[Path, ...]:
    """The private host keys in ``folder``, generated on first use (never shipped in an image).

    Keys persist with the state directory, so clients see the same host across restarts.
    """
    keys = []
    for kind, extra in HOST_KEY_TYPES:
        key = folder / f"ssh_host_{kind}_key"
        if not key.exists():
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            proc = subprocess.run(
                [ssh_keygen, "-q", "-t", kind, *extra, "-N", "", "-C", f"cudalab-lab-{kind}", "-f", str(key)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                raise CudalabError(
                    f"{key}: ssh-keygen failed: {proc.stderr.strip() or proc.returncode}", ExitCode.PROBLEM
                )
        key.chmod(0o600)
        keys.append(key)
    return tuple(keys)


def fingerprints(keys: Iterable[Path], ssh_keygen: str) -> list[str]:
    """``SHA256:... (ED25519)`` for each host key, for users to check on first connection."""
    out = []
    for key in keys:
        proc = subprocess.run(
            [ssh_keygen, "-l", "-f", str(key.with_name(key.name + ".pub"))],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode == 0:
            parts = proc.stdout.split()
            out.append(f"{parts[1]} {parts[-1]}" if len(parts) >= 2 else proc.stdout.strip())
    return out


_KEY_LINE = re.compile(r"(?P<type>[a-z0-9@.-]+)\s+(?P<blob>[A-Za-z0-9+/]+={0,2})(?:\s+.*)?$")


def _key_ok(kind: str, blob: str) -> bool:
    """True when the base64 ``blob`` decodes to a key whose embedded type is ``kind``."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 4:
        return False
    n = int.from_bytes(raw[:4], "big")
    return raw[4 : 4 + n] == kind.encode()


def parse_authorized_keys(text: str, origin: str) -> list[str]:
    """The key lines of an authorized_keys text, each checked; comments and blank lines dropped.

    A line may start with options (``from="10.0.0.0/8",no-pty ssh-ed25519 AAAA...``). Raises a
    one-line :class:`CudalabError` naming ``origin`` and the line number at the first bad line, so a
    pasted private key or a truncated key is caught at start, not at someone's failed login.
    """
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "PRIVATE KEY" in line:
            raise CudalabError(f"{origin}:{number}: this is a private key; give the public one (.pub)")
        tokens = line.split()
        start = next((i for i, t in enumerate(tokens) if t in KEY_TYPES), None)
        match = _KEY_LINE.match(" ".join(tokens[start:])) if start is not None else None
        if match is None or not _key_ok(match["type"], match["blob"]):
            raise CudalabError(f"{origin}:{number}: not an OpenSSH public key line")
        keys.append(line)
    return keys


def write_authorized_keys(path: Path, keys: Iterable[str], mode: int = 0o600) -> int:
    """Write the key lines (checked by :func:`parse_authorized_keys`), once each, to ``path``; the count."""
    unique = list(dict.fromkeys(keys))
    atomic_write_text(path, "".join(k + "\n" for k in unique), mode=mode)
    return len(unique)


# --------------------------------------------------------------------------------------------------
# StrictModes: the same test sshd applies, made before start so the fault has a clear message
# --------------------------------------------------------------------------------------------------


def unsafe_component(path: Path, uid: int, home: Path | None) -> str | None:
    """Why sshd's StrictModes would refuse a key file in ``path``, or None.

    OpenSSH walks from the file's folder up to the root (stopping after the user's home) and refuses
    any folder not owned by root or the user, or writable by group or others (/tmp, for one). Folders
    not made yet are skipped: the lab creates them, private.
    """
    current = _existing(path)
    home = home.resolve() if home else None
    while True:
        try:
            st = current.stat()
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        if st.st_uid not in (0, uid):
            return f"{current} belongs to uid {st.st_uid}"
        if stat.S_IMODE(st.st_mode) & 0o022:
            return f"{current} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
        if current == home or current.parent == current:
            return None
        current = current.parent


def _existing(path: Path) -> Path:
    """``path`` resolved, or its nearest ancestor that exists."""
    current = path.resolve()
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def unreachable_component(path: Path, uid: int, gids: Iterable[int]) -> str | None:
    """The first folder on the way to ``path`` that user ``uid`` (in groups ``gids``) cannot enter, or None.

    A privileged sshd reads authorized_keys with the user's identity, so a key file behind a folder
    only root may enter is silently unreadable at login.
    """
    groups = set(gids)
    current = _existing(path)
    for folder in (current, *current.parents):
        try:
            st = folder.stat()
        except OSError as exc:
            return f"{folder}: {exc.strerror}"
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == uid:
            ok = bool(mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(mode & 0o010)
        else:
            ok = bool(mode & 0o001)
        if not ok:
            return f"{folder} (mode {mode:o}, owner uid {st.st_uid})"
    return None


def check(sshd: str, config: Path) -> None:
    """Run ``sshd -t`` on ``config``; a :class:`CudalabError` with sshd's own words when it refuses."""
    proc = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CudalabError(
            f"{config}: sshd -t rejects the configuration: {proc.stderr.strip()}", ExitCode.PROBLEM
        )


def effective(sshd: str, config: Path) -> dict[str, str]:
    """``sshd -T``: every setting as the server resolves it (lower-case keys; repeated keys joined)."""
    proc = subprocess.run([sshd, "-T", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CudalabError(f"{config}: sshd -T failed: {proc.stderr.strip()}", ExitCode.PROBLEM)
    settings: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings[key] = f"{settings[key]} {value}" if key in settings else value
    return settings
