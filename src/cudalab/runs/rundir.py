"""Run directories: ``runs/<kind>/<run-id>/`` and what each file in one means.

::

    config.toml      the resolved config (``--config`` reads it back)
    manifest.json    kind, subject, environment fingerprint, seed, command line, start/end, status,
                     resumptions
    metrics.jsonl    one JSON object per logged step or evaluation (training runs)
    summary.json     final results; its presence means the run finished
    ...              what the kind adds: checkpoints/ and tb/ (training), candidates and a report
                     (a radio search), seed-<n>/ child runs (a multi-seed experiment)

Every job that produces results is a run, whatever its kind, so ``cudalab runs`` lists, shows and
compares them all. A run's identity is its config (:func:`cudalab.runs.config.identity`): a run id
already taken by another config is refused with the difference, never silently mixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Literal

from cudalab._io import atomic_write_json, atomic_write_text
from cudalab.errors import CudalabError
from cudalab.runs.config import config_hash, differences, flatten, identity, load_toml, save_toml, to_dict

CONFIG = "config.toml"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"

Resume = Literal["auto", "never"]
"""``auto``: continue the unfinished run with the same config (or the named one) from its newest valid
checkpoint; ``never``: start a new run, and refuse a named run that already exists."""
RESUMES: tuple[Resume, ...] = ("auto", "never")


class ResumeChoice(StrEnum):
    """:data:`Resume` as a command-line choice (typer takes an Enum)."""

    auto = "auto"
    never = "never"


#: A run id is a name: letters, digits, '.', '_' and '-', starting with a letter or digit.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id(cfg: Any) -> str:
    """``YYYYmmdd-HHMMSS-<config hash 8>``; sorts by start time."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{config_hash(cfg)[:8]}"


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a plain name; ``ValueError`` for a path, '..', or odd characters."""
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"--run-id {run_id!r}: a run id is a name (letters, digits, '.', '_', '-'; at most 128), "
            "not a path; choose the folder with --runs"
        )
    return run_id


def check_root(root: Path) -> Path:
    """``root`` when it is a folder or can become one; ``ValueError`` naming what is in the way."""
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{p}: exists and is not a folder (--runs)")
            why = unwritable(p)
            if why:
                raise ValueError(f"{p}: cannot write in it ({why}) (--runs)")
            return root
    return root


def unwritable(folder: Path) -> str | None:
    """Why a file cannot be created in the existing ``folder``, or None when it can.

    The one true test is to try (root passes ``os.access`` everywhere, /proc and read-only mounts
    included): an empty folder is made and removed.
    """
    try:
        Path(tempfile.mkdtemp(prefix=".cudalab-probe-", dir=folder)).rmdir()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file as a dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
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
    def kind(self) -> str:
        """What produced the run (``graph``, ``custom``, ``radio-search``, ...): the manifest says,
        else the folder above (``runs/<kind>/<run-id>``)."""
        kind = (self.manifest() or {}).get("kind")
        return kind if isinstance(kind, str) and kind else self.path.parent.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

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

    # -- identity -----------------------------------------------------------------------------------

    def config_conflict(self, cfg: Any) -> str | None:
        """Why ``cfg`` is not this run's config (the differing keys), or None when it is (or the run
        has no config yet). Only fields that change results count (:func:`~cudalab.runs.config.cosmetic`)."""
        m = self.manifest()
        if m is None or m.get("config_sha256") in (None, config_hash(cfg)):
            return None
        try:
            saved = load_toml(self.config_path)
        except ValueError:
            return f"{self.path}: holds a run whose config cannot be read"
        full, kept = flatten(to_dict(cfg)), flatten(identity(cfg))
        cosmetic = full.keys() - kept.keys()
        rows = [(k, a, b) for k, a, b in differences(saved, to_dict(cfg)) if k not in cosmetic]
        shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in rows[:6])
        more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
        return f"{self.path}: was started with another config ({shown or 'identity differs'}{more})"

    # -- writing (rank 0 only) ----------------------------------------------------------------------

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.manifest() or {}
        m.update(fields)
        atomic_write_json(self.path / MANIFEST, m)
        return m

    def start(
        self,
        cfg: Any,
        *,
        kind: str,
        seed: int | None,
        environment: dict[str, Any],
        subject: str = "",
        extra: dict[str, Any] | None = None,
        run_id: str | None = None,
        started_at: str | None = None,
    ) -> None:
        """Record the config and a fresh manifest, or a resumption in an existing one.

        The config of a resumed run is never rewritten; one of another identity is refused
        (``ValueError`` with the difference). ``run_id`` and ``started_at`` name a run written in a
        staging folder (:func:`staged`) and the moment its work began.
        """
        conflict = self.config_conflict(cfg)
        if conflict is not None:
            raise ValueError(conflict)
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self.manifest()
        entry = {"at": now(), "command": list(sys.argv), "pid": os.getpid()}
        if previous is None or not self.config_path.is_file():
            name = run_id or self.run_id
            save_toml(cfg, self.config_path, header=f"cudalab resolved config for run {name}")
            self.update_manifest(
                run_id=name,
                kind=kind,
                subject=subject,
                config_sha256=config_hash(cfg),
                seed=seed,
                command=list(sys.argv),
                cwd=str(Path.cwd()),
                started_at=started_at or entry["at"],
                ended_at=None,
                status="running",
                error=None,
                resumptions=[],
                **(extra or {}),
                environment=environment,
            )
        else:
            self.update_manifest(
                status="running",
                error=None,
                resumptions=[*previous.get("resumptions", []), {**entry, "environment": environment}],
                **(extra or {}),
            )

    def finish(self, summary: dict[str, Any], status: str = "finished") -> None:
        """Write summary.json (the run's completion mark) and close the manifest."""
        atomic_write_json(self.path / SUMMARY, summary)
        self.update_manifest(ended_at=now(), status=status)

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed with the error (it stays resumable); a no-op without a manifest."""
        if self.manifest() is None:
            return
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with contextlib.suppress(OSError):
            self.update_manifest(status="failed", ended_at=now(), error=text[:2000])


def _show(v: Any) -> str:
    return "-" if v is None else repr(v)


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
        kept = [r for r in read_metrics(self.path) if _step_of(r) <= step]
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


def _step_of(record: dict[str, Any]) -> int:
    step = record.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else 1 << 62


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


def find_resumable(root: Path, kind: str, cfg: Any) -> RunDir | None:
    """The newest unfinished run of ``kind`` under ``root`` whose config has the identity of ``cfg``."""
    base = root / kind
    if not base.is_dir():
        return None
    want = config_hash(cfg)
    for path in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        run = RunDir(path)
        m = run.manifest()
        if m and m.get("config_sha256") == want and not run.finished:
            return run
    return None


def choose_run(root: Path, kind: str, cfg: Any, run_id: str | None, resume: Resume) -> RunDir:
    """The directory a run of ``cfg`` goes to (nothing is created).

    A named run (``run_id``) is resumed when its config has the same identity, refused with the
    difference when not, and refused outright with ``resume="never"``; without a name, ``auto``
    continues the newest unfinished run of this config and otherwise a new id is made.
    """
    check_root(root)
    if run_id is not None:
        run = RunDir(root / kind / check_run_id(run_id))
        if run.path.exists():
            if resume == "never":
                raise ValueError(f"{run.path}: run exists; use --resume auto to continue it")
            conflict = run.config_conflict(cfg)
            if conflict is not None:
                raise ValueError(f"{conflict}; rerun with its config or choose another --run-id")
        return run
    if resume == "auto":
        found = find_resumable(root, kind, cfg)
        if found is not None:
            return found
    base = new_run_id(cfg)
    path, n = root / kind / base, 1
    while path.exists():  # two runs of one config started within the same second
        n += 1
        path = root / kind / f"{base}-{n}"
    return RunDir(path)


def list_runs(root: Path) -> list[RunDir]:
    """Every run under ``root``, oldest first: a folder holding a manifest, one or two levels down
    (``root/<kind>/<id>`` or ``root/<id>``), not inside another run (a multi-seed run's children)."""
    if not root.is_dir():
        return []
    found: list[RunDir] = []
    for pattern in (f"*/{MANIFEST}", f"*/*/{MANIFEST}"):
        for m in root.glob(pattern):
            run = m.parent
            if not (run.parent / MANIFEST).is_file():
                found.append(RunDir(run))
    return sorted(found, key=lambda r: (_started(r), r.run_id, str(r.path)))


def _started(run: RunDir) -> str:
    s = (run.manifest() or {}).get("started_at")
    return s if isinstance(s, str) else ""


def resolve_run(root: Path, ref: str) -> RunDir:
    """A run named by a path, ``kind/run-id``, or a unique run-id prefix; ``ValueError`` otherwise."""
    p = Path(ref)
    nested = sorted(root.glob(f"*/{ref}")) if root.is_dir() and ref else []
    for candidate in (p, root / p, *nested):
        if (candidate / MANIFEST).is_file():
            return RunDir(candidate)
    matches = [r for r in list_runs(root) if ref and r.run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"{ref}: no such run under {root}")
    names = ", ".join(f"{r.path.parent.name}/{r.run_id}" for r in matches[:5])
    raise ValueError(f"{ref}: ambiguous run id ({names}{', ...' if len(matches) > 5 else ''})")


# --------------------------------------------------------------------------------------------------
# atomic publication of a whole output folder
# --------------------------------------------------------------------------------------------------


def check_output_dir(out_dir: Path, *, owned: tuple[str, ...] = (MANIFEST,)) -> None:
    """Refuse, before any work, an output folder that cannot be written or that holds something else.

    ``out_dir`` may exist when it is empty or holds one of the ``owned`` files (a previous output of
    the same kind, which is replaced); its nearest existing ancestor must be a writable folder.
    """
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"{out_dir}: exists and is not a folder")
        try:
            entries = {p.name for p in out_dir.iterdir()}
        except OSError as exc:
            raise ValueError(f"{out_dir}: cannot list it ({exc.strerror})") from None
        if entries and not entries & set(owned):
            raise ValueError(f"{out_dir}: exists and is not a cudalab output; choose another folder")
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{out_dir}: {parent} is not a folder")
    why = unwritable(parent)
    if why:
        raise ValueError(f"{out_dir}: cannot write in {parent} ({why})")


@contextlib.contextmanager
def staged(out_dir: Path, *, owned: tuple[str, ...] = (MANIFEST,)) -> Iterator[Path]:
    """A fresh staging folder beside ``out_dir``, swapped into its place when the block succeeds.

    An ``out_dir`` that cannot be written or must not be replaced (:func:`check_output_dir`) is a
    :class:`~cudalab.errors.CudalabError` before the block runs.

    The output appears complete or not at all: a failure (or an interrupt) removes the staging
    folder and leaves any previous output untouched; the previous output goes only once the new one
    is whole.
    """
    try:
        check_output_dir(out_dir, owned=owned)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    except OSError as exc:
        raise CudalabError(f"{out_dir}: cannot create its folder ({exc.strerror})") from None
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    try:
        stage.mkdir()
    except OSError as exc:
        raise CudalabError(f"{out_dir}: cannot create a folder beside it ({exc.strerror})") from None
    try:
        yield stage
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(stage, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
