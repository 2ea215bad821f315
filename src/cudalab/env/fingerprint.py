"""The environment fingerprint that every run stores in its manifest (``cudalab env`` prints it).

Versions are those *loaded at run time* (torch's cuDNN and NCCL as torch reports them, the driver as
NVML reports it), not what a package manager believes is installed: the two differ exactly when a
result cannot be reproduced.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cudalab import __version__
from cudalab.env.probe import probe_container, probe_driver, probe_nvml, probe_os, probe_torch_import

#: Environment variables that change numerics, placement or communication; recorded when set.
RECORDED_ENV_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "TORCH_",
    "PYTORCH_",
    "CUBLAS_",
    "CUDNN_",
    "OMP_",
    "MKL_",
)


def installed_packages() -> list[str]:
    """Every installed distribution as ``name==version``, sorted case-insensitively, without duplicates."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            seen.setdefault(name.lower().replace("_", "-"), f"{name}=={dist.version}")
    return [seen[k] for k in sorted(seen)]


#: Installed alongside a pinned stack without a pin of their own: CUDA's wheels (torch's pin decides
#: them; ``make constraints`` leaves them out), cudalab itself, and the venv's own pip and setuptools.
UNPINNED = re.compile(
    r"^(nvidia-(?!ml-py)|triton$|cuda-(bindings|pathfinder|toolkit)$|cudalab$|pip$|setuptools$|wheel$)"
)


def pinned_drift(packages: list[str], pins_file: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """How the installed packages differ from a pinned stack (``constraints.txt``; the image names its
    own in ``$CUDALAB_PINNED``): ``changed`` ("name pinned -> installed"), ``added`` (installed, not
    pinned) and ``removed`` (pinned, not installed). None without a pins file."""
    if not pins_file:
        return None
    try:
        text = Path(pins_file).read_text(encoding="utf-8")
    except OSError as exc:
        return {"file": str(pins_file), "error": exc.strerror or str(exc)}
    pins = [line.split("#")[0].strip() for line in text.splitlines()]
    diff = package_diff([p for p in pins if "==" in p], packages)
    keep = [(n, a, b) for n, a, b in diff if not UNPINNED.match(n)]
    return {
        "file": str(pins_file),
        "changed": [f"{n} {a} -> {b}" for n, a, b in keep if a != "-" and b != "-"],
        "added": [f"{n}=={b}" for n, a, b in keep if a == "-"],
        "removed": [f"{n}=={a}" for n, a, b in keep if b == "-"],
    }


def packages_hash(packages: list[str]) -> str:
    """sha256 of the package list (one ``name==version`` per line): equal hashes, equal environments."""
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()


def git_state(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirtiness of the git work tree holding ``cwd``; None outside a work tree."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain") or ""
    lines = [ln for ln in status.splitlines() if ln]
    return {
        "root": git("rev-parse", "--show-toplevel"),
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": any(not ln.startswith("??") for ln in lines),
        "untracked": sum(1 for ln in lines if ln.startswith("??")),
    }


def fingerprint(
    cwd: str | os.PathLike[str] | None = None,
    *,
    packages: bool = True,
    environ: Mapping[str, str] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Describe the environment a result is produced in.

    Parameters
    ----------
    cwd
        Folder whose git state is recorded (the current one by default).
    packages
        Include the full ``name==version`` list (the hash is always included).
    environ
        Environment to record variables from (``os.environ`` by default).
    argv
        Command line to record (``sys.argv`` by default).
    """
    env = os.environ if environ is None else environ
    os_p, container, driver, nvml, torch_p = (
        probe_os(),
        probe_container(env),
        probe_driver(),
        probe_nvml(),
        probe_torch_import(),
    )
    pkgs = installed_packages()
    t = torch_p.value or {}
    gpus = [
        {k: g.get(k) for k in ("index", "name", "uuid", "compute_capability", "memory_total_bytes")}
        for g in (nvml.get("gpus") or [])
    ] or [
        {k: d.get(k) for k in ("index", "name", "compute_capability", "memory_total_bytes")}
        for d in t.get("devices", [])
    ]
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cudalab": __version__,
        "python": {
            "version": sys.version.split()[0],
            "implementation": sys.implementation.name,
            "executable": sys.executable,
        },
        "platform": {k: os_p.get(k) for k in ("system", "kernel", "machine", "distro", "hostname", "cpus")},
        "torch": {
            "version": t.get("version"),
            "git_version": t.get("git_version"),
            "cuda": t.get("cuda"),
            "hip": t.get("hip"),
            "cudnn": t.get("cudnn"),
            "nccl": t.get("nccl"),
            "cuda_available": t.get("cuda_available"),
            "error": torch_p.error,
        },
        "driver": {
            "version": nvml.get("driver_version") or driver.get("version"),
            "cuda": nvml.get("driver_cuda"),
            "source": "nvml" if nvml.ok else ("/proc/driver/nvidia/version" if driver.ok else None),
        },
        "gpus": gpus,
        "container": {k: container.get(k) for k in ("runtime", "image", "image_digest")},
        "git": git_state(cwd if cwd is not None else Path.cwd()),
        "command": list(sys.argv if argv is None else argv),
        "env": {k: v for k, v in sorted(env.items()) if k.startswith(RECORDED_ENV_PREFIXES)},
        "packages_sha256": packages_hash(pkgs),
        **({"packages": pkgs} if packages else {}),
        "pinned": pinned_drift(pkgs, env.get("CUDALAB_PINNED")),
    }


def value_at(d: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested dicts (a fingerprint, a manifest), None where it is missing."""
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def package_diff(a: list[str], b: list[str]) -> list[tuple[str, str, str]]:
    """(name, version in A, version in B) for every package that differs ('-' when absent), from two
    ``name==version`` lists (names compared as pip normalises them)."""

    def parse(items: list[str]) -> dict[str, str]:
        out = {}
        for item in items if isinstance(items, list) else []:
            name, _, version = str(item).partition("==")
            out[name.lower().replace("_", "-")] = version
        return out

    pa, pb = parse(a), parse(b)
    return [
        (n, pa.get(n, "-"), pb.get(n, "-")) for n in sorted(pa.keys() | pb.keys()) if pa.get(n) != pb.get(n)
    ]


#: What a resumed run must find unchanged (:func:`drift`): (label, path into the fingerprint).
DRIFT_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python", ("python", "version")),
    ("torch", ("torch", "version")),
    ("CUDA", ("torch", "cuda")),
    ("cuDNN", ("torch", "cudnn")),
    ("NCCL", ("torch", "nccl")),
    ("driver", ("driver", "version")),
)


def drift(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed between two fingerprints among what a long run depends on: the Python, torch,
    CUDA, cuDNN and NCCL versions as loaded, the driver, and the installed packages (named, with
    their versions, when both fingerprints list them). One short phrase per change; [] when none."""
    out = []
    for label, path in DRIFT_KEYS:
        a, b = value_at(recorded, path), value_at(current, path)
        if a != b:
            out.append(f"{label} {a} -> {b}")
    if recorded.get("packages_sha256") != current.get("packages_sha256"):
        old, new = recorded.get("packages") or [], current.get("packages") or []
        if old and new:
            changed = [f"{n} {va} -> {vb}" for n, va, vb in package_diff(old, new)]
            shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
            out.append(f"packages: {shown}" if changed else "packages: the same versions, listed otherwise")
        else:
            out.append("packages: another set (sha256 differs)")
    return out
