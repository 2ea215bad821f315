"""The single-pulse search, file to candidates: clean, dedisperse, search, cluster, refine.

Data stream through in blocks that overlap by the maximum dispersion delay plus the widest boxcar
(:mod:`~cudalab.radio.pipeline.memory`), so memory is bounded by one block whatever the file's
length, and every output sample is searched once. Everything runs on the GPU when one is usable
(``device="auto"``), else on the CPU, on the kernels :func:`~cudalab.radio.kernels.resolve_kernel`
chooses. :func:`search_file` writes nothing; :mod:`~cudalab.radio.pipeline.outputs` makes the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.env.cpushare import CpuShare
from cudalab.env.device import resolve_device
from cudalab.errors import CudalabError
from cudalab.radio.dedispersion.direct import LiveChannels, scrunch_time
from cudalab.radio.dedispersion.plan import DedispersionPlan, make_plan, single_trial_plan
from cudalab.radio.dedispersion.subband import SubbandPlan, dedisperse_subband, plan_subbands
from cudalab.radio.io.header import Header
from cudalab.radio.io.observation import Observation, open_observation
from cudalab.radio.io.stream import BlockStream
from cudalab.radio.kernels import resolve_kernel
from cudalab.radio.pipeline.config import AUTO_SUBBAND_MIN_CHANNELS, AUTO_SUBBANDS, SearchConfig
from cudalab.radio.pipeline.memory import (
    SEARCH_CHUNK_BYTES,
    SUBBAND_BYTES,
    MemoryBound,
    block_geometry,
    memory_bound,
)
from cudalab.radio.rfi import RfiConfig, clean_block
from cudalab.radio.single_pulse.candidates import Candidate, dm_error
from cudalab.radio.single_pulse.cluster import cap_giants, cluster_giants
from cudalab.radio.single_pulse.refine import (
    FINE_TRIALS,
    CleanSpan,
    refine_dm,
    refine_window,
    sweep_dm,
    sweep_window,
)
from cudalab.radio.single_pulse.search import Giants, boxcar_widths, search_series

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: the CLI draws a bar per stage."""


