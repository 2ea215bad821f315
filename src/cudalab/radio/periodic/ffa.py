"""The fast folding algorithm (FFA): every period of a range folded coherently, on any torch device.

A Fourier search sums at most 32 harmonics incoherently, and a narrow pulse of a long period spreads
its power over hundreds: there the FFA (Staelin 1969; Morello et al. 2020, riptide) is the more
sensitive, because it folds. For a series cut into ``m`` rows of ``b`` bins, the FFA gives in
``m b log2 m`` adds the ``m`` profiles in which row ``r`` is shifted by ``round(r s / (m - 1))`` bins
(``s = 0 .. m - 1``): the folds at every period from ``b`` to ``b + 1`` bins in steps that drift by one
bin over the observation. The rows are combined in pairs of halves, the tail half shifted as the
whole's drift asks (riptide's recursion, written as ``log2 m`` vectorised passes over a chunk of DM
trials at once; the rows are padded with zeros to a power of two, which adds no noise, and of the
padded transform's profiles the ``m`` one bin of drift apart are scored).

:func:`periodogram` covers ``[period_min, period_max]`` in levels, as riptide does: level ``k`` sums
the series over ``f_k`` samples (a real number: fractional samples count in part) and folds it at
``b`` from ``bins_min`` to ``bins_max`` bins, with ``f_{k+1} = f_k bins_max / bins_min`` so the levels
tile the periods without gaps. A fold costs in proportion to its bins, so keeping every fold near
``bins_min`` bins (rather than up to twice as many, as whole-sample sums would force at the short
periods) does the same search in under half the work there. Periods shorter than ``bins_min``
samples are folded from the unsummed series at as many bins as they have samples. Each profile is
scored by the best of its boxcars (widths 1, 2, 3, 4, 6, 8, ... bins up to ``duty_max`` of a turn,
wrapped in phase): ``S/N = (sum - w mean) / sqrt(m v_w (1 - w / b))``, where ``m`` is the number of
rows folded and ``v_w`` the noise variance of ``w`` summed bins of unit-variance input (the series is
normalised and its slow baseline removed first): ``w`` for whole-sample sums, ``w - 2 mean(a (1 - a))
/ f`` for fractional ones, whose edges (at ``a`` of a sample) share samples (:func:`downsample`).
:func:`peaks` lists the periodogram's maxima from ``snr_min``; :mod:`cudalab.radio.periodic.search`
makes them candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.single_pulse.search import boxcar_widths as single_pulse_widths


class Workspace:
    """Scratch buffers reused across the periodogram's thousands of transforms.

    On the CPU a fresh tensor of tens of megabytes costs more in page faults than the additions done
    in it (glibc hands such blocks back to the kernel when freed), so each pass writes into buffers
    kept here, grown when a larger one is asked for.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        """A tensor of ``shape`` (contents undefined) over the buffer ``name``."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, device=self.device, dtype=self.dtype)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


def ffa_transform(rows: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    """The FFA of ``(..., m, b)`` rows (``m`` a power of two): ``out[..., s, :]`` is the sum of the rows,
    row ``r`` rolled left by about ``r s / (m - 1)`` bins (exactly so for ``s = 0`` and ``s = m - 1``).
    A pulse train whose period is ``b + s / (m - 1)`` bins lines up in profile ``s``.

    Pass ``g`` (``g = 1, 2, 4, ...``) joins halves of ``g`` rows: output ``s`` of a pair is head
    ``floor(s / 2)`` plus tail ``floor(s / 2)`` rolled left by ``floor(s / 2) + s mod 2`` bins (riptide's
    ``round(s (g - 1) / (2 g - 1))`` and ``round(s g / (2 g - 1))``, which reduce to these). Tail row
    ``r`` rolled by ``r`` (or ``r + 1``) is a diagonal view of the tail rows written out ``k`` times
    over, so a pass is one copy and two additions in place. The result is in ``workspace`` (a new one
    when None): it is overwritten by the next call.
    """
    *lead, m, b = rows.shape
    if m & (m - 1):
        raise ValueError(f"the FFA needs a power-of-two number of rows, not {m}")
    ws = workspace or Workspace(rows.device, rows.dtype)
    batch = rows.numel() // (m * b)
    y = rows.reshape(batch, m, b)
    spare = [ws.get("ffa_a", batch, m, b), ws.get("ffa_b", batch, m, b)]
    g = 1
    while g < m:
        groups = m // (2 * g)
        pairs = y.reshape(batch, groups, 2, g, b)
        head, tail = pairs[:, :, 0], pairs[:, :, 1]
        k = -(-(g + b) // b)  # copies so that a roll by up to g bins stays inside row r's span
        tiled = ws.get("ffa_tiled", batch, groups, g, k, b)
        tiled.copy_(tail.unsqueeze(3).expand(batch, groups, g, k, b))
        st = tiled.stride()
        diag = (batch, groups, g, b), (st[0], st[1], st[2] + 1, 1)
        out = spare[0].view(batch, groups, g, 2, b)
        torch.add(head, tiled.as_strided(*diag, tiled.storage_offset()), out=out[:, :, :, 0])
        torch.add(head, tiled.as_strided(*diag, tiled.storage_offset() + 1), out=out[:, :, :, 1])
        y = spare[0].view(batch, m, b)
        spare.reverse()
        g *= 2
    return y.reshape(*lead, m, b)


def boxcar_widths(bins: int, duty_max: float) -> list[int]:
    """Boxcar widths in bins up to ``duty_max`` of a turn: the single-pulse search's sequence (1, 2, 3, 4,
    6, 8, 12, ..., about sqrt(2) apart)."""
    return single_pulse_widths(duty_max * bins, 1.0)


def profile_snr(
    profiles: torch.Tensor,
    folded_rows: int,
    widths: list[int],
    workspace: Workspace | None = None,
    deficit: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best boxcar S/N of each profile of ``(..., b)`` and the width that gave it (bins).

    Each bin is the sum of ``folded_rows`` unit-variance samples; the boxcar wraps in phase and is
    measured against the profile's own mean: ``(sum_w - w mean) / sqrt(rows (w - deficit) (1 - w / b))``,
    ``deficit`` being how much less than ``w`` the variance of ``w`` adjacent bins of one row is (0 for
    independent bins; see the module for fractional sums).
    """
    ws = workspace or Workspace(profiles.device, profiles.dtype)
    *lead, b = profiles.shape
    wmax = max(widths)
    c = ws.get("snr_cumsum", *lead, b + wmax + 1)
    c[..., 0] = 0.0
    c[..., 1 : b + 1] = profiles
    c[..., b + 1 :] = profiles[..., :wmax]
    c[..., 1:] -= profiles.mean(dim=-1, keepdim=True)
    torch.cumsum(c, dim=-1, out=c)
    diff = ws.get("snr_diff", *lead, b)
    best = torch.full(lead, -math.inf, device=profiles.device, dtype=profiles.dtype)
    best_w = torch.zeros(lead, device=profiles.device, dtype=torch.long)
    for w in widths:
        torch.sub(c[..., w : w + b], c[..., :b], out=diff)
        snr = diff.amax(dim=-1).div_(math.sqrt(folded_rows * (w - deficit) * (1 - w / b)))
        better = snr > best
        best = torch.where(better, snr, best)
        best_w.masked_fill_(better, w)
    return best, best_w


