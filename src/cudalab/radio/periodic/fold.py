"""Folding: a candidate's profile, sub-integrations and sub-bands, its significance, the period (and
period derivative and DM) that maximise it, and the true period among a candidate's harmonics.

Phase of sample ``i`` (time ``t = i * tsamp`` from the start): ``phi = t / P - pdot t^2 / (2 P^2)``
(turns); a sample adds to bin ``floor(nbins * frac(phi))``. The significance of a profile is its
reduced chi-square against a flat one, ``chi2_r = sum_b (p_b - mean)^2 / (n_b sigma^2) / (nbins -
1)``, with ``n_b`` the samples in bin ``b`` and ``sigma^2`` the variance of one sample (measured off
the series, which is whitened first with a running median): noise gives ``chi2_r ~ 1``. The profile
S/N is the best boxcar's (all widths of 1 to ``nbins/2`` bins, wrapped) over the off-pulse scatter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.rfi import robust_location_scale


@dataclass(frozen=True, slots=True)
class Fold:
    """A folded candidate."""

    period_s: float
    pdot: float
    dm: float
    profile: NDArray[np.float64]
    """``(nbins,)``: summed samples per phase bin, minus their mean."""
    subints: NDArray[np.float64]
    """``(nsub, nbins)``: the same per stretch of time (phase-time)."""
    chi2_r: float
    snr: float
    duty: float
    """The best boxcar's width as a fraction of a turn."""


