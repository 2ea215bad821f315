"""The fast folding algorithm (FFA): every period of a range folded coherently, on any torch device.

A Fourier search sums at most 32 harmonics incoherently, and a narrow pulse of a long period spreads
its power over hundreds: there the FFA (Staelin 1969; Morello et al. 2020, riptide) is the more
sensitive, because it folds. For a series cut into ``m`` rows of ``b`` bins, the FFA gives in
``m b log2 m`` adds the ``m`` profiles in which row ``r`` is shifted by ``round(r s / (m - 1))`` bins
(``s = 0 .. m - 1``): the folds at every period from ``b`` to ``b + 1`` bins in steps that drift by one
bin over the observation. The rows are combined in pairs of halves, the tail half shifted as the
whole's drift asks (riptide's recursion, written as ``log2 m`` vectorised passes over every DM trial
at once; the rows are padded with zeros to a power of two, which adds no noise).

:func:`periodogram` covers ``[period_min, period_max]`` with the series summed over ``f`` samples
(``f = 1, 2, ...``) and ``b`` from ``bins_min`` to ``bins_min (f + 1) / f`` bins, so each fold has
``bins_min`` to ``2 bins_min`` phase bins and the levels tile the periods without gaps (so the
shortest period folded is ``bins_min`` samples, as riptide's; below, the Fourier search serves). Each
profile is scored by the best of its boxcars (widths 1, 2, 3, 4, 6, 8, ... bins up to ``duty_max`` of a
turn, wrapped in phase): ``S/N = (sum - w mean) / sqrt(m w (1 - w / b))``, where ``m`` is the number
of unit-variance rows folded (the series is normalised and its slow baseline removed first).
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


def _round(x: torch.Tensor) -> torch.Tensor:
    """Round half up (``torch.round`` rounds half to even; the recursion's shifts must not)."""
    return torch.floor(x + 0.5).long()


def ffa_transform(rows: torch.Tensor) -> torch.Tensor:
    """The FFA of ``(..., m, b)`` rows (``m`` a power of two): ``out[..., s, :]`` is the sum of the rows,
    row ``r`` rolled left by about ``r s / (m - 1)`` bins (exactly so for ``s = 0`` and ``s = m - 1``).
    A pulse train whose period is ``b + s / (m - 1)`` bins lines up in profile ``s``.

    Each pass rolls the tail halves through a view of every rotation (the row twice over, unfolded),
    so a pass is one indexed copy and one add.
    """
    *lead, m, b = rows.shape
    if m & (m - 1):
        raise ValueError(f"the FFA needs a power-of-two number of rows, not {m}")
    y = rows.reshape(-1, m, b)
    batch = y.shape[0]
    g = 1
    while g < m:
        pairs = y.reshape(batch, m // (2 * g), 2, g, b)
        head, tail = pairs[:, :, 0], pairs[:, :, 1]
        s = torch.arange(2 * g, device=rows.device, dtype=torch.float64)
        pick = _round(s * (g - 1) / (2 * g - 1))  # each half's own drift, in its g rows
        shift = _round(s * g / (2 * g - 1)) % b  # where the tail half starts: g rows into the drift
        rotations = torch.cat([tail, tail], dim=-1).unfold(-1, b, 1)  # (batch, G, g, b + 1, b), a view
        y = (head[:, :, pick] + rotations[:, :, pick, shift]).reshape(batch, m, b)
        g *= 2
    return y.reshape(*lead, m, b)


def boxcar_widths(bins: int, duty_max: float) -> list[int]:
    """Boxcar widths in bins up to ``duty_max`` of a turn: the single-pulse search's sequence (1, 2, 3, 4,
    6, 8, 12, ..., about sqrt(2) apart)."""
    return single_pulse_widths(duty_max * bins, 1.0)


def profile_snr(
    profiles: torch.Tensor, folded_rows: int, widths: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best boxcar S/N of each profile of ``(..., b)`` and the width that gave it (bins).

    Each bin is the sum of ``folded_rows`` unit-variance samples; the boxcar wraps in phase and is
    measured against the profile's own mean: ``(sum_w - w mean) / sqrt(rows w (1 - w / b))``.
    """
    b = profiles.shape[-1]
    wmax = max(widths)
    ext = torch.cat([profiles, profiles[..., :wmax]], dim=-1) - profiles.mean(dim=-1, keepdim=True)
    c = torch.nn.functional.pad(torch.cumsum(ext, dim=-1), (1, 0))
    best = torch.full(profiles.shape[:-1], -math.inf, device=profiles.device, dtype=profiles.dtype)
    best_w = torch.zeros(profiles.shape[:-1], device=profiles.device, dtype=torch.long)
    for w in widths:
        snr = (c[..., w : w + b] - c[..., :b]).amax(dim=-1) / math.sqrt(folded_rows * w * (1 - w / b))
        better = snr > best
        best = torch.where(better, snr, best)
        best_w = torch.where(better, torch.full_like(best_w, w), best_w)
    return best, best_w


@dataclass(frozen=True, slots=True)
class FfaConfig:
    """The FFA search's settings."""

    period_min_s: float = 0.1
    """Shortest period folded; below it the Fourier search is the better tool."""
    period_max_s: float = 10.0
    """Longest period folded (at most a sixth of the observation: a fold needs turns)."""
    bins_min: int = 240
    """Phase bins of the shortest fold at each level (up to twice as many)."""
    duty_max: float = 0.3
    """Widest boxcar, as a fraction of a turn."""
    snr_min: float = 7.0
    """Periodogram peaks kept from this S/N (before the trials correction)."""
    max_elements: int = 1 << 24
    """Profiles x bins computed at once (the DM trials are taken in chunks to stay within it)."""


@dataclass(frozen=True, slots=True)
class Periodogram:
    """The FFA's S/N at every trial period: ``periods_s`` ``(np,)``; ``snr`` and ``width_bins`` ``(ndm, np)``;
    ``bins`` ``(np,)`` (phase bins of each fold) and ``trials`` (independent tests, for the correction)."""

    periods_s: NDArray[np.float64]
    snr: NDArray[np.float32]
    width_bins: NDArray[np.int64]
    bins: NDArray[np.int64]
    trials: float


def _levels(n: int, tsamp_s: float, cfg: FfaConfig) -> list[tuple[int, int, int]]:
    """``(f, b_lo, b_hi)``: fold the series summed over ``f`` samples at ``b`` in ``[b_lo, b_hi)`` bins."""
    p_lo = cfg.period_min_s / tsamp_s
    p_hi = min(cfg.period_max_s, n * tsamp_s / 6) / tsamp_s
    out = []
    f = max(1, int(p_lo // cfg.bins_min))
    while cfg.bins_min * f <= p_hi:
        b_lo = max(cfg.bins_min, math.ceil(p_lo / f))
        b_hi = min(math.ceil(cfg.bins_min * (f + 1) / f), math.floor(p_hi / f) + 1)
        if b_hi > b_lo and n // f // b_lo >= 2:
            out.append((f, b_lo, b_hi))
        f += 1
    return out


def periodogram(series: torch.Tensor, tsamp_s: float, cfg: FfaConfig) -> Periodogram:
    """The FFA periodogram of ``(ndm, n)`` normalised, baseline-free series (see the module)."""
    ndm, n = series.shape
    periods: list[NDArray[np.float64]] = []
    snrs: list[NDArray[np.float32]] = []
    widths_out: list[NDArray[np.int64]] = []
    bins_out: list[NDArray[np.int64]] = []
    trials = 0.0
    for f, b_lo, b_hi in _levels(n, tsamp_s, cfg):
        nds = n // f
        x = series[:, : nds * f].reshape(ndm, nds, f).sum(dim=-1) / math.sqrt(f)
        for b in range(b_lo, b_hi):
            m = nds // b
            rows_pow2 = 1 << max(1, (m - 1).bit_length())
            widths = boxcar_widths(b, cfg.duty_max)
            chunk = max(1, cfg.max_elements // (rows_pow2 * b))
            snr_b, w_b = [], []
            for d0 in range(0, ndm, chunk):
                rows = x[d0 : d0 + chunk, : m * b].reshape(-1, m, b)
                rows = torch.nn.functional.pad(rows, (0, 0, 0, rows_pow2 - m))  # zero rows add no noise
                best, best_w = profile_snr(ffa_transform(rows), m, widths)
                snr_b.append(best.float().cpu().numpy())
                w_b.append(best_w.cpu().numpy())
            s = np.arange(rows_pow2)
            periods.append((b + s / (rows_pow2 - 1)) * f * tsamp_s)
            snrs.append(np.concatenate(snr_b))
            widths_out.append(np.concatenate(w_b))
            bins_out.append(np.full(rows_pow2, b))
            # independent periods: one per bin of drift over the observation (m of them), per width
            trials += m * len(widths)
    if not periods:
        empty = np.zeros((ndm, 0))
        return Periodogram(
            np.zeros(0), empty.astype(np.float32), empty.astype(np.int64), np.zeros(0, np.int64), 0.0
        )
    order = np.argsort(np.concatenate(periods), kind="stable")
    return Periodogram(
        np.concatenate(periods)[order],
        np.concatenate(snrs, axis=1)[:, order],
        np.concatenate(widths_out, axis=1)[:, order],
        np.concatenate(bins_out)[order],
        trials * ndm,
    )


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
    "boxcar_widths",
    "ffa_transform",
    "peaks",
    "periodogram",
    "profile_snr",
]
