"""The single-pulse search, file to candidates: clean, dedisperse, search, cluster, cut out, report.

Data stream through in gulps that overlap by the maximum dispersion delay plus the widest boxcar, so
memory is bounded by one gulp whatever the file's length, and every output sample is searched once.
Everything runs on the GPU when one is usable (``device="auto"``), else on the CPU.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab._io import atomic_write_json
from cudalab.env.device import resolve_device
from cudalab.errors import CudalabError
from cudalab.radio.candidates import Candidate, write_candidates
from cudalab.radio.constants import DM_CONSTANT
from cudalab.radio.dedisperse import LiveChannels, dedisperse, scrunch_time
from cudalab.radio.header import Header
from cudalab.radio.kernels import KERNELS, Kernel, dedisperse_triton, resolve_kernel
from cudalab.radio.observation import open_observation
from cudalab.radio.plan import DedispersionPlan, make_plan
from cudalab.radio.refine import refine_dm, sweep_dm
from cudalab.radio.rfi import CHANNEL_CHUNK, RfiConfig, clean_block
from cudalab.radio.search import Giants, cluster_giants, search_series
from cudalab.radio.stream import BlockStream
from cudalab.radio.subband import SubbandPlan, dedisperse_subband, plan_subbands

Progress = Callable[[str, int, int], None]

#: Dedispersed trials searched at once (float32 bytes); the search's temporaries are ~8x this.
SEARCH_CHUNK_BYTES = 1 << 28
#: The sub-band intermediate's budget (:func:`cudalab.radio.subband.dedisperse_subband`).
SUBBAND_BYTES = 1 << 29


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Every dial of the search.  Presets: :func:`default_config`.

    Attributes
    ----------
    dm_min, dm_max
        DM range, pc cm^-3.
    dm_tolerance
        heimdall's DM-grid tolerance (1.25).
    pulse_width_us
        Intrinsic width assumed for the DM grid, microseconds (heimdall: 40).
    snr_threshold
        Boxcar S/N above which a sample is a giant.
    max_width_s
        Widest boxcar, seconds (rounded down to a power of two in samples).
    baseline_s
        Running-median window for each DM trial's baseline, seconds.
    scrunch, scrunch_tolerance, max_scrunch
        Adaptive time scrunching (see :mod:`cudalab.radio.plan`).
    subbands, subband_tolerance
        0: direct dedispersion. N: two stages with N sub-bands (:mod:`cudalab.radio.subband`), each
        trial's delays within ``subband_tolerance + 1`` (scrunched) samples of its own.
    kernel
        Dedispersion kernel: ``auto`` (Triton on a GPU, the torch reference on a CPU), ``torch`` or
        ``triton`` (:mod:`cudalab.radio.kernels`).
    gulp
        Native samples advanced per block, at least twice the overlap (memory: :class:`MemoryBound`).
    rfi
        Interference mitigation.
    time_tol, dm_index_tol, width_tol
        Friends-of-friends separations: boxcar widths, DM trials, factors of two in width.
    refine
        Refine the DM of the brightest N candidates from the data (:mod:`cudalab.radio.refine`): at
        the S/N peak between the neighbouring trials, or, for a pulse wide enough that its S/N is flat
        there, from its arrival times across the band.
    cutouts
        FETCH cutouts for the brightest N candidates.
    report_top
        Candidates shown with plots in the report.
    device
        ``auto`` (GPU when usable), ``cpu`` or ``cuda``.
    k_dm
        Dispersion constant, s MHz^2 pc^-1 cm^3.
    """

    dm_min: float = 0.0
    dm_max: float = 1000.0
    dm_tolerance: float = 1.25
    pulse_width_us: float = 40.0
    snr_threshold: float = 6.0
    max_width_s: float = 0.05
    baseline_s: float = 2.0
    scrunch: bool = True
    scrunch_tolerance: float = 1.15
    max_scrunch: int = 16
    subbands: int = 0
    subband_tolerance: int = 1
    kernel: Kernel = "auto"
    gulp: int = 1 << 15
    rfi: RfiConfig = field(default_factory=RfiConfig)
    time_tol: float = 3.0
    dm_index_tol: int = 20
    width_tol: int = 3
    refine: int = 50
    cutouts: int = 20
    report_top: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    k_dm: float = DM_CONSTANT

    def __post_init__(self) -> None:
        if not 0 <= self.dm_min <= self.dm_max:
            raise ValueError(f"need 0 <= dm_min <= dm_max, got {self.dm_min}, {self.dm_max}")
        if self.snr_threshold <= 0 or self.max_width_s <= 0 or self.baseline_s <= 0:
            raise ValueError("snr_threshold, max_width_s and baseline_s must be > 0")
        if self.subbands < 0 or self.subband_tolerance < 0:
            raise ValueError("subbands and subband_tolerance must be >= 0")
        if self.gulp < 256:
            raise ValueError(f"gulp must be >= 256 samples, not {self.gulp}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {self.kernel!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.cutouts < 0 or self.report_top < 0 or self.refine < 0:
            raise ValueError("refine, cutouts and report_top must be >= 0")


def default_config() -> SearchConfig:
    """DM 0-1000, S/N >= 6, boxcars to 50 ms: a general FRB and pulsar single-pulse search."""
    return SearchConfig()


@dataclass(frozen=True)
class MemoryBound:
    """The search's working memory for one block, from its shapes (bytes): what bounds it, whatever the
    file's length.

    Attributes
    ----------
    block_samples
        Samples per block (the gulp plus the overlap).
    stored
        One block as the stream moves it: in the file's sample type to a GPU (8-bit: nchans x samples),
        float32 on a CPU.
    block
        One block in float32 (cleaned in place).
    scrunched
        The largest time-scrunched copy of the block (half of it, at factor 2); 0 when nothing scrunches.
    series
        The largest group of dedispersed trials, float32.
    search
        Baseline and boxcar temporaries: eight times a chunk of trials (``SEARCH_CHUNK_BYTES``).
    subband
        The sub-band intermediate (``SUBBAND_BYTES``), 0 for the direct method.
    clean
        Cleaning's temporaries: three copies of :data:`cudalab.radio.rfi.CHANNEL_CHUNK` rows of the
        block (alive only while it cleans, before any of the above).
    on_gpu
        Whether the block lives on a GPU (stream with pinned buffers) or the CPU (reader thread).
    """

    block_samples: int
    stored: int
    block: int
    scrunched: int
    series: int
    search: int
    subband: int
    clean: int
    on_gpu: bool

    @property
    def working(self) -> int:
        """Device memory (GPU) or host memory (CPU) of the search, beyond the delay tables."""
        # GPU: the block being converted and the next, as stored; CPU: one block queued and one read
        blocks = 2 * self.stored + self.block if self.on_gpu else 3 * self.block
        return blocks + max(self.clean, self.scrunched + self.series + self.search + self.subband)

    @property
    def pinned(self) -> int:
        """Page-locked host memory: two stored blocks (0 on a CPU)."""
        return 2 * self.stored if self.on_gpu else 0

    def summary(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "working": self.working, "pinned": self.pinned}


def _outputs(block_samples: int, valid: int, factor: int, max_delay: int, max_width: int) -> int:
    """Scrunched outputs a group makes from a block: its new samples and a boxcar's reach past them,
    as far as the block's samples (less the group's largest delay) allow."""
    return min(block_samples // factor - max_delay, -(-valid // factor) + max_width // factor)


def memory_bound(
    header: Header,
    gulp: int,
    overlap: int,
    max_width: int,
    groups: list[tuple[int, int, int]],
    *,
    stored_per_sample: int,
    subbands: bool,
    on_gpu: bool,
) -> MemoryBound:
    """:class:`MemoryBound` for blocks of ``gulp + overlap`` samples, boxcars to ``max_width`` samples and
    trial ``groups`` of ``(scrunch factor, trials, largest scrunched delay)``.

    ``stored_per_sample``: bytes per sample as the stream moves them to a GPU
    (:attr:`cudalab.radio.stream.BlockStream.bytes_per_sample`).
    """
    c = header.nchans
    block_samples = gulp + overlap
    sizes = [(s, n, _outputs(block_samples, gulp, s, m, max_width)) for s, n, m in groups]
    block = 4 * c * block_samples
    stored = stored_per_sample * block_samples if on_gpu else block
    series = max((4 * n * nout for _, n, nout in sizes), default=0)
    chunk = min(series, SEARCH_CHUNK_BYTES + max((4 * nout for _, _, nout in sizes), default=0))
    scrunched = max((block // s for s, _, _ in sizes if s > 1), default=0)
    return MemoryBound(
        block_samples=block_samples,
        stored=stored,
        block=block,
        scrunched=scrunched,
        series=series,
        search=8 * chunk,
        subband=SUBBAND_BYTES if subbands else 0,
        clean=3 * 4 * min(c, CHANNEL_CHUNK) * block_samples,
        on_gpu=on_gpu,
    )


def block_geometry(
    plan: DedispersionPlan, cfg: SearchConfig, tsamp_s: float, group_delays: list[tuple[int, int]]
) -> tuple[int, int]:
    """``(gulp, overlap)`` in native samples, for trial groups of ``(scrunch factor, largest delay)``.

    Blocks overlap by the largest delay any group applies (rounded or two-stage delays may pass the
    plan's own), the widest boxcar and one scrunched sample. The gulp is at least twice that, so the
    overlap (read and cleaned twice, never searched twice) costs at most half again, and a multiple
    of every scrunch factor, so blocks start on whole scrunched samples.
    """
    max_s = int(plan.scrunch.max())
    overlap = (
        max([plan.max_delay] + [s * m for s, m in group_delays])
        + _widths(cfg.max_width_s, tsamp_s)[-1]
        + max_s
    )
    gulp = max(cfg.gulp, 2 * overlap)
    return -(-gulp // max_s) * max_s, overlap


@dataclass
class SearchResult:
    """What a search found and how it ran."""

    header: Header
    plan: DedispersionPlan
    candidates: list[Candidate]
    giants: Giants
    mask_fraction: float
    masked_channels: list[int]
    device: str
    kernel: str
    memory: MemoryBound
    peak_device_bytes: int | None
    seconds: float
    stages: dict[str, float]
    config: SearchConfig

    @property
    def realtime_factor(self) -> float:
        return self.header.duration_s / self.seconds if self.seconds > 0 else math.inf


def _widths(max_width_s: float, tsamp_s: float) -> list[int]:
    top = max(1, int(2 ** math.floor(math.log2(max(max_width_s / tsamp_s, 1.0)))))
    return [2**k for k in range(int(math.log2(top)) + 1)]


class _StageClock:
    """Wall time per pipeline stage.

    GPU work is asynchronous: without a synchronize, a stage's time lands in whichever later stage first
    waits for the device. Each timed stage therefore ends with one, a handful per block, so the split
    reported in search.json is true on the GPU too.
    """

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(
            ("read", "clean", "dedisperse", "search", "cluster", "refine"), 0.0
        )
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - t0


def search_file(path: str | Path, cfg: SearchConfig, progress: Progress | None = None) -> SearchResult:
    """Search ``path`` and return the candidates (brightest first); writes nothing."""
    t_start = time.perf_counter()
    device, _ = resolve_device(cfg.device)
    try:
        kernel = resolve_kernel(cfg.kernel, device)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    obs = open_observation(path)
    h = obs.header
    if h.data_type == 2 or h.nchans < 2:
        raise CudalabError(
            f"{h.path}: a dedispersed time series (nchans={h.nchans}) cannot be searched over DM"
        )
    plan = make_plan(
        h,
        cfg.dm_min,
        cfg.dm_max,
        tolerance=cfg.dm_tolerance,
        pulse_width_us=cfg.pulse_width_us,
        scrunch=cfg.scrunch,
        scrunch_tolerance=cfg.scrunch_tolerance,
        max_scrunch=cfg.max_scrunch,
        k_dm=cfg.k_dm,
    )
    widths = _widths(cfg.max_width_s, h.tsamp_s)
    max_w = widths[-1]
    # (factor, trial indices, delays on the device or the two-stage plan, the largest delay in scrunched
    # samples kept on the host: reading it back from the device would cost a GPU->CPU sync per group
    # per block)
    groups: list[tuple[int, NDArray[np.int64], torch.Tensor | SubbandPlan, int]] = []
    for s, idx in plan.groups():
        d = plan.delays_scrunched(s, idx)
        if cfg.subbands:
            sub = plan_subbands(d, min(cfg.subbands, h.nchans), cfg.subband_tolerance)
            groups.append((s, idx, sub, sub.max_delay))
        else:
            # int32, trial-minor: a kernel tile reads the delays of its trials for one channel at once
            dt = torch.from_numpy(np.ascontiguousarray(d.T, dtype=np.int32)).to(device).T
            groups.append((s, idx, dt, int(d.max())))
    gulp, overlap = block_geometry(plan, cfg, h.tsamp_s, [(f, m) for f, _, _, m in groups])
    stream = BlockStream(obs, gulp, overlap, device)
    memory = memory_bound(
        h,
        gulp,
        overlap,
        max_w,
        [(s, len(idx), m) for s, idx, _, m in groups],
        stored_per_sample=stream.bytes_per_sample,
        subbands=bool(cfg.subbands),
        on_gpu=device.type == "cuda",
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        peak_base = torch.cuda.memory_allocated(device)
    clock = _StageClock(device)
    direct = dedisperse_triton if kernel == "triton" else dedisperse
    parts: list[Giants] = []
    mask_union = np.zeros(h.nchans, dtype=bool)
    masked_sum = 0.0
    nblocks = 0
    total = h.nsamples
    # the reader thread stops when the loop ends, however it ends
    with stream:
        blocks = iter(stream)
        while True:
            with clock("read"):  # the wait for the next block: reading and copying overlap the compute
                block = next(blocks, None)
            if block is None:
                break
            with clock("clean"):
                x, mask = clean_block(block.data, cfg.rfi, inplace=True)  # the block is ours
                mask_np = mask.cpu().numpy()
                # the live channels, worked out once here from the host mask (no further sync), serve
                # every group and sub-band on either kernel
                live = LiveChannels.of(~mask_np, h.nchans, device)
            mask_union |= mask_np
            masked_sum += float(mask_np.mean())
            nblocks += 1
            for factor, idx, delays, max_delay in groups:
                valid_s = -(-block.valid // factor)
                nout = _outputs(block.data.shape[1], block.valid, factor, max_delay, max_w)
                if nout <= 0:
                    continue
                with clock("dedisperse"):
                    xs = scrunch_time(x, factor)
                    if isinstance(delays, SubbandPlan):
                        series = dedisperse_subband(
                            xs, delays, nout, weights=live, kernel=kernel, budget_bytes=SUBBAND_BYTES
                        )
                    else:
                        series = direct(xs, delays, nout, weights=live)
                with clock("search"):
                    # a chunk of trials at a time: the baseline and boxcar temporaries (about eight
                    # copies of what they search on the torch path, two on the fused kernel's) stay
                    # bounded by SEARCH_CHUNK_BYTES whatever the trial count
                    rows = max(1, SEARCH_CHUNK_BYTES // (4 * nout))
                    for r0 in range(0, len(idx), rows):
                        parts.append(
                            search_series(
                                series[r0 : r0 + rows],
                                idx[r0 : r0 + rows],
                                baseline_samples=max(8, int(cfg.baseline_s / (h.tsamp_s * factor))),
                                threshold=cfg.snr_threshold,
                                widths=[max(1, w // factor) for w in widths if w >= factor] or [1],
                                scrunch=factor,
                                first_sample=block.start,
                                valid=valid_s,
                                kernel=kernel,
                            )
                        )
                    del series
            if progress is not None:
                progress("search", min(block.start + block.valid, total), total)
    with clock("cluster"):
        giants = Giants.concat(parts)
        clusters = cluster_giants(
            giants, time_tol=cfg.time_tol, dm_tol=cfg.dm_index_tol, width_tol=cfg.width_tol
        )
        cands = []
        for k, g in enumerate(clusters.best):
            cands.append(
                Candidate(
                    snr=float(giants.snr[g]),
                    dm=float(plan.dms[giants.dm_index[g]]),
                    dm_trial=float(plan.dms[giants.dm_index[g]]),
                    time_s=float(giants.sample[g] * h.tsamp_s),
                    width_s=float(giants.width[g] * h.tsamp_s),
                    sample=int(giants.sample[g]),
                    dm_index=int(giants.dm_index[g]),
                    members=int(clusters.members[k]),
                    width_samples=int(giants.width[g]),
                    dm_lo=float(plan.dms[clusters.dm_index_min[k]]),
                    dm_hi=float(plan.dms[clusters.dm_index_max[k]]),
                    begin_sample=int(max(0, clusters.begin[k])),
                    end_sample=int(clusters.end[k]),
                    mjd=h.tstart_mjd + float(giants.sample[g] * h.tsamp_s) / 86400.0,
                    fref_mhz=h.fmax_mhz,
                )
            )
        cands.sort(key=lambda c: -c.snr)
    sweep_per_dm = cfg.k_dm * (h.fmin_mhz**-2 - h.fmax_mhz**-2)  # seconds across the band per unit DM
    with clock("refine"):
        for i, c in enumerate(cands[: cfg.refine]):
            j = c.dm_index
            lo, hi = float(plan.dms[max(j - 1, 0)]), float(plan.dms[min(j + 1, len(plan.dms) - 1)])
            dm, _ = refine_dm(
                obs, c.sample, c.width_samples, lo, hi, k_dm=cfg.k_dm, rfi=cfg.rfi, device=device
            )
            # A pulse smears by its own width at a DM error of width / sweep: beyond the neighbouring
            # trials, its S/N is flat between them, and the arrival times across the band tell the DM.
            smear_dm = c.width_s / sweep_per_dm if sweep_per_dm > 0 else 0.0
            if smear_dm > (hi - lo) / 2:
                fit = sweep_dm(
                    obs, c.sample, c.width_samples, dm, c.snr, slack_dm=max(hi - lo, smear_dm),
                    k_dm=cfg.k_dm, rfi=cfg.rfi, device=device,
                )  # fmt: skip
                if fit is not None:
                    dm = fit.dm
            cands[i] = replace(c, dm=dm)
            if progress is not None:
                progress("refine DM", i + 1, min(len(cands), cfg.refine))
    return SearchResult(
        header=h,
        plan=plan,
        candidates=cands,
        giants=giants,
        mask_fraction=masked_sum / max(nblocks, 1),
        masked_channels=np.flatnonzero(mask_union).tolist(),
        device=str(device),
        kernel=kernel,
        memory=memory,
        peak_device_bytes=torch.cuda.max_memory_allocated(device) - peak_base
        if device.type == "cuda"
        else None,
        seconds=time.perf_counter() - t_start,
        stages=clock.seconds,
        config=cfg,
    )


# --------------------------------------------------------------------------------------------------
# writing a search's outputs
# --------------------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: Path) -> Path:
    """A fresh staging folder beside ``out_dir``; refuses to replace a folder that is not a search's."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CudalabError(f"{out_dir}: exists and is not a directory")
        entries = {p.name for p in out_dir.iterdir()}
        if entries and "candidates.csv" not in entries and "search.json" not in entries:
            raise CudalabError(f"{out_dir}: exists and is not a cudalab search output; choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def _publish(stage: Path, out_dir: Path) -> None:
    """Swap the finished staging folder into place; the old output (if any) goes only once the new is whole."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_search(
    path: str | Path,
    out_dir: str | Path,
    cfg: SearchConfig,
    progress: Progress | None = None,
    truth: dict[str, Any] | None = None,
) -> SearchResult:
    """Search ``path`` and write ``out_dir``: candidates.csv / .cand, cands/*.h5, report.html, search.json.

    The folder appears complete or not at all: it is assembled beside its destination and renamed.
    """
    from cudalab.radio.cutouts import make_cutout, write_fetch_h5
    from cudalab.radio.report import write_report

    out = Path(out_dir)
    result = search_file(path, cfg, progress)
    stage = _prepare_out_dir(out)
    try:
        write_candidates(stage, result.candidates)
        obs = open_observation(path)
        device = torch.device(result.device)
        cutouts = {}
        top = result.candidates[: cfg.cutouts]
        for i, cand in enumerate(top):
            cut = make_cutout(obs, cand, k_dm=cfg.k_dm, rfi=cfg.rfi, device=device)
            cand_id = f"cand_{i:04d}_t{cand.time_s:.4f}_dm{cand.dm:.1f}_snr{cand.snr:.1f}"
            write_fetch_h5(stage / "cands" / f"{cand_id}.h5", cut, cand, result.header, cand_id)
            cutouts[i] = cut
            if progress is not None:
                progress("cutouts", i + 1, len(top))
        atomic_write_json(
            stage / "rfi_mask.json",
            {
                "masked_channels": result.masked_channels,
                "mean_masked_fraction": result.mask_fraction,
                "freqs_mhz": [float(f) for f in result.header.freqs_mhz[result.masked_channels]],
            },
        )
        atomic_write_json(
            stage / "search.json",
            {
                "file": str(path),
                "header": result.header.summary(),
                "plan": result.plan.summary(),
                "config": asdict(cfg),
                "device": result.device,
                "kernel": result.kernel,
                "memory_bound_bytes": result.memory.summary(),
                "peak_device_bytes": result.peak_device_bytes,
                "seconds": result.seconds,
                "realtime_factor": result.realtime_factor,
                "stages_s": result.stages,
                "giants": len(result.giants),
                "candidates": len(result.candidates),
                "time_reference": f"centre of the highest channel, {result.header.fmax_mhz:.6f} MHz",
            },
        )
        write_report(stage, result, cutouts, truth=truth)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return result