@dataclass
class SearchResult:
    """What a search found and how it ran."""

    header: Header
    plan: DedispersionPlan
    candidates: list[Candidate]
    giants: Giants
    mask_fraction: float
    masked_channels: list[int]
    nonfinite_samples: int
    """NaN or infinite samples found in the data (each set to its channel's median, counted once
    however many overlapping blocks read it)."""
    unsearched_s: NDArray[np.float64]
    """Per DM trial, the seconds at the end of the file it could not search: its dispersion sweep
    reaches past the end (the whole file for a trial whose sweep is longer than the file)."""
    supported_dm_max: float
    """The largest DM whose sweep leaves half the file searchable (:func:`supported_dm_max`)."""
    cpu_threads: list[int] | None
    """On a CPU, torch's thread count for each block (:class:`cudalab.env.cpushare.CpuShare`: the
    cores other processes left free); None on a GPU."""
    impulses: list[tuple[int, int, int, int]]
    """Narrowband impulses masked in time and frequency (:func:`cudalab.radio.rfi.impulse_mask`):
    ``(first channel, stop channel, first sample, stop sample)``, in file samples, in time order."""
    giants_dropped: int
    """Giants set aside by the cap on their rate (:attr:`SearchConfig.max_giant_rate`)."""
    giants_floor_snr: float
    """The brightest giant set aside (0 when none)."""

    def warnings(self) -> list[str]:
        """What the user must know about this search's coverage, one sentence each ([] when none)."""
        u = self.unsearched()
        h, top = self.header, float(self.plan.dms[-1])
        out = []
        if u["trials_not_searched"]:
            out.append(
                f"{Path(h.path).name} is {h.duration_s:.3g} s long: the {u['trials_not_searched']} DM trials from "
                f"{u['not_searched_above_dm']:.4g} to {top:.4g} sweep past its end and were not searched at all"
            )
        if self.giants_dropped:
            out.append(
                f"{self.giants_dropped} of {self.giants_dropped + len(self.giants)} giants were set aside, "
                f"the faintest of seconds with more than {self.config.max_giant_rate:g} (the brightest set "
                f"aside: S/N {self.giants_floor_snr:.1f}); fainter pulses in those seconds may be missed "
                "(--set max_giant_rate=0 keeps them all, at a cost in time and memory)"
            )
        if u["dm_max_beyond_supported"]:
            out.append(
                f"it supports DM <= {self.supported_dm_max:.4g} (half the file searched at the top DM); "
                "--dm-max auto chooses that"
            )
        return out

    def unsearched(self, bins: int = 8) -> dict[str, Any]:
        """What could not be searched, for search.json, the terminal and the report: per range of DM
        trials, the unsearched seconds at the file's end; the DM above which nothing was searched."""
        dms, lost = self.plan.dms, self.unsearched_s
        duration = self.header.duration_s
        none = np.flatnonzero(lost >= duration)
        ranges = []
        for part in np.array_split(np.arange(len(dms)), min(bins, len(dms))):
            if len(part):
                ranges.append(
                    {
                        "dm": [float(dms[part[0]]), float(dms[part[-1]])],
                        "unsearched_s": [float(lost[part].min()), float(lost[part].max())],
                    }
                )
        return {
            "ranges": ranges,
            "not_searched_above_dm": float(dms[none[0]]) if len(none) else None,
            "trials_not_searched": len(none),
            "supported_dm_max": self.supported_dm_max,
            # the grid's last trial may step past dm_max; what was asked for is what is judged
            "dm_max_beyond_supported": not self.config.dm_max_auto
            and self.config.dm_max > self.supported_dm_max,
        }

    device: str
    kernel: str
    subbands: int
    """Sub-bands of the two-stage dedispersion (0: direct), as resolved from ``config.subbands``."""
    memory: MemoryBound
    peak_device_bytes: int | None
    seconds: float
    stages: dict[str, float]
    config: SearchConfig
    classification: dict[str, Any] | None = None
    """Set by :func:`cudalab.radio.pipeline.outputs.run_search` when a classifier scored the
    candidates: its file, name, threshold, the ``min_prob`` applied, how many it removed, seconds."""
    scored: list[Candidate] | None = None
    """Every candidate with its probability, those removed by ``min_prob`` included."""

    @property
    def realtime_factor(self) -> float:
        return self.header.duration_s / self.seconds if self.seconds > 0 else math.inf


@dataclass(frozen=True)
class _Group:
    """Trials sharing a scrunch factor, and how they are dedispersed."""

    factor: int
    idx: NDArray[np.int64]
    """Their indices in the plan (DM order)."""
    delays: torch.Tensor | SubbandPlan
    """Delays on the device, or the two-stage plan."""
    max_delay: int
    """The largest delay, scrunched samples, kept on the host: reading it back from the device would
    cost a GPU->CPU sync per group per block."""
    row_delay: NDArray[np.int64]
    """Each trial's own largest delay (scrunched), which ends its search at the file's end."""
    protected: int = 0
    """Its first trials (lowest DM) searched without zero-DM (their sweep is too short for it)."""
    protected_delays: torch.Tensor | None = None
    """Their delays on the device, to dedisperse the DM-0 series subtracted from them back in."""


#: Cleaning of a single series: no channels to compare (zero-DM would subtract the series from
#: itself); each block is normalised to zero median and unit robust noise, as every channel is.
TIME_SERIES_RFI = RfiConfig(zero_dm=False, mad_threshold=0.0, sk_threshold=0.0)

#: A candidate is refined without zero-DM when zero-DM would take more than this fraction of its
#: power (its width over its sweep across the band).
ZERO_DM_MAX_LOSS = 0.1

#: A refined S/N may exceed the grid's by the grid's tolerance (the most a pulse loses between two
#: trials) and this much noise; beyond, the refinement measured something else and is not used.
REFINE_SNR_SLACK = 2.0

#: The most data (bytes, as float32) read and cleaned at once to refine the candidates within them.
REFINE_SPAN_BYTES = 64 << 20

#: The largest DM ``dm_max_auto`` chooses, whatever the file's length: beyond every DM measured yet
#: (FRB 20220610A's 1458 and the Galactic-plane pulsars' ~1700 among the highest) with room to spare.
AUTO_DM_CAP = 10_000.0


def sweep_s_per_dm(h: Header, k_dm: float) -> float:
    """Seconds a pulse's dispersion sweep across the band lasts per unit DM (0 for a time series)."""
    return k_dm * (h.fmin_mhz**-2 - h.fmax_mhz**-2)


