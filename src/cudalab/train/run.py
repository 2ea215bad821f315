"""Run directories: ``runs/<task>/<run-id>/`` and what each file in one means.

::

    config.toml      the resolved config (``--config`` reads it back)
    manifest.json    environment fingerprint, seed, command line, start/end, status, resumptions
    metrics.jsonl    one JSON object per logged step or evaluation
    tb/              TensorBoard events
    checkpoints/     step-000000123.pt (the last K) and best.pt
    summary.json     final metrics; its presence means the run finished

A run is resumable when it has checkpoints and no summary. ``--resume auto`` finds the newest
unfinished run of the task whose resolved config hashes the same, so rerunning the command that
crashed continues it, and so does torchrun when ``--max-restarts`` restarts a killed worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cudalab._io import atomic_write_json, atomic_write_text
from cudalab.train.config import save_toml, to_dict

CONFIG = "config.toml"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def config_hash(cfg: Any) -> str:
    """sha256 of the resolved config's canonical JSON: equal hashes, equal configs."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def new_run_id(cfg: Any) -> str:
    """``YYYYmmdd-HHMMSS-<config hash 8>``; sorts by start time."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{config_hash(cfg)[:8]}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file as a dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True, slots=True)
class RunDir:
    """One run's directory."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def task(self) -> str:
        return self.path.parent.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def manifest(self) -> dict[str, Any] | None:
        return read_json(self.path / MANIFEST)

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.path / SUMMARY)

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).is_file()

    def status(self) -> str:
        """finished, failed, or incomplete (running now, or killed: both look the same from outside)."""
        if self.finished:
            return "finished"
        m = self.manifest() or {}
        return "failed" if m.get("status") == "failed" else "incomplete"

    # -- writing (rank 0 only) ----------------------------------------------------------------------

    def write_config(self, cfg: Any) -> None:
        save_toml(cfg, self.path / CONFIG, header=f"cudalab resolved config for run {self.run_id}")

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.manifest() or {}
        m.update(fields)
        atomic_write_json(self.path / MANIFEST, m)
        return m

    def start(self, cfg: Any, *, seed: int, environment: dict[str, Any], extra: dict[str, Any]) -> None:
        """Record the config and a fresh manifest, or a resumption in an existing one."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(cfg)
        previous = self.manifest()
        entry = {"at": now(), "command": list(sys.argv), "pid": os.getpid()}
        if previous is None:
            self.update_manifest(
                run_id=self.run_id,
                task=self.task,
                config_sha256=config_hash(cfg),
                seed=seed,
                command=list(sys.argv),
                cwd=str(Path.cwd()),
                started_at=entry["at"],
                ended_at=None,
                status="running",
                resumptions=[],
                **extra,
                environment=environment,
            )
        else:
            self.update_manifest(
                status="running",
                config_sha256=config_hash(cfg),
                resumptions=[*previous.get("resumptions", []), {**entry, "environment": environment}],
                **extra,
            )

    def finish(self, summary: dict[str, Any], status: str = "finished") -> None:
        """Write summary.json (the run's completion mark) and close the manifest."""
        atomic_write_json(self.path / SUMMARY, summary)
        self.update_manifest(ended_at=now(), status=status)


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def truncate_after(self, step: int) -> int:
        """Keep only records with ``step <= step`` (the killed run logged past its last checkpoint,
        and may have torn its last line); return how many lines were dropped."""
        if not self.path.is_file():
            return 0
        lines = self.path.read_text().count("\n")
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return lines - len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record of a metrics.jsonl file."""
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def find_resumable(root: Path, task: str, cfg: Any) -> RunDir | None:
    """The newest unfinished run of ``task`` under ``root`` whose config hashes like ``cfg``."""
    base = root / task
    if not base.is_dir():
        return None
    want = config_hash(cfg)
    for path in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        run = RunDir(path)
        m = run.manifest()
        if m and m.get("config_sha256") == want and not run.finished:
            return run
    return None


def list_runs(root: Path) -> list[RunDir]:
    """Every run directory (one holding a manifest) under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted((RunDir(p.parent) for p in root.glob(f"*/*/{MANIFEST}")), key=lambda r: (r.run_id, r.task))


def resolve_run(root: Path, ref: str) -> RunDir:
    """A run named by a path, ``task/run-id``, or a unique run-id prefix; ``ValueError`` otherwise."""
    p = Path(ref)
    for candidate in (p, root / p, *sorted(root.glob(f"*/{ref}"))):
        if (candidate / MANIFEST).is_file():
            return RunDir(candidate)
    matches = [r for r in list_runs(root) if r.run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"{ref}: no such run under {root}")
    names = ", ".join(f"{r.task}/{r.run_id}" for r in matches[:5])
    raise ValueError(f"{ref}: ambiguous run id ({names}{', ...' if len(matches) > 5 else ''})")
