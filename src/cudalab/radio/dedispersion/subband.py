"""Two-stage (sub-band) dedispersion: the same sums as the direct method at a fraction of the adds.

The band is cut into ``nsub`` contiguous sub-bands. A trial's delay of channel ``c`` in sub-band
``b`` splits into the delay of the sub-band's reference (highest-frequency) channel, ``A[i, b]``, and
the delay inside the sub-band, ``R[i, c]``. The inner part changes slowly with DM, so neighbouring
trials share it:

- stage 1, once per *nominal* trial ``j``: ``S[j, b, t] = sum_{c in b} x[c, t + R[j, c]]``;
- stage 2, for every trial ``i`` with nominal ``j(i)``: ``out[i, t] = sum_b S[j(i), b, t + A[i, b]]``.

So trial ``i`` is dedispersed exactly, as a direct sum, with the delays ``A[i, b(c)] + R[j(i), c]``;
they differ from its own delays by at most ``tolerance`` samples (the nominal trials are chosen so),
which widens a pulse by at most that much. :class:`SubbandPlan` records the largest difference.

Adds per output sample: ``n_nominal * nchans + ndm * nsub`` instead of ``ndm * nchans``. Both
stages run on the kernels they are given (:class:`cudalab.radio.kernels.KernelSet`): the torch
reference (:func:`~cudalab.radio.dedispersion.direct.dedisperse` and a gather) or the Triton kernel,
whose per-trial source row is stage 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.dedispersion.direct import LiveChannels
from cudalab.radio.kernels import TORCH, KernelSet


@dataclass(frozen=True)
class SubbandPlan:
    """How a group of trials is dedispersed in two stages.

    Attributes
    ----------
    bounds
        ``(nsub + 1,)`` channel index where each sub-band starts, and the end.
    ref
        ``(nsub,)`` the reference channel of each sub-band (its smallest delay: highest frequency).
    nominal
        ``(n_nominal,)`` row of each nominal trial in the group's delay table.
    assign
        ``(ndm,)`` index into ``nominal`` used by each trial; non-decreasing (runs of trials in DM
        order share a nominal), so the trials of consecutive nominals are consecutive rows.
    outer
        ``(ndm, nsub)`` stage-2 delays, ``A[i, b]``.
    inner
        ``(n_nominal, nchans)`` stage-1 delays, ``R[j, c]`` (relative to the sub-band's reference).
    max_error
        Largest ``|A[i, b(c)] + R[j(i), c] - D[i, c]|`` over all trials and channels, in samples.
    max_delay
        Largest ``A[i, b(c)] + R[j(i), c]``: the samples past the last output the data must hold.
    """

    bounds: NDArray[np.int64]
    ref: NDArray[np.int64]
    nominal: NDArray[np.int64]
    assign: NDArray[np.int64]
    outer: NDArray[np.int64]
    inner: NDArray[np.int64]
    max_error: int
    max_delay: int

    def __post_init__(self) -> None:
        if len(self.assign) and (np.diff(self.assign) < 0).any():
            raise ValueError("assign must be non-decreasing: a nominal's trials are consecutive")

    @property
    def nsub(self) -> int:
        return len(self.ref)

    def effective_delays(self) -> NDArray[np.int64]:
        """``(ndm, nchans)``: the delays the two stages together apply to each trial."""
        sub_of = np.repeat(np.arange(self.nsub), np.diff(self.bounds))
        return self.outer[:, sub_of] + self.inner[self.assign]

    def adds_ratio(self) -> float:
        """Channel-adds of the two stages over the direct method's, per output sample."""
        ndm, nchans = len(self.assign), int(self.bounds[-1])
        return (len(self.nominal) * nchans + ndm * self.nsub) / max(ndm * nchans, 1)


def plan_subbands(delays: NDArray[np.int64], nsub: int, tolerance: int = 1) -> SubbandPlan:
    """Choose the nominal trials for ``delays`` (``(ndm, nchans)``, sorted by DM) and ``nsub`` sub-bands.

    Trials are taken in DM order; a run of trials shares the nominal in its middle while the inner
    delays of its first and last trial differ by at most ``2 * tolerance`` in every channel (delays
    grow about linearly with DM), and the run is shortened until every trial in it is within
    ``tolerance + 1`` samples of its own delays (the 1: each of the two parts is rounded).
    """
    delays = np.asarray(delays, dtype=np.int64)
    ndm, nchans = delays.shape
    if not 1 <= nsub <= nchans:
        raise ValueError(f"nsub must be between 1 and nchans ({nchans}), not {nsub}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, not {tolerance}")
    bounds = np.linspace(0, nchans, nsub + 1).round().astype(np.int64)
    sub_of = np.repeat(np.arange(nsub), np.diff(bounds))
    # the reference of each sub-band: its highest-frequency channel, whose delay is the smallest at
    # every trial (delays are monotonic in frequency), hence the smallest sum over the trials
    ref = np.array(
        [lo + int(np.argmin(delays[:, lo:hi].sum(axis=0))) for lo, hi in pairwise(bounds.tolist())]
    )
    outer = delays[:, ref]
    inner_all = delays - outer[:, sub_of]
    if ndm and inner_all.min() < 0:
        raise ValueError("delays must be monotonic in frequency within each sub-band")
    nominal: list[int] = []
    assign = np.empty(ndm, dtype=np.int64)
    start = 0
    while start < ndm:
        end = start + 1
        while end < ndm and np.abs(inner_all[end] - inner_all[start]).max() <= 2 * tolerance:
            end += 1
        while True:
            middle = (start + end - 1) // 2
            if np.abs(inner_all[start:end] - inner_all[middle]).max() <= tolerance + 1 or end - start == 1:
                break
            end -= 1
        assign[start:end] = len(nominal)
        nominal.append(middle)
        start = end
    nominal_idx = np.asarray(nominal, dtype=np.int64)
    inner = inner_all[nominal_idx]
    effective = outer[:, sub_of] + inner[assign]
    error = np.abs(effective - delays)
    return SubbandPlan(
        bounds=bounds,
        ref=ref,
        nominal=nominal_idx,
        assign=assign,
        outer=outer,
        inner=inner,
        max_error=int(error.max()) if error.size else 0,
        max_delay=int(effective.max()) if effective.size else 0,
    )


def dedisperse_subband(
    data: torch.Tensor,
    plan: SubbandPlan,
    nout: int,
    *,
    weights: torch.Tensor | LiveChannels | None = None,
    budget_bytes: int = 1 << 29,
    kernels: KernelSet = TORCH,
) -> torch.Tensor:
    """Dedisperse ``data`` (``(nchans, ntime)``) at the plan's trials in two stages.

    The sub-band series of as many nominal trials as fit in ``budget_bytes`` are made at a time, so
    the intermediate stays bounded whatever the number of trials. Needs ``ntime >= nout +
    plan.max_delay``. ``kernels`` run both stages (:func:`cudalab.radio.kernels.resolve_kernel`);
    ``weights`` are per channel, or the block's
    :class:`~cudalab.radio.dedispersion.direct.LiveChannels`. Returns ``(ndm, nout)`` float32.
    """
    nchans, ntime = data.shape
    ndm = len(plan.assign)
    if int(plan.bounds[-1]) != nchans:
        raise ValueError(f"the plan is for {int(plan.bounds[-1])} channels, the data have {nchans}")
    out = torch.zeros(ndm, nout, dtype=torch.float32, device=data.device)
    if nout <= 0 or ndm == 0:
        return out
    need = nout + plan.max_delay
    if need > ntime:
        raise ValueError(f"need {need} samples for {nout} outputs, have {ntime}")
    n1 = nout + int(plan.outer.max())  # stage 2 reads S up to t + A[i, b]
    chunk = max(1, budget_bytes // max(plan.nsub * n1 * 4, 1))
    live = weights if isinstance(weights, LiveChannels) else LiveChannels.of(weights, nchans, data.device)
    inner = torch.from_numpy(plan.inner).to(data.device)
    outer = torch.from_numpy(plan.outer).to(data.device)
    firsts = np.searchsorted(plan.assign, np.arange(len(plan.nominal) + 1))  # assign is sorted
    for j0 in range(0, len(plan.nominal), chunk):
        j1 = min(j0 + chunk, len(plan.nominal))
        r0, r1 = int(firsts[j0]), int(firsts[j1])  # the trials of these nominals
        stage1 = torch.zeros(j1 - j0, plan.nsub, n1, dtype=torch.float32, device=data.device)
        for b, (lo, hi) in enumerate(pairwise(plan.bounds.tolist())):
            # only as far as stage 2 reads for these trials; a sample past the data is never read
            # by an output (ntime >= need), so zeros stand in for it where a nominal overshoots
            n_b = nout + int(plan.outer[r0:r1, b].max()) if r1 > r0 else 0
            if n_b <= 0:
                continue
            x = data[lo:hi]
            short = n_b + int(plan.inner[j0:j1, lo:hi].max()) - ntime
            if short > 0:
                x = torch.nn.functional.pad(x, (0, short))
            kernels.dedisperse(
                x, inner[j0:j1, lo:hi], n_b, weights=live.within(lo, hi), out=stage1[:, b, :n_b]
            )
        if r1 == r0:
            continue
        local = torch.from_numpy(plan.assign[r0:r1] - j0).to(data.device)
        if kernels.dedisperse_sources is not None:
            # stage 2 is a dedispersion of the sub-band series with a source row per trial
            kernels.dedisperse_sources(stage1, outer[r0:r1], nout, sources=local, out=out[r0:r1])
            continue
        # stage 2 on the torch reference, every trial of these nominals at once, one sub-band at a
        # time: row d of the unfolded view is the sub-band series shifted by d samples, copied only
        # when gathered
        for b in range(plan.nsub):
            windows = stage1[:, b].unfold(1, nout, 1)  # (nominals, n1 - nout + 1, nout)
            out[r0:r1] += windows[local, outer[r0:r1, b]]
    return out