def supported_dm_max(h: Header, k_dm: float, searched_fraction: float = 0.5) -> float:
    """The largest DM whose dispersion sweep across the band leaves ``searched_fraction`` of the file
    searchable (the sweep's last seconds cannot be dedispersed at that DM)."""
    sweep_per_dm = sweep_s_per_dm(h, k_dm)
    return math.inf if sweep_per_dm <= 0 else (1 - searched_fraction) * h.duration_s / sweep_per_dm


def _device_delays(d: NDArray[np.int64], device: torch.device) -> torch.Tensor:
    """Delays ``(ndm, nchans)`` as the kernels read them: int32 on the device, trial-minor (a kernel
    tile reads the delays of its trials for one channel at once)."""
    return torch.from_numpy(np.ascontiguousarray(d.T, dtype=np.int32)).to(device).T


def trial_runs(n_rows: NDArray[np.int64], *, tolerance: int, rows: int) -> list[tuple[int, int, int]]:
    """``(first row, end row, outputs)`` runs of consecutive trials searched together.

    ``n_rows`` is each trial's number of outputs; a run's trials are searched over the run's smallest,
    so a run is cut where they would lose more than ``tolerance`` samples (only at the file's end do
    they differ), and after ``rows`` trials (the memory bound). Trials with no outputs are left out.
    """
    out: list[tuple[int, int, int]] = []
    r0 = 0
    while r0 < len(n_rows):
        if n_rows[r0] <= 0:
            r0 += 1
            continue
        r1, low = r0 + 1, int(n_rows[r0])
        while (
            r1 < len(n_rows)
            and r1 - r0 < rows
            and n_rows[r1] > 0
            and int(n_rows[r0]) - int(n_rows[r1]) <= tolerance
        ):
            low = min(low, int(n_rows[r1]))
            r1 += 1
        out.append((r0, r1, low))
        r0 = r1
    return out


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


def resolve_subbands(subbands: int, device: torch.device, h: Header) -> int:
    """The sub-bands a search uses: ``subbands``, or for -1 (automatic) :data:`AUTO_SUBBANDS` on a CPU
    for files of :data:`AUTO_SUBBAND_MIN_CHANNELS` channels or more and 0 (direct) otherwise."""
    if subbands >= 0:
        return subbands
    auto = device.type == "cpu" and h.nchans >= AUTO_SUBBAND_MIN_CHANNELS and not h.is_time_series
    return AUTO_SUBBANDS if auto else 0


def search_plan(h: Header, cfg: SearchConfig) -> DedispersionPlan:
    """The DM trials a search of a file with header ``h`` makes under ``cfg``: one at the file's own DM
    for a time series, else heimdall's grid to ``cfg.dm_max`` (or, with ``dm_max_auto``, to the DM
    the file supports). ``CudalabError`` when the file is too short for any DM from ``dm_min``."""
    if h.is_time_series:
        return single_trial_plan(h, h.refdm, cfg.k_dm)
    supported = supported_dm_max(h, cfg.k_dm)
    dm_max = min(supported, AUTO_DM_CAP) if cfg.dm_max_auto else cfg.dm_max
    if dm_max < cfg.dm_min:
        raise CudalabError(
            f"{h.path}: {h.duration_s:.3g} s is too short for DMs from {cfg.dm_min:g} "
            f"(it supports DM <= {supported:.4g})"
        )
    return make_plan(
        h,
        cfg.dm_min,
        dm_max,
        tolerance=cfg.dm_tolerance,
        pulse_width_us=cfg.pulse_width_us,
        scrunch=cfg.scrunch,
        scrunch_tolerance=cfg.scrunch_tolerance,
        max_scrunch=cfg.max_scrunch,
        k_dm=cfg.k_dm,
    )


@dataclass(frozen=True)
class RefineSetup:
    """How one candidate is refined (:func:`refine_candidate`), worked out before any data are read.

    Attributes
    ----------
    dm_lo, dm_hi
        The neighbouring grid trials' DMs: the interval searched at fine steps.
    rfi
        The cleaning: the search's, without zero-DM for a trial searched without it, or for a pulse
        wide enough for zero-DM to take a sizeable part of it.
    sweep_slack
        How far from the S/N peak the arrival-time fit (:func:`sweep_dm`) may move the DM; None where
        the pulse is narrow enough for the S/N peak alone.
    start, stop
        The file samples both measurements read: their windows' union.
    """

    dm_lo: float
    dm_hi: float
    rfi: RfiConfig
    sweep_slack: float | None
    start: int
    stop: int


