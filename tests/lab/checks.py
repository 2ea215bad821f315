"""The lab's security checks, written once and run against any lab: native here, or in the image.

Each takes an address and the credentials and returns what it saw, so a test asserts on facts
(status codes, ssh's exit code and its words) and the same functions serve the native lab
(tests/lab/test_lab.py) and a container built from docker/Dockerfile (tests/lab/test_image.py).
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Http:
    status: int
    location: str
    server: str = ""
    """The ``Server`` header ('' when absent)."""


def http(url: str, token: str | None = None, method: str = "GET") -> Http:
    """One request, redirects not followed; the status, the Location and the Server headers."""
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=20) as resp:
            return Http(resp.status, resp.headers.get("Location", ""), resp.headers.get("Server", ""))
    except urllib.error.HTTPError as exc:
        return Http(exc.code, exc.headers.get("Location", ""), exc.headers.get("Server", ""))


def reveals_nothing(base: str, token: str) -> list[str]:
    """What a caller without the token could learn of the versions: every finding, or nothing."""
    found = []
    for path in ("/", "/login", "/lab", "/api", "/api/status", "/static/lab/package.json", "/nope"):
        for tok in (None, token):
            r = http(base + path, token=tok)
            if r.server:
                found.append(f"{path}: Server: {r.server}")
    for path in ("/static/lab/package.json", "/static/lab/build_log.json"):
        if http(base + path).status == 200:
            found.append(f"{path} served without the token")
    return found


def denied_without_token(base: str, path: str) -> Http:
    """``path`` without credentials: the lab must answer 403, or redirect to its login page."""
    return http(base + path)


@dataclass(frozen=True)
class Ssh:
    rc: int
    out: str
    err: str


def ssh(
    host: str, port: int, user: str, *options: str, key: Path | None = None, command: str = "id -un"
) -> Ssh:
    """Run ``command`` over ssh, non-interactively (BatchMode: no prompt can hang the test)."""
    argv = [
        "ssh",
        "-p",
        str(port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "IdentitiesOnly=yes",
        "-F",
        "/dev/null",
    ]
    if key is not None:
        argv += ["-i", str(key)]
    argv += [*options, f"{user}@{host}", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return Ssh(proc.returncode, proc.stdout.strip(), proc.stderr.strip())


def ssh_key_login(host: str, port: int, user: str, key: Path) -> Ssh:
    return ssh(host, port, user, key=key)


def ssh_root_login(host: str, port: int, key: Path) -> Ssh:
    """root with the lab user's (valid) key: must be refused."""
    return ssh(host, port, "root", key=key)


def ssh_password_login(host: str, port: int, user: str) -> Ssh:
    """Password and keyboard-interactive only: the server must not even offer them."""
    return ssh(
        host,
        port,
        user,
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "NumberOfPasswordPrompts=1",
    )


def refused_offering_publickey_only(result: Ssh) -> bool:
    """ssh failed to authenticate, and the server listed publickey as its only method."""
    return result.rc == 255 and "Permission denied (publickey)" in result.err