def detrend(series: torch.Tensor, tsamp_s: float, window_s: float) -> torch.Tensor:
    """``(ndm, n)`` series less their running median over about ``window_s`` (medians of 9 block means
    of ``window_s / 8``, interpolated linearly), scaled to unit robust noise (a clipped standard deviation,
    :func:`cudalab.radio.rfi.robust_location_scale`): what the FFA and the folds fold."""
    ndm, n = series.shape
    step = max(1, int(window_s / tsamp_s) // 8)
    k = n // step
    if k < 2:  # shorter than two blocks: a constant baseline
        y = series - series.median(dim=-1, keepdim=True).values
    else:
        coarse = series[:, : k * step].reshape(ndm, k, step).mean(dim=-1)
        padded = torch.nn.functional.pad(coarse[:, None], (4, 4), mode="replicate")[:, 0]
        med = padded.unfold(-1, 9, 1).median(dim=-1).values  # (ndm, k)
        t = torch.arange(n, device=series.device, dtype=torch.float64)
        pos = ((t + 0.5) / step - 0.5).clamp(0, k - 1)
        i0 = pos.floor().long().clamp(max=k - 2)
        w = (pos - i0).to(series.dtype)
        y = series - (med[:, i0] * (1 - w) + med[:, i0 + 1] * w)
    loc, scale = robust_location_scale(y[:, :: max(1, n // 65536)])
    return (y - loc) / scale.clamp_min(1e-6)


def prepare(series: NDArray[np.floating], tsamp_s: float, window_s: float = 1.0) -> NDArray[np.float64]:
    """One series, :func:`detrend`-ed in float64: ready to fold."""
    x = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float64))[None]
    return detrend(x, tsamp_s, window_s)[0].numpy()


def fold(
    x: NDArray[np.float64],
    tsamp_s: float,
    period_s: float,
    pdot: float = 0.0,
    *,
    nbins: int = 64,
    nsub: int = 32,
    dm: float = 0.0,
) -> Fold:
    """Fold the prepared series ``x`` (unit noise) at ``period_s`` and ``pdot``."""
    nbins = max(8, min(nbins, int(period_s / tsamp_s)))
    t = np.arange(len(x)) * tsamp_s
    phase = t / period_s - 0.5 * pdot * t**2 / period_s**2
    b = (np.mod(phase, 1.0) * nbins).astype(np.int64) % nbins
    sub = np.minimum((np.arange(len(x)) * nsub) // len(x), nsub - 1)
    flat = sub * nbins + b
    sums = np.bincount(flat, weights=x, minlength=nsub * nbins).reshape(nsub, nbins)
    counts = np.bincount(flat, minlength=nsub * nbins).reshape(nsub, nbins).astype(np.float64)
    profile = sums.sum(axis=0)
    n = counts.sum(axis=0)
    chi2_r = float(np.sum((profile - n * x.mean()) ** 2 / np.maximum(n, 1)) / (nbins - 1))
    prof = profile / np.maximum(n, 1)  # mean per bin: unit noise / sqrt(n)
    snr, duty = _boxcar_snr(prof, n)
    sub_mean = sums / np.maximum(counts, 1)
    return Fold(period_s, pdot, dm, prof - prof.mean(), sub_mean - sub_mean.mean(axis=1, keepdims=True),
                chi2_r, snr, duty)  # fmt: skip


def _boxcar_snr(prof: NDArray[np.float64], n: NDArray[np.float64]) -> tuple[float, float]:
    """The best wrapped boxcar's S/N over the profile (means per bin with ``n`` samples each)."""
    nb = len(prof)
    weights = n / n.sum()
    base = float(np.sum(prof * weights))
    best, best_w = -np.inf, 1
    ext = np.concatenate([prof, prof])
    next_ = np.concatenate([n, n])
    csum = np.concatenate([[0.0], np.cumsum(ext * next_)])
    ccount = np.concatenate([[0.0], np.cumsum(next_)])
    for w in range(1, nb // 2 + 1):
        signal = csum[w : w + nb] - csum[:nb] - base * (ccount[w : w + nb] - ccount[:nb])
        s = signal / np.sqrt(ccount[w : w + nb] - ccount[:nb])
        i = int(np.argmax(s))
        if s[i] > best:
            best, best_w = float(s[i]), w
    return best, best_w / nb


def optimise(
    x: NDArray[np.float64],
    tsamp_s: float,
    period_s: float,
    *,
    nbins: int = 64,
    steps: int = 21,
    pdots: int = 1,
    pdot0: float = 0.0,
) -> Fold:
    """The fold of highest chi-square around ``period_s``: first over +- one Fourier bin (a turn of
    drift over the observation, where the spectrum left the period) with 16 phase bins, then over +-
    4 bins of drift at ``nbins`` and, when ``pdots > 1``, over period derivatives around ``pdot0``
    (an accelerated binary's: ``P a / c``)."""
    tobs = len(x) * tsamp_s
    coarse = period_s + np.linspace(-1, 1, 33) * period_s**2 / tobs
    period_s = float(max(coarse, key=lambda p: fold(x, tsamp_s, float(p), pdot0, nbins=16, nsub=4).chi2_r))
    nb = max(8, min(nbins, int(period_s / tsamp_s)))
    # a drift of 4 bins of at most 64 end to end, either side: the coarse step's reach, however fine
    # the final fold
    dp = period_s**2 / tobs * (2.0 / min(nb, 64)) * 2
    best: Fold | None = None
    pdot_span = period_s / tobs**2 * (4.0 / min(nb, 64)) * 2 if pdots > 1 else 0.0
    for pd in pdot0 + (np.linspace(-pdot_span, pdot_span, pdots) if pdots > 1 else np.zeros(1)):
        for p in period_s + np.linspace(-dp, dp, steps):
            f = fold(x, tsamp_s, float(p), float(pd), nbins=nbins, nsub=16)
            if best is None or f.chi2_r > best.chi2_r:
                best = f
    assert best is not None
    return fold(x, tsamp_s, best.period_s, best.pdot, nbins=nbins)


#: The S/N gain (of the ``sqrt(k)`` expected) that makes a fraction ``P / k`` the true period.
FRACTION_GAIN = 1.2


def true_period(
    x: NDArray[np.float64], tsamp_s: float, period_s: float, *, nbins: int = 64, pdot: float = 0.0
) -> float:
    """The candidate's period, or the multiple ``k P`` (k = 2 .. 8) whose fold shows one pulse where
    folding at ``P`` stacked ``k`` of them (a harmonic sum can peak at twice the spin frequency for a
    pulsar with a narrow pulse), or the fraction ``P / k`` when folding at ``P`` shows ``k`` equal
    pulses a ``k``-th of a turn apart (a fold at a multiple of the period, as the FFA's can be).
    Folding at ``k P`` splits the profile into ``k`` stretches; when one stretch holds the pulse, the
    others hold less than half of it, and the fold's S/N beats the fold at ``P``'s, the true period is
    ``k P``. Folding at ``P / k`` stacks the
    ``k`` pulses: when the best such fold's S/N exceeds :data:`FRACTION_GAIN` times the fold at
    ``P``'s, the true period is that ``P / k``."""
    each = max(8, min(nbins, int(period_s / tsamp_s)))
    # a fraction: folded at its true period P / k, a pulsar's k pulses of the fold at P stack into one,
    # so its S/N grows by about sqrt(k); folded at a fraction of its own period, it smears and falls
    base = fold(x, tsamp_s, period_s, pdot, nbins=each, nsub=1).snr
    fractions = {
        k: fold(
            x, tsamp_s, period_s / k, pdot / k, nbins=max(8, min(nbins, int(period_s / k / tsamp_s))), nsub=1
        ).snr
        for k in range(2, 9)
        if period_s / k >= 8 * tsamp_s
    }
    if fractions:
        k = max(fractions, key=lambda j: fractions[j])
        if fractions[k] > FRACTION_GAIN * base:
            return period_s / k
    for k in range(2, 9):
        f = fold(x, tsamp_s, k * period_s, k * pdot, nbins=k * each, nsub=8)
        profile = np.roll(f.profile, each // 2 - int(np.argmax(f.profile)))  # no pulse across stretches
        seg = profile[: len(profile) // k * k].reshape(k, -1)
        top = np.sort(seg.max(axis=1))[::-1]  # each stretch's peak, brightest first
        noise = np.median(np.abs(profile - np.median(profile))) * 1.4826
        # and its fold at k P is the brighter: a real pulse of period k P folded at P is stacked with
        # k - 1 empty turns (S/N down by about sqrt(k)); noise in a weak fold can pass the test alone
        if top[0] > 5 * noise and top[1] < 0.5 * top[0] and f.snr > base:
            return k * period_s
    return period_s


def baseline_window(period_s: float) -> float:
    """The running-median window (s) of :func:`prepare` for a candidate of ``period_s``: far slower than
    any pulse of it, even when its true period is a multiple up to 8 times longer."""
    return max(1.0, 24 * period_s)


def refine(
    x: NDArray[np.float64],
    tsamp_s: float,
    period_s: float,
    accel: float = 0.0,
    *,
    nbins: int = 64,
    pdots: int = 5,
) -> Fold:
    """A candidate's fold on the prepared series ``x``: its true period among its multiples and
    fractions (:func:`true_period`), then the period and derivative optimised (:func:`optimise`) from
    the derivative its acceleration implies, ``Pdot = P a / c``. The fold has at least ``nbins``
    bins, and more for a slow pulsar (:func:`fold_bins`)."""
    from cudalab.radio.periodic.search import C_M_S

    pdot = accel * period_s / C_M_S
    period = true_period(x, tsamp_s, period_s, nbins=nbins, pdot=pdot)
    bins = fold_bins(period, tsamp_s, nbins)
    return optimise(x, tsamp_s, period, nbins=bins, pdots=pdots, pdot0=pdot * period / period_s)


def fold_bins(period_s: float, tsamp_s: float, least: int = 64, most: int = 256) -> int:
    """Phase bins for a fold: ``least``, or for a slow pulsar the power of two that keeps at least four
    samples a bin, up to ``most`` (a 1 % pulse of a 5 s pulsar spans 2.6 bins of 256, not 0.6 of 64:
    the boxcar then measures it without a bin's dilution)."""
    wide = 2 ** math.floor(math.log2(max(period_s / tsamp_s / 4, 1.0)))
    return int(max(least, min(most, wide)))


__all__ = [
    "Fold",
    "baseline_window",
    "detrend",
    "fold",
    "fold_bins",
    "optimise",
    "prepare",
    "refine",
    "true_period",
]