def refine_setup(
    c: Candidate, h: Header, plan: DedispersionPlan, widths: list[int], cfg: SearchConfig, rfi: RfiConfig
) -> RefineSetup:
    """The :class:`RefineSetup` of candidate ``c``."""
    sweep_per_dm = sweep_s_per_dm(h, cfg.k_dm)
    j = c.dm_index
    lo, hi = float(plan.dms[max(j - 1, 0)]), float(plan.dms[min(j + 1, len(plan.dms) - 1)])
    # a trial searched without zero-DM is refined without it too; so is a pulse wide enough for zero-DM
    # to take a sizeable part of it (width / sweep of its power): its S/N against DM is cut where the
    # guard starts, and its refinement must not start from that edge
    wide = c.width_s > ZERO_DM_MAX_LOSS * max(c.dm_trial, lo) * sweep_per_dm
    spared = hi * sweep_per_dm < rfi.zero_dm_min_sweep_s
    rfi_c = replace(rfi, zero_dm=False) if spared or wide else rfi
    # A pulse smears by its own width at a DM error of width / sweep: beyond the neighbouring trials,
    # its S/N is flat between them, and the arrival times across the band tell the DM.
    smear_dm = c.width_s / sweep_per_dm if sweep_per_dm > 0 else 0.0
    slack = max(hi - lo, smear_dm) if smear_dm > (hi - lo) / 2 else None
    start, count = refine_window(
        h, c.sample, c.width_samples, lo, hi, k_dm=cfg.k_dm, widths=_near_widths(c, widths)
    )
    stop = start + count
    if slack is not None:  # the fit starts from a DM in [lo, hi]: hi's window holds the others
        s0, n0 = sweep_window(h, c.sample, c.width_samples, hi, slack_dm=slack, k_dm=cfg.k_dm)
        start, stop = min(start, s0), max(stop, s0 + n0)
    return RefineSetup(lo, hi, rfi_c, slack, start, stop)


def _near_widths(c: Candidate, widths: list[int]) -> tuple[int, ...]:
    """The candidate's boxcar width and its neighbours in the search's list."""
    k = widths.index(c.width_samples) if c.width_samples in widths else 0
    return tuple(widths[max(k - 1, 0) : k + 2])


def refine_candidate(
    c: Candidate,
    obs: Observation,
    plan: DedispersionPlan,
    widths: list[int],
    cfg: SearchConfig,
    rfi: RfiConfig,
    device: torch.device,
    span: CleanSpan | None = None,
    setup: RefineSetup | None = None,
) -> Candidate:
    """``c`` with its DM, DM error and S/N measured again from the data between its neighbouring trials
    (:func:`refine_dm`; for a pulse wide against the sweep, :func:`sweep_dm`), or ``c`` itself when the
    measurement caught another signal.

    ``span``: data cleaned as :func:`refine_setup` says (its ``rfi``) and holding its samples, shared
    by the candidates near this one; without it, the windows are read and cleaned here. ``setup``:
    the candidate's :func:`refine_setup`, where the caller has it already.
    """
    h = obs.header
    if setup is None:
        setup = refine_setup(c, h, plan, widths, cfg, rfi)
    if span is None or not span.covers(setup.start, setup.stop - setup.start):
        span = CleanSpan.read(obs, setup.start, setup.stop - setup.start, setup.rfi, device)
    lo, hi = setup.dm_lo, setup.dm_hi
    # the S/N is measured again at the refined DM: the grid's trials lose up to 1 - 1/tolerance
    dm, snr = refine_dm(
        obs, c.sample, c.width_samples, lo, hi, k_dm=cfg.k_dm, rfi=setup.rfi, device=device,
        widths=_near_widths(c, widths), span=span,
    )  # fmt: skip
    if snr > cfg.dm_tolerance * c.snr + REFINE_SNR_SLACK:
        # more than the grid can have lost between trials: the window caught another, brighter signal
        # (a broadband impulse's bow-tie beside a fragment of it), not this candidate's
        return c
    sweep_per_dm = sweep_s_per_dm(h, cfg.k_dm)
    dm_err = dm_error(snr, c.width_s, sweep_per_dm, (hi - lo) / (FINE_TRIALS - 1))
    if setup.sweep_slack is not None:
        fit = sweep_dm(
            obs, c.sample, c.width_samples, dm, c.snr, slack_dm=setup.sweep_slack,
            k_dm=cfg.k_dm, rfi=setup.rfi, device=device, span=span,
        )  # fmt: skip
        if fit is not None:
            dm, dm_err = fit.dm, fit.dm_err
    return replace(c, dm=max(dm, 0.0), dm_err=dm_err, snr=snr)  # a fit's noise may not make a DM negative