@dataclass(frozen=True, slots=True)
class FfaConfig:
    """The FFA search's settings."""

    period_min_s: float = 0.1
    """Shortest period folded; below it the Fourier search is the better tool."""
    period_max_s: float = 10.0
    """Longest period folded (at most a sixth of the observation: a fold needs turns)."""
    bins_min: int = 240
    """Phase bins of the shortest fold at each level."""
    bins_max: int = 260
    """Phase bins of the longest fold at each level (riptide's defaults: 240 to 260)."""
    duty_max: float = 0.3
    """Widest boxcar, as a fraction of a turn."""
    snr_min: float = 7.0
    """Periodogram peaks kept from this S/N (before the trials correction)."""
    max_elements: int | None = None
    """Rows x bins transformed at once (the DM trials are taken in chunks to stay within it); None:
    :data:`CHUNK_ELEMENTS` for the series' device."""


#: Rows x bins transformed at once by default: on a CPU, what keeps a pass's buffers near the caches
#: (2^21 took 0.22 s a 60 s trial where 2^24 took 0.35); on a GPU, enough to fill it.
CHUNK_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 25}


@dataclass(frozen=True, slots=True)
class Periodogram:
    """The FFA's S/N at every trial period: ``periods_s`` ``(np,)``; ``snr`` and ``width_bins`` ``(ndm, np)``;
    ``bins`` ``(np,)`` (phase bins of each fold) and ``trials`` (independent tests, for the correction)."""

    periods_s: NDArray[np.float64]
    snr: NDArray[np.float32]
    width_bins: NDArray[np.int16]
    bins: NDArray[np.int64]
    trials: float


