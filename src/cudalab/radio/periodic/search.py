"""Periodicity candidates from dedispersed time series, and sifting them into a list of pulsars.

:func:`fourier_candidates` runs the Fourier search of :mod:`cudalab.radio.periodic.fourier` on every
DM trial at once and keeps, per trial and harmonic stage, the local maxima of the harmonic sum above
``sigma``. :func:`sift` then applies PRESTO's sifting rules (``sifting.py``), written down here:

1. **Same signal**: candidates whose fundamental frequencies agree within ``freq_tol_bins`` Fourier
   bins (``1/T``) are one signal; the most significant stays, with every DM it was seen at.
2. **Harmonics**: a candidate whose frequency is ``a/b`` times a more significant one's (``a, b <=
   16``), within the same tolerance scaled by ``b``, is that one's harmonic and is merged into it.
3. **DM**: for a filterbank (several DM trials), a signal seen at fewer than ``min_dm_hits`` DM trials
   is dropped (a real pulsar's significance falls off smoothly on both sides of its DM), and so is
   one whose best DM is below ``min_dm`` (terrestrial interference is undispersed).
4. **Period range**: frequencies outside ``[f_min, f_max]`` are never candidates (below ``f_min`` the
   red noise is too strong; ``f_max`` is half the sampling rate by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from cudalab.radio.periodic.fourier import HARMONICS, harmonic_sum, power_spectrum, sigma_of, whiten, zap


@dataclass(frozen=True, slots=True)
class PeriodicConfig:
    """The Fourier search and sifting settings."""

    sigma: float = 6.0
    """Keep harmonic sums at least this significant after the trials correction."""
    harmonics: tuple[int, ...] = HARMONICS
    f_min: float = 0.5
    """Lowest frequency searched, Hz (periods up to 2 s)."""
    f_max: float = 0.0
    """Highest frequency, Hz; 0: 99.5 % of the Nyquist frequency (whose bin holds sample-to-sample
    alternations of the digitiser, not pulsars)."""
    per_trial: int = 32
    """Candidates kept per DM trial and harmonic stage (the strongest)."""
    freq_tol_bins: float = 2.0
    min_dm_hits: int = 2
    min_dm: float = 2.0
    birdies: tuple[tuple[float, float], ...] = ()
    """(frequency, half-width) in Hz to zero before searching."""
    accel_max: float = 0.0
    """Line-of-sight accelerations searched, +- m/s^2 (binary pulsars); 0: none."""
    accel_ref_hz: float = 500.0
    """The acceleration step drifts a signal at this frequency by one Fourier bin over the
    observation: ``c / (accel_ref_hz T^2)``."""
    accel_trials_max: int = 201


@dataclass(frozen=True, slots=True)
class PeriodCandidate:
    """One periodic signal: its best detection and where else it was seen."""

    freq_hz: float
    dm: float
    sigma: float
    power: float
    """The harmonic sum (noise: mean ``harmonics``)."""
    harmonics: int
    dm_index: int
    dms: tuple[float, ...] = ()
    """Every DM trial it was detected at."""
    related: tuple[float, ...] = field(default=())
    """Frequencies of the harmonics merged into it."""
    accel: float = 0.0
    """The line-of-sight acceleration it was best seen at, m/s^2."""

    @property
    def period_s(self) -> float:
        return 1.0 / self.freq_hz


C_M_S = 299_792_458.0


def accel_trials(tobs_s: float, cfg: PeriodicConfig) -> np.ndarray:
    """The accelerations searched (m/s^2): 0 alone, or a symmetric grid of step ``c / (f_ref T^2)``
    (a signal at ``f_ref`` drifts by one Fourier bin between trials) up to ``accel_max``, at most
    ``accel_trials_max`` trials (the step widens to fit)."""
    if cfg.accel_max <= 0:
        return np.zeros(1)
    step = C_M_S / (cfg.accel_ref_hz * tobs_s**2)
    half = min(math.ceil(cfg.accel_max / step), (cfg.accel_trials_max - 1) // 2)
    return np.linspace(-cfg.accel_max, cfg.accel_max, 2 * half + 1) if half else np.zeros(1)


def resample(series: torch.Tensor, tsamp_s: float, accel: float) -> torch.Tensor:
    """The series as seen from a frame without the line-of-sight acceleration ``accel``: sample ``i``
    of the result is the input at ``t_i + accel t_i^2 / (2 c)`` (linear interpolation), so a pulse
    train whose arrival times drift by that amount becomes strictly periodic again (time-domain
    resampling, as in PRESTO's and presto-on-GPU searches of globular clusters; exact for a constant
    acceleration, which a short observation of a binary sees)."""
    if accel == 0:
        return series
    n = series.shape[-1]
    t = torch.arange(n, dtype=torch.float64, device=series.device) * tsamp_s
    src = (t + accel * t**2 / (2 * C_M_S)) / tsamp_s
    src = src.clamp(0, n - 1.000001)
    i0 = src.floor().long()
    w = (src - i0).to(series.dtype)
    return series[..., i0] * (1 - w) + series[..., i0 + 1] * w


def fourier_candidates(
    series: torch.Tensor, tsamp_s: float, dms: np.ndarray, cfg: PeriodicConfig
) -> list[PeriodCandidate]:
    """The candidates of every DM trial and acceleration (``series``: ``(ndm, n)``; see the module)."""
    accels = accel_trials(series.shape[-1] * tsamp_s, cfg)
    out: list[PeriodCandidate] = []
    for a in accels:
        found = _fourier_candidates(resample(series, tsamp_s, float(a)), tsamp_s, dms, cfg, len(accels))
        out += [replace(c, accel=float(a)) for c in found]
    return out


def _fourier_candidates(
    series: torch.Tensor, tsamp_s: float, dms: np.ndarray, cfg: PeriodicConfig, n_accel: int
) -> list[PeriodCandidate]:
    ndm, n = series.shape
    n -= n % 2
    tobs = n * tsamp_s
    power = whiten(power_spectrum(series[:, :n]))
    if cfg.birdies:
        zap(power, tobs, list(cfg.birdies))
    df = 1.0 / (2 * tobs)  # the half-bin grid
    f_max = cfg.f_max or 0.995 * 0.5 / tsamp_s  # the Nyquist bin holds digitisation's alternations
    lo = max(1, math.ceil(cfg.f_min / df))
    # independent trials: Fourier bins (not half bins) searched, times stages, DM and acceleration trials
    trials = (f_max - cfg.f_min) * tobs * len(cfg.harmonics) * ndm * n_accel
    out: list[PeriodCandidate] = []
    for h in cfg.harmonics:
        total = harmonic_sum(power, h)
        hi = min(total.shape[-1] - 1, math.floor(f_max / df))
        if hi <= lo + 2:
            continue
        seg = total[:, lo : hi + 1]
        peak = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] > seg[:, 2:])
        values = torch.where(peak, seg[:, 1:-1], torch.zeros_like(seg[:, 1:-1]))
        # the threshold in power for this stage: invert sigma with a quick scan of the survival function
        threshold = _power_threshold(h, trials, cfg.sigma)
        k = min(cfg.per_trial, values.shape[-1])
        top, where = values.topk(k, dim=-1)
        top_np, where_np = top.cpu().numpy(), where.cpu().numpy()
        for d in range(ndm):
            keep = top_np[d] >= threshold
            if not keep.any():
                continue
            sig = sigma_of(top_np[d][keep], h, trials)
            for s_val, p_val, j in zip(sig, top_np[d][keep], where_np[d][keep], strict=True):
                freq = (lo + 1 + int(j)) * df
                out.append(PeriodCandidate(freq, float(dms[d]), float(s_val), float(p_val), h, d))
    return out


def _power_threshold(h: int, trials: float, sigma: float) -> float:
    """The harmonic sum of ``h`` powers that reaches ``sigma`` after ``trials`` trials."""
    from scipy import stats

    p = stats.norm.sf(sigma) / max(trials, 1.0)
    return float(stats.gamma.isf(p, h)) if p > 0 else float("inf")


def _ratio(a: float, b: float, tol: float, max_int: int = 16) -> tuple[int, int] | None:
    """``(p, q)`` with ``a ~ b p / q`` (small integers first), within ``tol`` Hz on each frequency:
    ``|a - b p/q| <= tol (1 + p/q)``."""
    for q in range(1, max_int + 1):
        for p in range(1, max_int + 1):
            if math.gcd(p, q) == 1 and abs(a - b * p / q) <= tol * (1 + p / q):
                return p, q
    return None


def sift(cands: list[PeriodCandidate], tobs_s: float, ndm: int, cfg: PeriodicConfig) -> list[PeriodCandidate]:
    """Merge repeats, drop what the DM rules reject, then merge harmonics (rules in the module), in
    that order: an undispersed interferer must not take a pulsar in as its harmonic."""
    tol = cfg.freq_tol_bins / tobs_s
    groups: list[tuple[PeriodCandidate, set[float]]] = []
    for c in sorted(cands, key=lambda c: -c.sigma):
        for k, hits in groups:
            # the same signal: within the tolerance, widened by the drift between their accelerations
            drift = abs(c.accel - k.accel) * k.freq_hz * tobs_s / C_M_S
            if abs(c.freq_hz - k.freq_hz) <= tol + drift:
                hits.add(c.dm)
                break
        else:
            groups.append((c, {c.dm}))
    if ndm > 1:
        groups = [(k, h) for k, h in groups if len(h) >= cfg.min_dm_hits and k.dm >= cfg.min_dm]
    kept: list[tuple[PeriodCandidate, set[float], list[float]]] = []
    for c, hits in groups:
        for k, _, related in kept:
            if _ratio(c.freq_hz, k.freq_hz, tol) is not None:
                related.append(c.freq_hz)
                break
        else:
            kept.append((c, hits, []))
    return [replace(k, dms=tuple(sorted(h)), related=tuple(sorted(set(r)))) for k, h, r in kept]


__all__ = ["PeriodCandidate", "PeriodicConfig", "fourier_candidates", "sift"]