@dataclass(frozen=True)
class RefineSpan:
    """A stretch of file samples ``[start, stop)`` cleaned with ``rfi`` once, and the candidates
    (``members``, indices into the setups) whose refinement windows it holds."""

    start: int
    stop: int
    rfi: RfiConfig
    members: tuple[int, ...]


def refine_spans(setups: list[RefineSetup], max_samples: int) -> list[RefineSpan]:
    """Group candidates whose refinement windows overlap, so that each stretch of data is read and
    cleaned once.

    Among the windows of one cleaning, in time order, a window joins the span before it while it
    overlaps it and the span stays within ``max_samples`` (a window longer than that is a span of its
    own); windows that do not overlap are never joined, so no sample is cleaned that no candidate
    needs.
    """
    by_rfi: dict[RfiConfig, list[int]] = {}
    for i, s in enumerate(setups):
        by_rfi.setdefault(s.rfi, []).append(i)
    out: list[RefineSpan] = []
    for rfi, idx in by_rfi.items():
        span: RefineSpan | None = None
        for i in sorted(idx, key=lambda k: setups[k].start):
            s = setups[i]
            if (
                span is not None
                and s.start < span.stop
                and max(span.stop, s.stop) - span.start <= max_samples
            ):
                span = replace(span, stop=max(span.stop, s.stop), members=(*span.members, i))
                continue
            if span is not None:
                out.append(span)
            span = RefineSpan(s.start, s.stop, rfi, (i,))
        if span is not None:
            out.append(span)
    return out


def search_file(path: str | Path, cfg: SearchConfig, progress: Progress | None = None) -> SearchResult:
    """Search ``path`` and return the candidates (brightest first); writes nothing.

    On a CPU, torch's thread count follows the cores other processes leave free while it runs
    (:class:`~cudalab.env.cpushare.CpuShare`), and is restored however the search ends.
    """
    with CpuShare() as share:
        return _search_file(path, cfg, progress, share)


