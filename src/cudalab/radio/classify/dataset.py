"""Training sets made by the search itself: simulate, search, label each candidate by truth matching.

Each observation ``i`` of a set is drawn from ``(seed, i)`` alone (so a set is reproducible and can be
grown): a receiver (L-band, 256-1024 channels, 128 or 256 us; or a real background file's own),
1-4 bursts (S/N, DM and width log-uniform over the ranges; a third scattered, a third band-limited,
spectral indices around 0), sometimes a pulsar, and RFI of every kind the simulator makes
(broadband impulses, narrowband impulses, carriers, intermittent and drifting narrowband sources),
each kind present with its own probability. The observation is written by the simulator, searched
by :func:`~cudalab.radio.pipeline.search.search_file` with the default settings (to a DM range that
covers its bursts), and every candidate (up to ``max_candidates``, brightest first) is cut out in
FETCH's layout and labelled:

=========  =====  ===================================================================================
kind       label  rule
=========  =====  ===================================================================================
burst      1      associated with an injected burst (:func:`cudalab.radio.evaluate.match_pulse`)
pulsar     1      associated with one of an injected pulsar's single pulses
ambiguous  -1     within a pulse's time window but at a DM too far off to be associated: a side lobe
                  of a bright pulse, left out of training and of the held-out figures
rfi        0      within the time window of an impulse, narrowband or drifting RFI event
rfi?       0      none of the above, in an observation with a carrier or intermittent source (a
                  possible cause, always on)
noise      0      anything else
=========  =====  ===================================================================================

Splits hold out whole observations: ``val`` and ``test`` take every ``split_every``-th observation
(offsets 3 and 7), and observations on a ``holdout`` background go to ``test`` only, so the test set
has a receiver and a noise floor never seen in training.

Layout of a set (written beside its destination and renamed into place when complete)::

    dataset.json       the recipe (this config), counts per split, label and kind, seconds taken
    candidates.csv     one row per cutout: file, split, label, kind, observation, search S/N, DM, time,
                       width, matched truth (S/N, DM), background
    cands/NNNNN_MMM.h5 FETCH cutouts (float16, LZF), attribute ``label`` as FETCH trains on it
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cudalab._io import atomic_write_json, atomic_write_text
from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s
from cudalab.radio.evaluate import match_pulse
from cudalab.radio.io.header import Header
from cudalab.radio.single_pulse.candidates import Candidate
from cudalab.runs.config import check_finite
from cudalab.runs.rundir import check_output_dir

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
#: Files that mark a folder as a dataset (a new build may replace it).
OWNED = ("dataset.json", "candidates.csv")
COLUMNS = (
    "file",
    "split",
    "label",
    "kind",
    "observation",
    "snr",
    "dm",
    "time_s",
    "width_s",
    "truth_snr",
    "truth_dm",
    "background",
)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """The recipe of a training set (see the module).

    Attributes
    ----------
    observations
        Observations simulated and searched.
    seed
        Observation ``i`` is drawn from ``(seed, i)``.
    backgrounds
        Real noise files observations may be injected into (train, val and test).
    holdout
        Real noise files used for ``test`` observations only.
    background_fraction, holdout_fraction
        Shares of the observations on a ``backgrounds`` file and on a ``holdout`` file.
    background_dm_max
        The bursts' largest DM on a real background (their wide bands reach low frequencies: the
        search's cost grows with the sweep).
    split_every
        Observations ``i % split_every == 3`` go to ``val``, ``== 7 % split_every`` to ``test``.
    max_candidates
        Candidates cut out per observation, brightest first.
    snr_range, dm_range, width_range_ms
        The bursts' S/N (matched-filter, as the simulator states it), DM and intrinsic width.
    duration_s
        Seconds of each observation besides the bursts and the sweep of its largest DM.
    nchans, nchans_p
        The synthetic receivers' channel counts (1200-1500 MHz) and their probabilities.
    device
        Where the searches run.
    """

    observations: int = 200
    seed: int = 0
    backgrounds: tuple[str, ...] = ()
    holdout: tuple[str, ...] = ()
    background_fraction: float = 0.1
    holdout_fraction: float = 0.06
    background_dm_max: float = 300.0
    split_every: int = 8
    max_candidates: int = 32
    snr_range: tuple[float, float] = (5.0, 40.0)
    dm_range: tuple[float, float] = (20.0, 3000.0)
    width_range_ms: tuple[float, float] = (0.1, 30.0)
    duration_s: float = 3.0
    nchans: tuple[int, ...] = (256, 512, 1024)
    nchans_p: tuple[float, ...] = (0.45, 0.4, 0.15)
    device: str = "cpu"
    k_dm: float = DM_CONSTANT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)
        if self.observations < 1 or self.max_candidates < 1 or self.split_every < 2:
            raise ValueError("observations and max_candidates must be >= 1, split_every >= 2")
        for name in ("background_fraction", "holdout_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.background_fraction + self.holdout_fraction > 1.0:
            raise ValueError("background_fraction + holdout_fraction must be <= 1")
        for name in ("snr_range", "dm_range", "width_range_ms"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if len(self.nchans) != len(self.nchans_p) or not self.nchans or min(self.nchans) < 2:
            raise ValueError("nchans and nchans_p must have the same, non-zero length; nchans >= 2")
        if abs(sum(self.nchans_p) - 1.0) > 1e-6 or min(self.nchans_p) < 0:
            raise ValueError("nchans_p must be probabilities summing to 1")


@dataclass(frozen=True)
class Recipe:
    """One observation of a set: what to simulate, how far in DM to search, and which split it is in."""

    index: int
    split: Split
    sim: Any  # SimConfig (kept as Any: the simulator is imported lazily)
    dm_max: float
    background: str


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def recipe(cfg: DatasetConfig, i: int) -> Recipe:
    """Observation ``i`` of the set ``cfg``: a pure function of ``(cfg.seed, i)`` and the config."""
    from cudalab.radio.simulate import Burst, Pulsar, SimConfig, planned_header

    rng = np.random.default_rng([cfg.seed, i, 7])
    u = rng.uniform()
    background = ""
    if cfg.holdout and u < cfg.holdout_fraction:
        background = cfg.holdout[int(rng.integers(len(cfg.holdout)))]
        split: Split = "test"
    else:
        if cfg.backgrounds and u < cfg.holdout_fraction + cfg.background_fraction:
            background = cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))]
        r = i % cfg.split_every
        split = "val" if r == 3 % cfg.split_every else "test" if r == 7 % cfg.split_every else "train"
    nchans = int(rng.choice(list(cfg.nchans), p=list(cfg.nchans_p)))
    tsamp = float(rng.choice([128e-6, 256e-6], p=[0.4, 0.6]))
    base = SimConfig(
        nchans=nchans,
        tsamp_s=tsamp,
        fch1_mhz=1500.0,
        foff_mhz=-300.0 / nchans,
        duration_s=1.0,
        seed=int(rng.integers(2**31)),
        background=background or None,
        k_dm=cfg.k_dm,
    )
    h = planned_header(base)
    n_bursts = int(rng.integers(1, 5))
    dm_hi = min(cfg.dm_range[1], cfg.background_dm_max) if background else cfg.dm_range[1]
    dms = sorted(_log_uniform(rng, cfg.dm_range[0], max(cfg.dm_range[0], dm_hi)) for _ in range(n_bursts))
    dm_max = max(100.0, 1.15 * dms[-1])
    sweep = float(dispersion_delay_s(dm_max, h.fmin_mhz, h.fmax_mhz, cfg.k_dm))
    lo_f, hi_f = h.fmin_mhz, h.fmax_mhz
    bursts = []
    t = 0.3 + rng.uniform(0, 0.3)
    for dm in rng.permutation(dms):
        width = _log_uniform(rng, *cfg.width_range_ms) * 1e-3
        band = None
        if rng.uniform() < 1 / 3:
            centre = rng.uniform(lo_f, hi_f)
            band = (float(centre), float(rng.uniform(0.1, 0.5) * (hi_f - lo_f)))
        bursts.append(
            Burst(
                time_s=float(t),
                dm=float(dm),
                snr=_log_uniform(rng, *cfg.snr_range),
                width_s=width,
                scatter_s=_log_uniform(rng, 0.1e-3, 10e-3) if rng.uniform() < 1 / 3 else 0.0,
                spectral_index=float(rng.normal(0.0, 1.5)),
                band_mhz=band,
            )
        )
        t += 0.5 + 3 * width + rng.uniform(0, 0.6)
    duration = t + sweep + cfg.duration_s * rng.uniform(0.5, 1.0)
    pulsars: tuple[Pulsar, ...] = ()
    if rng.uniform() < 0.3:
        pulsars = (
            Pulsar(
                period_s=_log_uniform(rng, 0.2, 1.5),
                dm=_log_uniform(rng, 20.0, min(500.0, dm_max)),
                snr=float(rng.uniform(6.0, 15.0)),
                width_s=_log_uniform(rng, 2e-3, 10e-3),
                first_s=float(rng.uniform(0.05, 0.5)),
            ),
        )
    rfi = _random_rfi(rng, h.nchans, duration)
    sim = replace(
        base,
        nchans=h.nchans,
        duration_s=float(duration),
        bursts=tuple(bursts),
        pulsars=pulsars,
        rfi=tuple(rfi),
    )
    return Recipe(index=i, split=split, sim=sim, dm_max=float(math.ceil(dm_max)), background=background)


def _random_rfi(rng: np.random.Generator, nchans: int, duration: float) -> list[Any]:
    """RFI of every kind, each present with its own probability."""
    from cudalab.radio.simulate import Rfi

    out: list[Rfi] = []

    def channels(lo_frac: float, hi_frac: float) -> tuple[int, int]:
        n = max(1, round(nchans * rng.uniform(lo_frac, hi_frac)))
        c0 = int(rng.integers(0, max(1, nchans - n)))
        return c0, min(nchans, c0 + n)

    def when() -> float:
        return float(rng.uniform(0.05, duration - 0.1))

    for _ in range(int(rng.integers(0, 3)) if rng.uniform() < 0.5 else 0):
        out.append(
            Rfi(
                kind="impulse",
                amplitude=float(rng.uniform(1.5, 8)),
                time_s=when(),
                width_s=_log_uniform(rng, 0.3e-3, 20e-3),
            )
        )
    for _ in range(int(rng.integers(1, 4)) if rng.uniform() < 0.5 else 0):
        out.append(
            Rfi(kind="narrowband", amplitude=float(rng.uniform(2, 10)), time_s=when(),
                width_s=_log_uniform(rng, 1e-3, 60e-3), channels=channels(0.01, 0.25))
        )  # fmt: skip
    if rng.uniform() < 0.3:
        out.append(Rfi(kind="carrier", amplitude=float(rng.uniform(1, 5)), channels=channels(0.002, 0.01)))
    if rng.uniform() < 0.4:
        out.append(
            Rfi(kind="intermittent", amplitude=float(rng.uniform(3, 10)), channels=channels(0.002, 0.02),
                width_s=_log_uniform(rng, 5e-3, 50e-3), duty=float(rng.uniform(0.05, 0.3)))
        )  # fmt: skip
    for _ in range(int(rng.integers(1, 3)) if rng.uniform() < 0.4 else 0):
        out.append(
            Rfi(kind="drifting", amplitude=float(rng.uniform(2, 8)), time_s=when(),
                width_s=_log_uniform(rng, 10e-3, 300e-3), channels=channels(0.2, 0.8),
                drift_channels=int(rng.integers(1, max(2, nchans // 64) + 1)))
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    """A candidate's truth: its label (1, 0, or -1 left out), kind and the matched pulse's S/N and DM."""

    label: int
    kind: str
    truth_snr: float = math.nan
    truth_dm: float = math.nan


def label_candidate(c: Candidate, truth: dict[str, Any], header: Header, k_dm: float) -> Label:
    """The rule of the module's table."""
    pulse = match_pulse(c, truth)
    if pulse is not None:
        return Label(1, str(pulse["kind"]), float(pulse["snr"]), float(pulse["dm"]))
    sweep = float(dispersion_delay_s(1.0, header.fmin_mhz, header.fmax_mhz, k_dm))
    for p in truth.get("pulses", []):
        # the pulse's own time window, widened by the sweep difference of the candidate's DM error
        tol = 3 * max(c.width_s, p["width_s"]) + p.get("scatter_s", 0.0) + 0.01
        if abs(c.time_s - p["time_s"]) <= tol + abs(c.dm - p["dm"]) * sweep:
            return Label(-1, "ambiguous", float(p["snr"]), float(p["dm"]))
    span = c.dm * sweep + c.width_s  # the candidate's data reach this far past its time
    for r in truth.get("rfi", []):
        if r["kind"] in ("carrier", "intermittent"):
            continue
        if (
            r["time_s"] - c.width_s - 0.01 <= c.time_s + span
            and c.time_s <= r["time_s"] + r["width_s"] + 0.01
        ):
            return Label(0, "rfi")
    if any(r["kind"] in ("carrier", "intermittent") for r in truth.get("rfi", [])):
        return Label(0, "rfi?")  # an always-on source may be its cause
    return Label(0, "noise")


