"""Periodicity candidates from dedispersed time series, and sifting them into a list of pulsars.

:func:`fourier_candidates` runs the Fourier search of :mod:`cudalab.radio.periodic.fourier` on every
DM trial at once and keeps, per trial and harmonic stage, the local maxima of the harmonic sum above
``sigma``. :func:`sift` then applies PRESTO's sifting rules (``sifting.py``), written down here:

1. **Same signal**: candidates whose fundamental frequencies agree within ``freq_tol_bins`` Fourier
   bins (``1/T``) are one signal; the most significant stays, with every DM it was seen at.
2. **Harmonics**: a candidate whose frequency is ``a/b`` times a more significant one's, within the
   tolerance on each (``tol (1 + a/b)``), is that one's harmonic and is merged into it. The ratios
   are PRESTO's: ``n`` and ``1/n`` for ``n <= 16``, and ``a/b`` with ``2 <= a, b <= 5``. (Every
   ``a/b`` with ``a, b <= 16`` merged nearly anything below 16 times a slow signal's frequency:
   those ratios lie closer together than the tolerance.)
3. **DM**: for a filterbank (several DM trials), a signal seen at fewer than ``min_dm_hits`` DM trials
   is dropped (a real pulsar's significance falls off smoothly on both sides of its DM), and so is
   one whose best DM is below ``min_dm`` (terrestrial interference is undispersed).
4. **Period range**: frequencies outside ``[f_min, f_max]`` are never candidates (below ``f_min`` the
   red noise is too strong; ``f_max`` is half the sampling rate by default).

:func:`ffa_candidates` adds the fast folding algorithm's (:mod:`cudalab.radio.periodic.ffa`) for
periods from ``ffa_period_min_s`` to ``ffa_period_max_s``, where folding coherently beats summing
harmonics: its peaks, with the same kind of trials-corrected significance, go through the same
sifting, so a pulsar both searches find is one candidate (the more significant detection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from cudalab.radio.periodic.ffa import FfaConfig, Periodogram, peaks, periodogram
from cudalab.radio.periodic.fold import detrend
from cudalab.radio.periodic.fourier import HARMONICS, harmonic_sum, power_spectrum, sigma_of, whiten, zap


@dataclass(frozen=True, slots=True)
class PeriodicConfig:
    """The Fourier search and sifting settings."""

    sigma: float = 4.0
    """Keep harmonic sums at least this significant after the trials correction of one DM trial
    (PRESTO's sifting default; noise reaches it about once in 30,000 searches of a trial, and the
    sifting's DM rules and the folds judge what passes)."""
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
    ffa_period_min_s: float | None = None
    """Shortest period the FFA folds, s; 0: no FFA search; None: :data:`FFA_PERIOD_MIN_S` for a time
    series, none for a filterbank (:func:`ffa_period_min`)."""
    ffa_period_max_s: float = 10.0
    """Longest (at most a sixth of the observation)."""
    ffa_snr: float = 7.0
    """FFA periodogram peaks from this S/N (before the trials correction) are candidates."""


#: The FFA's shortest period when it searches by default (dedispersed time series).
FFA_PERIOD_MIN_S = 0.1


def ffa_period_min(cfg: PeriodicConfig, time_series: bool) -> float:
    """The FFA's shortest period for ``cfg`` (0: no FFA). By default it searches time series (one
    DM trial, riptide's use) and not filterbanks: over many DM trials of a busy observation it also
    folds intermittent interference at long periods, which its single-pulse vetting
    (:func:`brightest_turn`) does not catch; ``--ffa-min`` turns it on there."""
    if cfg.ffa_period_min_s is not None:
        return cfg.ffa_period_min_s
    return FFA_PERIOD_MIN_S if time_series else 0.0


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
    search: str = "fourier"
    """Which search found it: ``fourier`` (``power`` is the harmonic sum) or ``ffa`` (``power`` is the
    FFA periodogram's S/N, ``harmonics`` 0)."""

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
    # independent trials within one DM trial (PRESTO's accelsearch counts so): Fourier bins (not half
    # bins) searched, times stages and acceleration trials. Across DM trials, the sifting's rules
    # (seen at min_dm_hits trials, peaking at a DM of min_dm or more) guard against noise instead:
    # neighbouring trials' noise is nearly the same series, so ndm would overstate the independent
    # tests, and over 299 trials it cost a fold S/N of about 1.5 (pulsars at 10.6-11.2 were lost).
    trials = (f_max - cfg.f_min) * tobs * len(cfg.harmonics) * n_accel
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


def ffa_candidates(
    series: torch.Tensor, tsamp_s: float, dms: np.ndarray, cfg: PeriodicConfig, sweep_s_per_dm: float = 0.0
) -> list[PeriodCandidate]:
    """The FFA's candidates of every DM trial (``series``: ``(ndm, n)``; see the module), at most
    ``per_trial`` per trial.

    ``sweep_s_per_dm``: the band's dispersion sweep per unit DM, 0 for a time series (which the FFA
    searches by default, :func:`ffa_period_min`). A long period tolerates a coarse DM grid: over a
    band, trials are taken a hundredth of the shortest period of sweep apart (a millisecond at 0.1 s:
    a DM off by half a step smears a 1 % pulse by half its width).

    Before its periodogram is trusted, each trial's series loses the single pulses that a fold owed
    to one turn (:func:`brightest_turn`).
    """
    from scipy.special import log_ndtr, ndtri_exp

    period_min = ffa_period_min(cfg, time_series=sweep_s_per_dm <= 0)
    if period_min <= 0:
        return []
    ndm, n = series.shape
    tobs = n * tsamp_s
    fcfg = FfaConfig(period_min_s=period_min, period_max_s=cfg.ffa_period_max_s, snr_min=cfg.ffa_snr)
    keep = np.arange(ndm)
    if sweep_s_per_dm > 0 and ndm > 2:
        step = period_min / 100 / sweep_s_per_dm  # DM units
        chosen, last = [0], float(dms[0])
        for i in range(1, ndm):
            if dms[i] - last >= step:
                chosen.append(i)
                last = float(dms[i])
        keep = np.array(sorted(set(chosen) | {ndm - 1}))
    window = max(1.0, 0.5 * min(cfg.ffa_period_max_s, tobs / 6))
    x = detrend(series[torch.from_numpy(keep).to(series.device)], tsamp_s, window)
    pg = periodogram(x, tsamp_s, fcfg)
    for d in range(len(keep)):
        pg = _without_folded_bursts(x, d, pg, tsamp_s, fcfg)
    log_trials = math.log(max(pg.trials, 1.0))
    out = []
    for d, i in peaks(pg, fcfg.snr_min, tobs, cfg.per_trial):
        # S/N ffa_snr is the threshold: white noise's highest peak over ~1e6 folds is about 6 (so no
        # sigma cut on top, which would ask for 7.3); the trials-corrected sigma ranks it
        snr = float(pg.snr[d, i])
        sigma = -float(ndtri_exp(min(float(log_ndtr(-snr)) + log_trials, math.log(0.5))))
        j = int(keep[d])
        out.append(
            PeriodCandidate(1.0 / float(pg.periods_s[i]), float(dms[j]), sigma, snr, 0, j, search="ffa")
        )
    return out


def candidates(
    series: torch.Tensor, tsamp_s: float, dms: np.ndarray, cfg: PeriodicConfig, sweep_s_per_dm: float = 0.0
) -> tuple[list[PeriodCandidate], int, int]:
    """The search of ``series`` (``(ndm, n)``): the Fourier search's and the FFA's candidates, sifted
    together; returns ``(sifted, Fourier candidates, FFA candidates)``. ``sweep_s_per_dm`` as for
    :func:`ffa_candidates` (0: a time series)."""
    fourier = fourier_candidates(series, tsamp_s, dms, cfg)
    ffa = ffa_candidates(series, tsamp_s, dms, cfg, sweep_s_per_dm)
    n = series.shape[1] - series.shape[1] % 2
    return sift(fourier + ffa, n * tsamp_s, len(dms), cfg), len(fourier), len(ffa)


#: Bursts taken out of one DM trial's series before its periodogram is trusted (each costs a new one).
MAX_BURSTS = 4


def _without_folded_bursts(
    x: torch.Tensor, d: int, pg: Periodogram, tsamp_s: float, cfg: FfaConfig
) -> Periodogram:
    """The periodogram with row ``d`` recomputed after zeroing, in ``x``, each single pulse that its
    best peak owed to one turn (:func:`brightest_turn`), up to :data:`MAX_BURSTS` of them."""
    for _ in range(MAX_BURSTS):
        i = int(np.argmax(pg.snr[d]))
        if pg.snr[d, i] < cfg.snr_min:
            break
        duty = int(pg.width_bins[d, i]) / int(pg.bins[i])
        left, lo, hi = brightest_turn(x[d].cpu().numpy(), tsamp_s, float(pg.periods_s[i]), duty)
        if left >= 0.5:  # a pulsar: most of its S/N is in the other turns
            break
        x[d, lo:hi] = 0.0
        row = periodogram(x[d : d + 1], tsamp_s, cfg)
        pg.snr[d], pg.width_bins[d] = row.snr[0], row.width_bins[0]
    return pg


def brightest_turn(x: np.ndarray, tsamp_s: float, period_s: float, duty: float) -> tuple[float, int, int]:
    """How much of a fold's S/N is left without its brightest turn, and where that turn's pulse is.

    Folded over ``m`` turns, one bright burst keeps ``S/N / sqrt(m)`` at every period, so at long
    periods (few turns) the FFA finds it everywhere. The on-pulse window (the best wrapped boxcar of
    ``duty`` of a turn) is summed turn by turn: without its brightest turn a pulsar keeps most of its
    S/N (its sum falls by about ``1/m``), a folded single pulse only noise. Returns ``(the S/N left,
    as a fraction; first sample; end sample)``, the samples being the brightest boxcar within that
    turn's window, widened by its own length on each side.
    """
    n = len(x)
    nbins = max(8, min(1024, int(period_s / tsamp_s)))
    t = np.arange(n) * tsamp_s
    turn = (t // period_s).astype(np.int64)
    phase_bin = np.minimum((np.mod(t / period_s, 1.0) * nbins).astype(np.int64), nbins - 1)
    profile = np.bincount(phase_bin, weights=x, minlength=nbins)
    w = max(1, round(duty * nbins))
    c = np.concatenate([[0.0], np.cumsum(np.concatenate([profile, profile[:w]]))])
    start = int(np.argmax(c[w : w + nbins] - c[:nbins]))
    on = ((phase_bin - start) % nbins) < w
    per_turn = np.bincount(turn[on], weights=x[on])
    counts = np.bincount(turn[on])
    total, samples = float(per_turn.sum()), int(counts.sum())
    k = int(np.argmax(per_turn))
    where = np.flatnonzero(on & (turn == k))
    if total <= 0 or len(where) == 0:
        return 1.0, 0, 0
    rest = (total - per_turn[k]) / math.sqrt(max(samples - counts[k], 1))
    # the pulse within that turn's window: its brightest boxcar (widths 1, 2, 4, ...), widened by its
    # own length on each side, so a short burst in a wide window costs only its own samples
    seg = x[where[0] : where[-1] + 1]
    c = np.concatenate([[0.0], np.cumsum(seg)])
    best, lo, hi = -np.inf, int(where[0]), int(where[-1]) + 1
    w = 1
    while w <= len(seg):
        snr = (c[w:] - c[:-w]) / math.sqrt(w)
        j = int(np.argmax(snr))
        if snr[j] > best:
            best, lo, hi = float(snr[j]), int(where[0]) + j, int(where[0]) + j + w
        w *= 2
    width = hi - lo
    return float(rest / (total / math.sqrt(samples))), max(0, lo - width), min(n, hi + width)


def _power_threshold(h: int, trials: float, sigma: float) -> float:
    """The harmonic sum of ``h`` powers that reaches ``sigma`` after ``trials`` trials."""
    from scipy import stats

    p = stats.norm.sf(sigma) / max(trials, 1.0)
    return float(stats.gamma.isf(p, h)) if p > 0 else float("inf")


#: The frequency ratios ``p/q`` that make one candidate another's harmonic (PRESTO's sifting): every
#: ``n`` and ``1/n`` to 16, and the fractions of 2 to 5 (small denominators first).
HARMONIC_RATIOS: tuple[tuple[int, int], ...] = tuple(
    (p, q)
    for q in range(1, 17)
    for p in range(1, 17)
    if math.gcd(p, q) == 1 and (p == 1 or q == 1 or max(p, q) <= 5)
)


def _ratio(a: float, b: float, tol: float) -> tuple[int, int] | None:
    """``(p, q)`` of :data:`HARMONIC_RATIOS` with ``a ~ b p / q``, within ``tol`` Hz on each frequency:
    ``|a - b p/q| <= tol (1 + p/q)``."""
    for p, q in HARMONIC_RATIOS:
        if abs(a - b * p / q) <= tol * (1 + p / q):
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


__all__ = [
    "PeriodCandidate",
    "PeriodicConfig",
    "brightest_turn",
    "candidates",
    "ffa_candidates",
    "fourier_candidates",
    "sift",
]
