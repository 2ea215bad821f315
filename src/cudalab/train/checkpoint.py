"""Crash-safe checkpoints: atomic files, the last K kept beside the best, the newest valid one found.

A checkpoint holds everything a resumed run needs to continue bit for bit: the unwrapped,
uncompiled module's weights, the optimizer, LR scheduler and loss scaler, the step, epoch and data
position, the trainer's bookkeeping (best metric, evaluations without improvement) and every
rank's RNG states. Files are written to a temporary name, fsynced and renamed, so a process killed
mid-write leaves at worst a ``.tmp`` file, which is ignored and swept; a file that fails to load
anyway (a disk fault, a copy cut short) is skipped with a warning and the next older one is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cudalab._io import atomic_open

FORMAT = "cudalab-checkpoint"
FORMAT_VERSION = 1
#: Step numbers are zero-padded so names sort in step order in any listing.
_STEP_RE = re.compile(r"^step-(\d{9})\.pt$")
BEST = "best.pt"
_REQUIRED = ("format", "version", "step", "epoch", "batch", "model")


def step_name(step: int) -> str:
    return f"step-{step:09d}.pt"


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checkpoint that loaded and validated."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def save(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format tag added) atomically to ``path``."""
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    with atomic_open(path) as fh:
        torch.save(payload, fh)
    return path


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate one checkpoint; raises ``ValueError`` naming the file and the fault."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torn zip, pickle error, disallowed global: all mean "not usable"
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cudalab checkpoint")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if state["version"] > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state['version']} is newer than this cudalab reads")
    return state


class CheckpointDir:
    """The ``checkpoints/`` folder of a run.

    Parameters
    ----------
    path
        The folder (created on first save).
    keep_last
        Periodic checkpoints kept; older ones are deleted after each save. ``best.pt`` is separate.
    """

    def __init__(self, path: Path, keep_last: int = 3) -> None:
        self.path = Path(path)
        self.keep_last = keep_last

    def steps(self) -> list[tuple[int, Path]]:
        """Periodic checkpoints as (step, path), oldest first."""
        if not self.path.is_dir():
            return []
        found = []
        for p in self.path.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def sweep_temporaries(self) -> list[Path]:
        """Remove ``.tmp`` files that a killed writer left behind; return them."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def save(self, state: dict[str, Any]) -> Path:
        """Save a periodic checkpoint for ``state['step']`` and prune to the last ``keep_last``."""
        path = save(self.path / step_name(int(state["step"])), state)
        for _, old in self.steps()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, state: dict[str, Any]) -> Path:
        return save(self.path / BEST, state)

    def newest_valid(self, map_location: str | torch.device = "cpu") -> tuple[Loaded | None, list[str]]:
        """The newest periodic checkpoint that loads and validates, and why newer ones were skipped."""
        skipped: list[str] = []
        for _, path in reversed(self.steps()):
            try:
                return Loaded(path, load(path, map_location)), skipped
            except ValueError as exc:
                skipped.append(str(exc))
        return None, skipped