def _levels(n: int, tsamp_s: float, cfg: FfaConfig) -> list[tuple[float, int, int]]:
    """``(f, b_lo, b_hi)``: fold the series summed over ``f`` samples at ``b`` in ``[b_lo, b_hi)`` bins."""
    if not 1 <= cfg.bins_min < cfg.bins_max:
        raise ValueError(f"need 1 <= bins_min < bins_max, not {cfg.bins_min}, {cfg.bins_max}")
    p_lo = cfg.period_min_s / tsamp_s
    p_hi = min(cfg.period_max_s, n * tsamp_s / 6) / tsamp_s
    out: list[tuple[float, int, int]] = []
    f = p_lo / cfg.bins_min
    if f < 1:  # periods of fewer than bins_min samples: folded unsummed, at as many bins as samples
        b_lo, b_hi = max(2, math.ceil(p_lo)), min(cfg.bins_min, math.floor(p_hi) + 1)
        if b_hi > b_lo and n // b_lo >= 2:
            out.append((1.0, b_lo, b_hi))
        f = 1.0
    while cfg.bins_min * f <= p_hi:
        b_hi = min(cfg.bins_max, math.floor(p_hi / f) + 1)
        if b_hi > cfg.bins_min and int(n / f) // cfg.bins_min >= 2:
            out.append((f, cfg.bins_min, b_hi))
        f *= cfg.bins_max / cfg.bins_min
    return out