def _search_file(
    path: str | Path, cfg: SearchConfig, progress: Progress | None, cpu_share: CpuShare
) -> SearchResult:
    t_start = time.perf_counter()
    device, _ = resolve_device(cfg.device)
    try:
        kernels = resolve_kernel(cfg.kernel, device)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    obs = open_observation(path)
    h = obs.header
    supported = supported_dm_max(h, cfg.k_dm)
    rfi = TIME_SERIES_RFI if h.is_time_series else cfg.rfi
    plan = search_plan(h, cfg)
    widths = boxcar_widths(cfg.max_width_s, h.tsamp_s)
    max_w = widths[-1]
    nsub = resolve_subbands(cfg.subbands, device, h)
    groups: list[_Group] = []
    sweep_s = plan.delays.max(axis=1) * h.tsamp_s  # each trial's sweep across the band
    for s, idx in plan.groups():
        d = plan.delays_scrunched(s, idx)
        # trials whose sweep is too short for zero-DM (in DM order, so the first of the group)
        protected = int(np.sum(sweep_s[idx] < rfi.zero_dm_min_sweep_s)) if rfi.zero_dm else 0
        pd = _device_delays(d[:protected], device) if protected else None
        if nsub:
            sub = plan_subbands(d, min(nsub, h.nchans), cfg.subband_tolerance)
            groups.append(
                _Group(s, idx, sub, sub.max_delay, sub.effective_delays().max(axis=1), protected, pd)
            )
        else:
            groups.append(
                _Group(s, idx, _device_delays(d, device), int(d.max()), d.max(axis=1), protected, pd)
            )
    gulp, overlap = block_geometry(
        plan, cfg.gulp, cfg.max_width_s, h.tsamp_s, [(g.factor, g.max_delay) for g in groups]
    )
    stream = BlockStream(obs, gulp, overlap, device, align=int(plan.scrunch.max()))
    memory = memory_bound(
        h,
        gulp,
        overlap,
        max_w,
        [(g.factor, len(g.idx), g.max_delay) for g in groups],
        stored_per_sample=stream.bytes_per_sample,
        subbands=bool(nsub),
        on_gpu=device.type == "cuda",
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        peak_base = torch.cuda.memory_allocated(device)
    clock = _StageClock(device)
    # on a CPU, as many threads as the cores others leave free, measured before and between blocks
    share = cpu_share if device.type == "cpu" else None
    if share is not None:
        share.probe()
    parts: list[Giants] = []
    mask_union = np.zeros(h.nchans, dtype=bool)
    masked_sum = 0.0
    nonfinite_total = 0
    impulses: set[tuple[int, int, int, int]] = set()
    reach = np.zeros(len(plan.dms), dtype=np.int64)  # native samples each trial has searched up to
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
                # the block is ours (cleaned in place); bad samples are counted where they are new
                new = (block.head, block.head + block.valid)
                cleaned = clean_block(block.data, rfi, inplace=True, counted=new, tsamp_s=h.tsamp_s)
                x, mask, subtracted = cleaned.data, cleaned.mask, cleaned.zero_dm
                nonfinite = cleaned.nonfinite
                for c0, c1, t0, t1 in cleaned.impulses:  # in file samples; overlapping blocks repeat some
                    impulses.add((c0, c1, block.start + t0, block.start + t1))
                mask_np = mask.cpu().numpy()
                # the live channels, worked out once here from the host mask (no further sync), serve
                # every group and sub-band on either kernel
                live = LiveChannels.of(~mask_np, h.nchans, device)
            mask_union |= mask_np
            masked_sum += float(mask_np.mean())
            nonfinite_total += nonfinite
            nblocks += 1
            for g in groups:
                f = g.factor
                # each trial's outputs here: the new samples and a boxcar's reach past them, as far as
                # the block's samples less the trial's own largest delay allow (at the file's end a
                # trial of small delay searches further than its group's largest delay would let it)
                # (block.start and block.head are multiples of every scrunch factor: the stream aligns them)
                begin, valid = block.head // f, block.head // f + -(-block.valid // f)
                nominal = valid + max_w // f
                n_rows = np.minimum(nominal, block.data.shape[1] // f - g.row_delay)
                n_rows = np.where(n_rows > begin, n_rows, 0)  # a trial with nothing new here sits out
                nout = int(n_rows.max())
                if nout <= 0:
                    continue
                reach[g.idx] = np.maximum(reach[g.idx], block.start + np.maximum(n_rows, 0) * f)
                with clock("dedisperse"):
                    xs = scrunch_time(x, f)
                    # the DM-0 series zero-DM took from every live channel, for the trials it spares
                    z0 = (
                        scrunch_time(subtracted[None], f)[0]
                        if g.protected and subtracted is not None
                        else None
                    )
                    whole = None
                    if isinstance(g.delays, SubbandPlan):  # every trial of the group at once
                        short = nout + g.max_delay - xs.shape[1]
                        if short > 0:  # only at the end: zeros stand past it, read by no trial's search
                            xs = torch.nn.functional.pad(xs, (0, short))
                            z0 = None if z0 is None else torch.nn.functional.pad(z0, (0, short))
                        whole = dedisperse_subband(
                            xs, g.delays, nout, weights=live, kernels=kernels, budget_bytes=SUBBAND_BYTES
                        )
                # runs of trials that end alike, a chunk of trials at a time: the baseline and boxcar
                # temporaries (about eight copies of what they search on the torch path, two on the fused
                # kernel's) stay bounded by SEARCH_CHUNK_BYTES whatever the trial count; the direct method
                # dedisperses each run to its own end, so no trial reads past the block
                rows = max(1, SEARCH_CHUNK_BYTES // (4 * nout))
                for r0, r1, n in trial_runs(n_rows, tolerance=max(1, max_w // f // 4), rows=rows):
                    if isinstance(g.delays, torch.Tensor):
                        with clock("dedisperse"):
                            series = kernels.dedisperse(xs, g.delays[r0:r1], n, weights=live)
                    else:
                        assert whole is not None
                        series = whole[r0:r1, :n]
                    if z0 is not None and r0 < g.protected:
                        assert g.protected_delays is not None
                        with clock("dedisperse"):  # the DM-0 series, dedispersed: as if never subtracted
                            p1 = min(r1, g.protected)
                            back = z0.expand(h.nchans, -1)  # every live channel lost it: a view, no copy
                            series[: p1 - r0] += kernels.dedisperse(
                                back, g.protected_delays[r0:p1], n, weights=live
                            )
                    with clock("search"):
                        parts.append(
                            search_series(
                                series,
                                g.idx[r0:r1],
                                baseline_samples=max(8, int(cfg.baseline_s / (h.tsamp_s * f))),
                                threshold=cfg.snr_threshold,
                                # the widths a whole number of scrunched samples wide
                                widths=[w // f for w in widths if w >= f and w % f == 0] or [1],
                                scrunch=f,
                                first_sample=block.start,
                                valid=valid,
                                boxcar=kernels.boxcar,
                                begin=begin,
                            )
                        )
                    del series
                del whole
            if share is not None:
                share.update()
            if progress is not None:
                progress("search", min(block.start + block.head + block.valid, total), total)
    with clock("cluster"):
        capped = cap_giants(
            Giants.concat(parts),
            block=max(1, round(1.0 / h.tsamp_s)),
            limit=math.ceil(cfg.max_giant_rate),
        )
        giants = capped.giants
        clusters = cluster_giants(
            giants, time_tol=cfg.time_tol, dm_tol=cfg.dm_index_tol, width_tol=cfg.width_tol
        )
        cands = []
        sweep_per_dm = sweep_s_per_dm(h, cfg.k_dm)
        steps = np.gradient(plan.dms) if len(plan.dms) > 1 else np.zeros(1)
        for k, g in enumerate(clusters.best):
            j = int(giants.dm_index[g])
            cands.append(
                Candidate(
                    snr=float(giants.snr[g]),
                    dm=float(plan.dms[j]),
                    dm_err=dm_error(
                        float(giants.snr[g]),
                        float(giants.width[g] * h.tsamp_s),
                        sweep_per_dm,
                        float(steps[j]),
                    ),
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
    with clock("refine"):
        todo = cands[: 0 if h.is_time_series else cfg.refine]  # one DM: nothing to refine
        setups = [refine_setup(c, h, plan, widths, cfg, rfi) for c in todo]
        done = 0
        # each stretch of data around the candidates read and cleaned once, one stretch in memory
        for stretch in refine_spans(setups, REFINE_SPAN_BYTES // (4 * h.nchans)):
            span = CleanSpan.read(obs, stretch.start, stretch.stop - stretch.start, stretch.rfi, device)
            for i in stretch.members:
                cands[i] = refine_candidate(
                    todo[i], obs, plan, widths, cfg, rfi, device, span=span, setup=setups[i]
                )
                done += 1
                if progress is not None:
                    progress("refine DM", done, len(todo))
            del span
        cands.sort(key=lambda c: -c.snr)
    return SearchResult(
        header=h,
        plan=plan,
        candidates=cands,
        giants=giants,
        mask_fraction=masked_sum / max(nblocks, 1),
        masked_channels=np.flatnonzero(mask_union).tolist(),
        nonfinite_samples=nonfinite_total,
        unsearched_s=(np.clip(total - reach, 0, total) * h.tsamp_s).astype(np.float64),
        supported_dm_max=supported,
        cpu_threads=share.history if share is not None else None,
        impulses=sorted(impulses, key=lambda r: (r[2], r[0])),
        giants_dropped=capped.dropped,
        giants_floor_snr=capped.floor_snr,
        device=str(device),
        kernel=kernels.name,
        subbands=nsub,
        memory=memory,
        peak_device_bytes=torch.cuda.max_memory_allocated(device) - peak_base
        if device.type == "cuda"
        else None,
        seconds=time.perf_counter() - t_start,
        stages=clock.seconds,
        config=cfg,
    )
