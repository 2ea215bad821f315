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

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.env.device import resolve_device
from cudalab.errors import CudalabError
from cudalab.radio.dedispersion.direct import LiveChannels, scrunch_time
from cudalab.radio.dedispersion.plan import DedispersionPlan, make_plan
from cudalab.radio.dedispersion.subband import SubbandPlan, dedisperse_subband, plan_subbands
from cudalab.radio.io.header import Header
from cudalab.radio.io.observation import open_observation
from cudalab.radio.io.stream import BlockStream
from cudalab.radio.kernels import resolve_kernel
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.memory import (
    SEARCH_CHUNK_BYTES,
    SUBBAND_BYTES,
    MemoryBound,
    block_geometry,
    memory_bound,
    outputs_per_block,
)
from cudalab.radio.rfi import clean_block
from cudalab.radio.single_pulse.candidates import Candidate
from cudalab.radio.single_pulse.cluster import cluster_giants
from cudalab.radio.single_pulse.refine import refine_dm, sweep_dm
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
        kernels = resolve_kernel(cfg.kernel, device)
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
    widths = boxcar_widths(cfg.max_width_s, h.tsamp_s)
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
    gulp, overlap = block_geometry(
        plan, cfg.gulp, cfg.max_width_s, h.tsamp_s, [(f, m) for f, _, _, m in groups]
    )
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
    parts: list[Giants] = []
    mask_union = np.zeros(h.nchans, dtype=bool)
    masked_sum = 0.0
    nonfinite_total = 0
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
                # the block is ours (cleaned in place); its overlap's bad samples count in the next one
                x, mask, nonfinite = clean_block(block.data, cfg.rfi, inplace=True, counted=block.valid)
                mask_np = mask.cpu().numpy()
                # the live channels, worked out once here from the host mask (no further sync), serve
                # every group and sub-band on either kernel
                live = LiveChannels.of(~mask_np, h.nchans, device)
            mask_union |= mask_np
            masked_sum += float(mask_np.mean())
            nonfinite_total += nonfinite
            nblocks += 1
            for factor, idx, delays, max_delay in groups:
                valid_s = -(-block.valid // factor)
                nout = outputs_per_block(block.data.shape[1], block.valid, factor, max_delay, max_w)
                if nout <= 0:
                    continue
                with clock("dedisperse"):
                    xs = scrunch_time(x, factor)
                    if isinstance(delays, SubbandPlan):
                        series = dedisperse_subband(
                            xs, delays, nout, weights=live, kernels=kernels, budget_bytes=SUBBAND_BYTES
                        )
                    else:
                        series = kernels.dedisperse(xs, delays, nout, weights=live)
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
                                boxcar=kernels.boxcar,
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
        nonfinite_samples=nonfinite_total,
        device=str(device),
        kernel=kernels.name,
        memory=memory,
        peak_device_bytes=torch.cuda.max_memory_allocated(device) - peak_base
        if device.type == "cuda"
        else None,
        seconds=time.perf_counter() - t_start,
        stages=clock.seconds,
        config=cfg,
    )
