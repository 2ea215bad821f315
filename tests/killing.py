"""Kill a command with SIGKILL once a file it writes appears (a crash at a known point of a run)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_when(argv: list[str], env: dict[str, str], marker: Path, timeout: float = 300) -> None:
    """Run ``argv`` and SIGKILL it as soon as ``marker`` exists; asserts that it died by the signal
    (it had not finished first)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{argv[:6]} ended with {proc.returncode} before {marker.name}"