# --------------------------------------------------------------------------------------------------
# the build
# --------------------------------------------------------------------------------------------------


Progress = Callable[[int, int, dict[str, int]], None]


def _search_config(device: Literal["cpu", "cuda"]) -> Any:
    from cudalab.radio.pipeline.config import default_config

    return replace(default_config(), device=device, cutouts=0, report_top=0)


def build_observation(
    cfg: DatasetConfig, i: int, cands_dir: Path, tmp: Path, device: Literal["cpu", "cuda"]
) -> list[dict[str, Any]]:
    """Simulate, search and cut out observation ``i`` of the set ``cfg``: its FETCH files written into
    ``cands_dir``, its rows returned (a pure function of ``cfg`` and ``i``: any worker may do it)."""
    from cudalab.radio.io.observation import open_observation
    from cudalab.radio.pipeline.search import search_file
    from cudalab.radio.simulate import simulate
    from cudalab.radio.single_pulse.cutouts import make_cutout, write_fetch_h5

    search_cfg = _search_config(device)
    rec = recipe(cfg, i)
    fil = tmp / f"obs{i:05d}.fil"
    rows = []
    try:
        truth = simulate(rec.sim, fil)
        result = search_file(fil, replace(search_cfg, dm_max=rec.dm_max))
        obs = open_observation(fil)
        header = replace(result.header, path=fil.name)  # not the temporary folder's name
        for j, cand in enumerate(result.candidates[: cfg.max_candidates]):
            lab = label_candidate(cand, truth, result.header, cfg.k_dm)
            cut = make_cutout(
                obs, cand, k_dm=search_cfg.k_dm, rfi=search_cfg.rfi, device=torch.device(device)
            )
            name = f"{i:05d}_{j:03d}.h5"
            write_fetch_h5(cands_dir / name, cut, cand, header, name[:-3], label=lab.label, compact=True)
            rows.append(
                {
                    "file": f"cands/{name}",
                    "split": rec.split,
                    "label": lab.label,
                    "kind": lab.kind,
                    "observation": i,
                    "snr": cand.snr,
                    "dm": cand.dm,
                    "time_s": cand.time_s,
                    "width_s": cand.width_s,
                    "truth_snr": lab.truth_snr,
                    "truth_dm": lab.truth_dm,
                    "background": Path(rec.background).name if rec.background else "synthetic",
                }
            )
    finally:
        for p in tmp.glob(f"{fil.stem}*"):
            p.unlink()
    return rows


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _observation_in_worker(
    cfg: DatasetConfig, i: int, cands_dir: Path, tmp: Path, device: Literal["cpu", "cuda"]
) -> list[dict[str, Any]]:
    try:
        return build_observation(cfg, i, cands_dir, tmp, device)
    finally:
        _release_memory()