def downsample(
    series: torch.Tensor, f: float, cumsum: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """``(ndm, n)`` summed over ``f`` samples (``f >= 1``, real: output ``i`` is the sum over
    ``[i f, (i + 1) f)``, a sample cut by an edge counted in proportion), divided by ``sqrt(f)``; and the
    variance deficit of adjacent outputs summed (:func:`profile_snr`): a sample cut at ``a`` of its
    length is split between two outputs, which leaves ``a (1 - a)`` out at each end of a run of them,
    ``2 mean(a (1 - a)) / f`` in all. ``cumsum``: the series' cumulative sums from 0, ``(ndm, n + 1)``
    in float64, when already at hand."""
    ndm, n = series.shape
    if f == 1:
        return series, 0.0
    if f == int(f) and cumsum is None:
        k = int(f)
        return series[:, : n // k * k].reshape(ndm, n // k, k).sum(dim=-1) / math.sqrt(k), 0.0
    c = cumsum if cumsum is not None else _cumsum(series)
    edges = torch.arange(int(n / f) + 1, device=series.device, dtype=torch.float64) * f
    i = edges.floor().long().clamp(max=n - 1)
    frac = edges - i
    at = c[:, i] + frac * (c[:, i + 1] - c[:, i])  # the cumulative sum at each real edge
    deficit = 2.0 * float((frac * (1 - frac)).mean()) / f
    return ((at[:, 1:] - at[:, :-1]) / math.sqrt(f)).to(series.dtype), deficit


def _cumsum(series: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(torch.cumsum(series, dim=-1, dtype=torch.float64), (1, 0))


def periodogram(series: torch.Tensor, tsamp_s: float, cfg: FfaConfig) -> Periodogram:
    """The FFA periodogram of ``(ndm, n)`` normalised, baseline-free series (see the module).

    The DM trials are taken a chunk at a time through every level, so the work of a level (its sums,
    its folds) stays within ``max_elements``; each fold of ``m`` rows is padded with zero rows to a
    power of two, and of its profiles the ``m`` a bin of drift apart are scored.
    """
    ndm, n = series.shape
    # the folds, independent of the data: (f, b, rows, rows padded, which profiles, widths, first column)
    plan: list[tuple[float, int, int, int, torch.Tensor, list[int], int]] = []
    periods: list[NDArray[np.float64]] = []
    bins: list[NDArray[np.int64]] = []
    trials, col = 0.0, 0
    for f, b_lo, b_hi in _levels(n, tsamp_s, cfg):
        nds = int(n / f)
        for b in range(b_lo, b_hi):
            m = nds // b
            rows_pow2 = 1 << max(1, (m - 1).bit_length())
            # m of the rows_pow2 profiles (the zero rows make the drift steps finer than the one bin
            # over the m rows that tells periods apart): only those are scored
            s = np.rint(np.arange(m) * (rows_pow2 - 1) / max(m - 1, 1)).astype(np.int64)
            widths = boxcar_widths(b, cfg.duty_max)
            plan.append((f, b, m, rows_pow2, torch.from_numpy(s).to(series.device), widths, col))
            periods.append((b + s / (rows_pow2 - 1)) * f * tsamp_s)
            bins.append(np.full(m, b))
            # independent periods: one per bin of drift over the observation (m of them), per width
            trials += m * len(widths)
            col += m
    snr = np.zeros((ndm, col), np.float32)
    width = np.zeros((ndm, col), np.int16)
    if plan:
        budget = cfg.max_elements or CHUNK_ELEMENTS.get(series.device.type, CHUNK_ELEMENTS["cuda"])
        chunk = max(1, budget // max(p * b for _, b, _, p, *_ in plan))
        ws = Workspace(series.device, series.dtype)
        for d0 in range(0, ndm, chunk):
            part = series[d0 : d0 + chunk]
            c = _cumsum(part) if any(f != int(f) for f, *_ in plan) else None
            level, x, deficit = -1.0, part, 0.0
            for f, b, m, rows_pow2, pick, widths, col in plan:
                if f != level:
                    level = f
                    x, deficit = downsample(part, f, c)
                rows = ws.get("rows", part.shape[0], rows_pow2, b)
                rows[:, :m] = x[:, : m * b].reshape(-1, m, b)
                rows[:, m:] = 0.0  # zero rows add no noise
                profiles = ffa_transform(rows, ws).index_select(1, pick)
                best, best_w = profile_snr(profiles, m, widths, ws, deficit)
                snr[d0 : d0 + chunk, col : col + m] = best.float().cpu().numpy()
                width[d0 : d0 + chunk, col : col + m] = best_w.cpu().numpy()
    if not periods:
        return Periodogram(np.zeros(0), snr, width, np.zeros(0, np.int64), 0.0)
    order = np.argsort(np.concatenate(periods), kind="stable")
    return Periodogram(np.concatenate(periods)[order], snr[:, order], width[:, order], np.concatenate(bins)[order],
                       trials * ndm)  # fmt: skip


def peaks(pg: Periodogram, snr_min: float, tobs_s: float, most: int = 32) -> list[tuple[int, int]]:
    """``(dm index, period index)`` of the periodogram's peaks from ``snr_min``, at most ``most`` per DM
    trial: the brightest first, and no other within twice the periods its own pulse width spans (a
    mismatch of ``dP`` drifts the pulse by ``dP T / P``: within its width, it is the same signal)."""
    out = []
    for d in range(pg.snr.shape[0]):
        row = pg.snr[d]
        order = np.argsort(-row)
        taken: list[tuple[float, float]] = []
        for i in order:
            if row[i] < snr_min or len(taken) >= most:
                break
            p = pg.periods_s[i]
            span = max(pg.width_bins[d, i], 1) / pg.bins[i] * p * p / tobs_s
            if any(abs(p - q) <= 2 * max(span, s) for q, s in taken):
                continue
            taken.append((p, span))
            out.append((d, int(i)))
    return out


__all__ = [
    "FfaConfig",
    "Periodogram",
    "Workspace",
    "boxcar_widths",
    "downsample",
    "ffa_transform",
    "peaks",
    "periodogram",
    "profile_snr",
]
