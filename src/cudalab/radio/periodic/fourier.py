"""The Fourier search for periodic signals: power spectra, red-noise removal, birdies, harmonic sums,
and the significance of a harmonic sum after the trials searched.

Every function takes a batch of time series (one per DM trial, shape ``(ndm, n)``) as a torch tensor,
so one call searches every trial on the GPU or the CPU.

Conventions
-----------
- **Power**: the spectrum of the mean-subtracted series at the Fourier frequencies ``k / T`` and, by
  interbinning (``X_{k+1/2} ~ pi/4 (X_k - X_{k+1})``, Ransom et al. 2002), at the half bins between
  them, which recovers most of the power a signal between two bins loses (down to 0.81 of it in the
  worst case rather than 0.41). The spectrum returned is on the half-bin grid, ``f = j / (2T)``.
- **Red noise** (PRESTO's ``rednoise``): each stretch of the spectrum is divided by its median over
  ``ln 2`` (the median of the unit exponential), in stretches that start at 6 bins and widen by 10 %
  a stretch up to 200 bins: after it, noise power is exponential with mean 1 at every frequency.
- **Harmonic sums**: ``S_h(f) = sum_{j=1..h} P(j f)`` for ``h`` in 1, 2, 4, 8, 16, 32, read at the
  nearest half bin. In noise, ``S_h`` follows a gamma distribution of shape ``h`` and scale 1.
- **Significance**: the chance probability of a sum at least ``S`` is ``p = Q(h, S)`` (the regularised
  upper incomplete gamma function); over ``N`` independent trials (frequencies searched x harmonic
  stages x acceleration trials, in one DM trial, as PRESTO's accelsearch counts) it is
  ``1 - (1 - p)^N ~ N p``; that is turned into the equivalent one-sided
  Gaussian ``sigma = -Phi^-1(N p)``, computed from ``log p`` so that it stays finite for very bright
  pulsars.
"""

from __future__ import annotations

import math

import numpy as np
import torch

HARMONICS = (1, 2, 4, 8, 16, 32)
"""The harmonic-sum stages searched (numbers of harmonics summed)."""


def power_spectrum(series: torch.Tensor) -> torch.Tensor:
    """Powers on the half-bin grid ``f = j / (2T)``, ``j = 0 .. n`` (float32, shape ``(ndm, n + 1)``
    for series of ``n`` samples, ``n`` even): even ``j`` are the Fourier bins, odd ``j`` interbinned."""
    x = series.float()
    x = x - x.mean(dim=-1, keepdim=True)
    spec = torch.fft.rfft(x, dim=-1)  # (ndm, n//2 + 1)
    power = spec.real.square() + spec.imag.square()
    half = (math.pi / 4) ** 2 * (spec[:, :-1] - spec[:, 1:]).abs().square()
    out = torch.empty((x.shape[0], 2 * spec.shape[1] - 1), dtype=torch.float32, device=x.device)
    out[:, 0::2] = power
    out[:, 1::2] = half
    return out


def red_noise_segments(nbins: int, start: int = 6, widest: int = 200) -> list[tuple[int, int]]:
    """The stretches (first, last + 1) of a spectrum of ``nbins`` bins that red-noise removal
    normalises one by one: 6 bins wide at the lowest frequencies, 10 % wider each, at most 200."""
    out, lo, width = [], 1, float(start)
    while lo < nbins:
        hi = min(nbins, lo + round(width))
        out.append((lo, hi))
        lo = hi
        width = min(widest, width * 1.1)
    return out


def whiten(power: torch.Tensor, start: int = 6, widest: int = 200) -> torch.Tensor:
    """Divide each stretch of the spectrum by its median / ln 2 (see the module); DC set to 0.

    The stretches are counted on the Fourier bins (a half-bin spectrum has twice as many entries).
    """
    out = torch.zeros_like(power)
    for lo, hi in red_noise_segments(power.shape[-1] // 2, start, widest):
        seg = power[:, 2 * lo : 2 * hi]
        median = seg[:, 0::2].median(dim=-1, keepdim=True).values.clamp_min(1e-30)  # Fourier bins only
        out[:, 2 * lo : 2 * hi] = seg * (math.log(2) / median)
    return out


def zap(power: torch.Tensor, tobs_s: float, birdies: list[tuple[float, float]]) -> torch.Tensor:
    """Zero the half bins within ``width`` Hz of each ``(frequency, width)`` birdie (mains hum, a
    known interferer), in place; returns ``power``."""
    df = 1.0 / (2 * tobs_s)
    for f, w in birdies:
        lo = max(0, math.floor((f - w) / df))
        hi = min(power.shape[-1], math.ceil((f + w) / df) + 1)
        power[:, lo:hi] = 0
    return power


def harmonic_sum(power: torch.Tensor, h: int) -> torch.Tensor:
    """``S_h`` at every fundamental half bin ``j`` whose ``h``-th harmonic is inside the spectrum:
    ``sum_{k=1..h} P[k j]`` (shape ``(ndm, (len - 1) // h + 1)``)."""
    n = (power.shape[-1] - 1) // h + 1
    idx = torch.arange(n, device=power.device)
    total = power[:, idx].clone()
    for k in range(2, h + 1):
        total += power[:, idx * k]
    return total


def log_chance(total: np.ndarray, h: int) -> np.ndarray:
    """``log Q(h, S)``: the log of the chance that noise gives a sum of ``h`` powers at least ``S``."""
    from scipy import stats
    from scipy.special import gammaln

    x = np.asarray(total, dtype=np.float64)
    with np.errstate(divide="ignore"):
        exact = np.asarray(stats.gamma.logsf(x, h), dtype=np.float64)
    # far in the tail gammaincc underflows: Q(h, x) ~ x^(h-1) e^-x / Gamma(h) (1 + (h-1)/x + (h-1)(h-2)/x^2)
    safe = np.maximum(x, 1.0)
    series = 1 + (h - 1) / safe + (h - 1) * (h - 2) / safe**2
    tail = (h - 1) * np.log(safe) - safe - gammaln(h) + np.log(np.maximum(series, 1e-300))
    return np.where(np.isfinite(exact) & (exact > -600), exact, tail)


def sigma_of(total: np.ndarray | float, h: int, trials: float) -> np.ndarray:
    """The Gaussian-equivalent significance of harmonic sums ``total`` after ``trials`` trials."""
    from scipy.special import ndtri_exp

    logp = log_chance(np.asarray(total, dtype=np.float64), h) + math.log(max(trials, 1.0))
    logp = np.minimum(logp, math.log(0.5))  # no worse than chance: sigma >= 0
    return -np.asarray(ndtri_exp(logp))


__all__ = [
    "HARMONICS",
    "harmonic_sum",
    "log_chance",
    "power_spectrum",
    "red_noise_segments",
    "sigma_of",
    "whiten",
    "zap",
]