def _release_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise: a search of 1024 channels to DM
    3000 peaks at several GB, and a long build grew to 24 GB and was killed)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(libc).malloc_trim(0)


#: Observations a worker process builds before it is replaced (what the allocator keeps goes with it).
TASKS_PER_WORKER = 8


#: The journal of a build in progress, beside its destination: ``.NAME.building``.
JOURNAL = ".{}.building"


def _recipe_key(cfg: DatasetConfig) -> dict[str, Any]:
    """What makes observation ``i`` what it is: the config without its length (and the format)."""
    key = asdict(cfg)
    key.pop("observations")
    return json.loads(json.dumps(key))  # tuples as lists, as read back from a file


def _typed_row(raw: dict[str, str]) -> dict[str, Any]:
    """A ``candidates.csv`` row as :func:`build_observation` returns it."""
    row: dict[str, Any] = dict(raw)
    for k in ("label", "observation"):
        row[k] = int(raw[k])
    for k in ("snr", "dm", "time_s", "width_s", "truth_snr", "truth_dm"):
        row[k] = float(raw[k])
    return row


class _Journal:
    """A build's folder of finished observations (``rows/NNNNN.json`` written after their FETCH files),
    so that a build that is stopped (an interrupt, the out-of-memory killer) resumes where it was and
    a finished set grows (observation ``i`` depends on the recipe and ``i`` only)."""

    def __init__(self, work: Path, cfg: DatasetConfig) -> None:
        self.work, self.cfg = work, cfg
        self.rows_dir, self.cands = work / "rows", work / "cands"

    def open(self) -> None:
        """Take the journal (start it, or keep it when its recipe is this one), locked for this build."""
        import fcntl

        self.lock_file = self.work.with_name(self.work.name + ".lock")
        self._lock = self.lock_file.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ValueError(f"{self.work}: another build of this set is running") from None
        key = _recipe_key(self.cfg)
        recipe_file = self.work / "recipe.json"
        if self.work.exists():
            try:
                same = json.loads(recipe_file.read_text(encoding="utf-8")) == key
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.work)
        self.rows_dir.mkdir(parents=True, exist_ok=True)
        self.cands.mkdir(exist_ok=True)
        atomic_write_json(recipe_file, key)

    def close(self, *, finished: bool) -> None:
        if finished:
            self.lock_file.unlink(missing_ok=True)
        self._lock.close()

    def done(self) -> dict[int, list[dict[str, Any]]]:
        """The observations finished, by index (those of this set's length only)."""
        out = {}
        for f in self.rows_dir.glob("*.json"):
            i = int(f.stem)
            if i < self.cfg.observations:
                out[i] = json.loads(f.read_text(encoding="utf-8"))
        return out

    def record(self, i: int, rows: list[dict[str, Any]]) -> None:
        atomic_write_json(self.rows_dir / f"{i:05d}.json", rows)

    def adopt(self, old: Path, have: dict[int, list[dict[str, Any]]]) -> int:
        """Take the observations a finished set at ``old`` of the same recipe holds (its files linked,
        not copied); return how many."""
        try:
            meta = json.loads((old / "dataset.json").read_text(encoding="utf-8"))
            theirs = {k: v for k, v in meta["config"].items() if k != "observations"}
            if meta.get("format") != "cudalab-radio-dataset" or theirs != _recipe_key(self.cfg):
                return 0
            n_old = int(meta["config"]["observations"])
            with (old / "candidates.csv").open(encoding="utf-8") as fh:
                rows = [_typed_row(r) for r in csv.DictReader(fh)]
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        by_obs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(min(n_old, self.cfg.observations))}
        for r in rows:
            if r["observation"] in by_obs:
                by_obs[r["observation"]].append(r)
        taken = 0
        for i, obs_rows in sorted(by_obs.items()):
            if i in have:
                continue
            for r in obs_rows:
                src, dst = old / r["file"], self.work / r["file"]
                dst.unlink(missing_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            self.record(i, obs_rows)
            have[i] = obs_rows
            taken += 1
        return taken


def build_dataset(
    cfg: DatasetConfig, out: str | Path, progress: Progress | None = None, *, workers: int = 1
) -> dict[str, Any]:
    """Build the set ``cfg`` into ``out`` (see the module); return ``dataset.json``'s content.

    ``workers`` processes build observations at once (each a pure function of the recipe and its
    index, so the set is the same whatever their number; on a CPU each worker's searches share the
    cores with the others'). A set of more than :data:`TASKS_PER_WORKER` observations is built in
    worker processes even for ``workers=1``, the pool replaced after that many a worker.

    The build keeps a journal beside ``out`` (:data:`JOURNAL`): run again after a stop, it builds
    only the observations not yet finished. When ``out`` already holds a set of the same recipe, its
    observations are taken, not built again, so a set grows (``observations`` larger) or shrinks. The
    folder appears complete or not at all; a folder holding something other than a previous set is
    refused before any work.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    out = Path(out)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    for f in (*cfg.backgrounds, *cfg.holdout):
        if not Path(f).is_file():
            raise ValueError(f"{f}: background file not found")
    check_output_dir(out, owned=OWNED)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    want = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    device: Literal["cpu", "cuda"] = "cuda" if want == "cuda" else "cpu"
    journal = _Journal(out.parent / JOURNAL.format(out.name), cfg)
    journal.open()
    try:
        per_obs = journal.done()
        resumed = len(per_obs)
        adopted = journal.adopt(out, per_obs) if out.is_dir() else 0
        for rows in per_obs.values():
            counts.update(f"{r['split']}/{r['kind']}" for r in rows)
        todo = [i for i in range(cfg.observations) if i not in per_obs]
        if progress is not None:
            progress(len(per_obs), cfg.observations, dict(counts))

        def done(i: int, rows: list[dict[str, Any]]) -> None:
            journal.record(i, rows)
            per_obs[i] = rows
            counts.update(f"{r['split']}/{r['kind']}" for r in rows)
            if progress is not None:
                progress(len(per_obs), cfg.observations, dict(counts))

        with tempfile.TemporaryDirectory(prefix="cudalab-dataset-") as tmp:
            if workers == 1 and len(todo) <= TASKS_PER_WORKER:
                for i in todo:
                    done(i, build_observation(cfg, i, journal.cands, Path(tmp), device))
                    _release_memory()
            elif todo:
                threads = max(1, (os.cpu_count() or 1) // workers)
                # spawn: a forked torch (threads, CUDA) is not safe to use in the child. A fresh pool
                # for every TASKS_PER_WORKER observations a worker, so that no heap grows for the whole
                # build (in one process, even with the heap trimmed, it grew by 30-100 MB an
                # observation); not max_tasks_per_child, with which Python 3.11's pool hung for good
                # once its first worker retired
                per_pool = workers * TASKS_PER_WORKER
                for first in range(0, len(todo), per_pool):
                    with ProcessPoolExecutor(
                        workers,
                        mp_context=get_context("spawn"),
                        initializer=_worker_init,
                        initargs=(threads,),
                    ) as pool:
                        futures = {
                            pool.submit(_observation_in_worker, cfg, i, journal.cands, Path(tmp), device): i
                            for i in todo[first : first + per_pool]
                        }
                        for fut in as_completed(futures):
                            done(futures[fut], fut.result())
        rows = [r for i in sorted(per_obs) for r in per_obs[i]]
        keep = {Path(r["file"]).name for r in rows}
        for stale in journal.cands.iterdir():  # an observation past the set's end, or half-written
            if stale.name not in keep:
                stale.unlink()
        atomic_write_text(journal.work / "candidates.csv", _csv(rows))
        meta = {
            "format": "cudalab-radio-dataset",
            "version": 1,
            "config": asdict(cfg),
            "candidates": len(rows),
            "counts": _counts(rows),
            "seconds": round(time.perf_counter() - started, 1),
            "built": len(todo),
            "resumed": resumed,
            "taken": adopted,
            "workers": workers,
            "search": {"snr_threshold": _search_config(device).snr_threshold, "device": device},
            "labels": {
                "1": "burst or pulsar single pulse",
                "0": "RFI or noise",
                "-1": "ambiguous (left out)",
            },
        }
        atomic_write_json(journal.work / "dataset.json", meta)
        shutil.rmtree(journal.rows_dir)
        (journal.work / "recipe.json").unlink()
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(journal.work, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        journal.close(finished=not journal.work.exists())
    return meta


def _counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c = Counter(r["kind"] for r in rows if r["split"] == split)
        out[split] = dict(sorted(c.items())) | {
            "positive": sum(r["label"] == 1 for r in rows if r["split"] == split),
            "negative": sum(r["label"] == 0 for r in rows if r["split"] == split),
        }
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


@dataclass(frozen=True)
class Entry:
    """One row of a set's ``candidates.csv``, with its file's path resolved."""

    path: Path
    split: str
    label: int
    kind: str
    observation: int
    snr: float
    dm: float
    truth_snr: float
    background: str


def read_index(root: str | Path) -> list[Entry]:
    """A set's rows; ``ValueError`` naming the fault for a folder that is not a set."""
    root = Path(root)
    index = root / "candidates.csv"
    if not (root / "dataset.json").is_file() or not index.is_file():
        raise ValueError(f"{root}: not a radio dataset (no dataset.json and candidates.csv; build one with "
                         "`cudalab radio dataset`)")  # fmt: skip
    out = []
    with index.open(encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out.append(
                    Entry(
                        path=root / row["file"],
                        split=row["split"],
                        label=int(row["label"]),
                        kind=row["kind"],
                        observation=int(row["observation"]),
                        snr=float(row["snr"]),
                        dm=float(row["dm"]),
                        truth_snr=float(row["truth_snr"]),
                        background=row["background"],
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{index}: line {n}: bad row ({exc})") from None
    return out
