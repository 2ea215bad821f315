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
    ffa_period_min_s: float = 0.1
    """Shortest period the FFA folds, s (0: no FFA search); below it the Fourier search serves."""
    ffa_period_max_s: float = 10.0
    """Longest (at most a sixth of the observation)."""
    ffa_snr: float = 7.0
    """FFA periodogram peaks from this S/N (before the trials correction) are candidates."""


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


#: The FFA's DM trials are at most this fraction of a band's shortest period of sweep apart: a DM off by
#: half a step smears a 1 % pulse by half its width.
FFA_DM_STEP_DUTY = 0.01


def ffa_dm_step(period_s: float, cfg: PeriodicConfig, sweep_s_per_dm: float) -> float:
    """How far apart the FFA's DM trials are at ``period_s`` (the band holding it; see
    :func:`ffa_candidates`)."""
    lo = cfg.ffa_period_min_s * 2 ** max(0, math.floor(math.log2(period_s / cfg.ffa_period_min_s)))
    return FFA_DM_STEP_DUTY * lo / sweep_s_per_dm


def _decimated(dms: np.ndarray, step: float) -> np.ndarray:
    """Indices of ``dms`` (ascending) at least ``step`` apart, taken greedily from the first; the last
    always kept."""
    chosen, last = [0], float(dms[0])
    for i in range(1, len(dms)):
        if dms[i] - last >= step:
            chosen.append(i)
            last = float(dms[i])
    return np.array(sorted(set(chosen) | {len(dms) - 1}))


def _octaves(lo: float, hi: float) -> list[tuple[float, float]]:
    """``[lo, hi]`` cut into period bands of a factor of two (the last shorter)."""
    out = []
    while lo < hi:
        out.append((lo, min(2 * lo, hi)))
        lo *= 2
    return out


def dispersed_snr_ratio(channel_delays_s: np.ndarray, dm_offset: float, width_s: float) -> float:
    """The S/N of a ``width_s`` top-hat pulse dedispersed ``dm_offset`` away from its DM, over its S/N at
    its DM, each measured with its best boxcar: the pulse arrives in channel ``c`` ``dm_offset *
    channel_delays_s[c]`` late, so the sum is the pulse smeared by that spread of delays (denser where
    the delays crowd, at the band's top). Exact for equal channels of equal noise."""
    spread = np.abs(dm_offset) * np.asarray(channel_delays_s, dtype=np.float64)
    span = float(spread.max() - spread.min()) + width_s
    if span <= width_s * 1.001:
        return 1.0
    grid = 512
    dt = span / grid
    # the smeared profile on a fine grid: each channel's top-hat from its delay, as exact overlaps
    edges = np.arange(grid + 1) * dt
    start = spread - spread.min()
    cover = np.clip(
        np.minimum(edges[None, 1:], start[:, None] + width_s) - np.maximum(edges[None, :-1], start[:, None]),
        0,
        None,
    )
    profile = cover.sum(axis=0) / (len(spread) * width_s)  # fraction of the fluence in each grid bin
    c = np.concatenate([[0.0], np.cumsum(profile)])
    best = 0.0
    w = max(1, int(width_s / dt))
    while True:
        captured = float((c[w:] - c[:-w]).max())
        best = max(best, captured * math.sqrt(width_s / (w * dt)))
        if w >= grid:
            break
        w = min(grid, max(w + 1, int(w * 1.2)))
    return min(1.0, best)


#: Low-DM S/N above what a dispersed pulse keeps there, by more than this, marks interference.
UNDISPERSED_MARGIN = 3.0


def ffa_candidates(
    series: torch.Tensor,
    tsamp_s: float,
    dms: np.ndarray,
    cfg: PeriodicConfig,
    channel_delays_s: np.ndarray | None = None,
) -> list[PeriodCandidate]:
    """The FFA's candidates of every DM trial (``series``: ``(ndm, n)``; see the module), at most
    ``per_trial`` per trial and period band.

    ``channel_delays_s``: each channel's dispersion delay per unit DM (a filterbank), None for a time
    series. For a filterbank:

    - a long period tolerates a coarse DM grid: the periods are searched in octave bands, each on DM
      trials :data:`FFA_DM_STEP_DUTY` of the band's shortest period of sweep apart (a millisecond of
      sweep at 0.1 s, 16 ms at 1.6 s), so the slow bands cost a fraction of the fast one;
    - a candidate whose S/N at the lowest DM trial is more than :data:`UNDISPERSED_MARGIN` above what
      its pulse, dispersed to its DM, keeps there (:func:`dispersed_snr_ratio`) is interference: a
      narrowband or undispersed signal keeps its S/N at every DM, a pulsar's falls off towards 0.

    Before its periodogram is trusted, each trial's series loses the single pulses that stand out of
    its folds turn by turn (:func:`outlier_turns`).
    """
    from scipy.special import log_ndtr, ndtri_exp

    filterbank = channel_delays_s is not None
    delays = np.zeros(1) if channel_delays_s is None else np.asarray(channel_delays_s, dtype=np.float64)
    period_min = cfg.ffa_period_min_s
    if period_min <= 0:
        return []
    ndm, n = series.shape
    tobs = n * tsamp_s
    period_max = min(cfg.ffa_period_max_s, tobs / 6)
    sweep = float(np.ptp(delays))
    base = _decimated(dms, FFA_DM_STEP_DUTY * period_min / sweep) if sweep > 0 and ndm > 2 else np.arange(ndm)
    window = max(1.0, 0.5 * period_max)
    x = detrend(series[torch.from_numpy(base).to(series.device)], tsamp_s, window)
    bands = []
    for lo, hi in _octaves(period_min, period_max):
        rows = np.arange(len(base))
        if sweep > 0 and len(base) > 2:
            rows = _decimated(dms[base], FFA_DM_STEP_DUTY * lo / sweep)
        fcfg = FfaConfig(period_min_s=lo, period_max_s=hi, snr_min=cfg.ffa_snr)
        xb = x[torch.from_numpy(rows).to(x.device)]
        pg = _without_folded_bursts(xb, periodogram(xb, tsamp_s, fcfg), tsamp_s, fcfg)
        bands.append((base[rows], pg))
    log_trials = math.log(max(sum(pg.trials for _, pg in bands), 1.0))
    out = []
    for index, pg in bands:
        for d, i in peaks(pg, cfg.ffa_snr, tobs, cfg.per_trial):
            snr = float(pg.snr[d, i])
            if filterbank and d > 0:
                width_s = int(pg.width_bins[d, i]) / int(pg.bins[i]) * float(pg.periods_s[i])
                period = float(pg.periods_s[i])
                near = max(width_s, period / int(pg.bins[i])) * period / tobs  # a pulse width of drift
                a, b = np.searchsorted(pg.periods_s, [period - near, period + near], side="left")
                low = float(pg.snr[0, a : max(b, a + 1)].max())
                keeps = dispersed_snr_ratio(delays, float(dms[index[d]] - dms[index[0]]), width_s)
                if low > keeps * snr + UNDISPERSED_MARGIN:
                    continue
            # S/N ffa_snr is the threshold: white noise's highest peak over ~1e6 folds is about 6 (so no
            # sigma cut on top, which would ask for 7.3); the trials-corrected sigma ranks it
            sigma = -float(ndtri_exp(min(float(log_ndtr(-snr)) + log_trials, math.log(0.5))))
            j = int(index[d])
            out.append(
                PeriodCandidate(1.0 / float(pg.periods_s[i]), float(dms[j]), sigma, snr, 0, j, search="ffa")
            )
    return out


def candidates(
    series: torch.Tensor,
    tsamp_s: float,
    dms: np.ndarray,
    cfg: PeriodicConfig,
    channel_delays_s: np.ndarray | None = None,
) -> tuple[list[PeriodCandidate], int, int]:
    """The search of ``series`` (``(ndm, n)``): the Fourier search's and the FFA's candidates, sifted
    together; returns ``(sifted, Fourier candidates, FFA candidates)``. ``channel_delays_s`` as for
    :func:`ffa_candidates` (None: a time series)."""
    fourier = fourier_candidates(series, tsamp_s, dms, cfg)
    ffa = ffa_candidates(series, tsamp_s, dms, cfg, channel_delays_s)
    n = series.shape[1] - series.shape[1] % 2
    return sift(fourier + ffa, n * tsamp_s, len(dms), cfg), len(fourier), len(ffa)


#: Single pulses taken out of one DM trial's series before its periodogram is trusted (each round
#: recomputes the periodogram of the trials that lost one).
MAX_BURSTS = 8

#: A turn whose on-pulse sum stands this many sigma above what the brightest of a steady pulsar's
#: turns would is a single pulse, not part of a periodic signal.
TURN_OUTLIER_SIGMA = 3.0


def _without_folded_bursts(x: torch.Tensor, pg: Periodogram, tsamp_s: float, cfg: FfaConfig) -> Periodogram:
    """The periodogram with the rows of ``x`` recomputed after zeroing, in ``x``, the single pulses that
    stand out of their best peak's fold (:func:`outlier_turns`), for at most :data:`MAX_BURSTS` rounds;
    the rows that lost some in a round are recomputed together."""
    for _ in range(MAX_BURSTS):
        hit = []
        for d in range(x.shape[0]):
            i = int(np.argmax(pg.snr[d]))
            if pg.snr[d, i] < cfg.snr_min:
                continue
            duty = int(pg.width_bins[d, i]) / int(pg.bins[i])
            spans = outlier_turns(x[d].cpu().numpy(), tsamp_s, float(pg.periods_s[i]), duty)
            for lo, hi in spans:
                x[d, lo:hi] = 0.0
            if spans:
                hit.append(d)
        if not hit:
            break
        rows = periodogram(x[torch.tensor(hit, device=x.device)], tsamp_s, cfg)
        pg.snr[hit], pg.width_bins[hit] = rows.snr, rows.width_bins
    return pg


def turn_excess(x: np.ndarray, tsamp_s: float, period_s: float, duty: float) -> tuple[np.ndarray, np.ndarray]:
    """Each turn's on-pulse sum in a fold, as sigmas above what a steady pulsar's brightest turn would
    reach, and the on-pulse samples of each turn.

    Folded over ``m`` turns, one bright burst keeps ``S/N / sqrt(m)`` at every period, so at long
    periods (few turns) the FFA finds it everywhere, and two or three bursts line up at many periods.
    The on-pulse window (the best wrapped boxcar of ``duty`` of a turn) is summed turn by turn. A steady
    pulsar's sums scatter about their median by the noise (the square root of the samples summed), so
    its brightest is about ``sqrt(2 ln m)`` sigma above the median; a burst stands far above. Returns
    ``(excess, turn)``: per turn ``(sum / sqrt(samples) - median) - sqrt(2 ln m)`` (``-inf`` for a turn
    with no on-pulse sample), and the turn of every sample that is on-pulse (-1 elsewhere).
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
    per_turn = np.bincount(turn[on], weights=x[on], minlength=int(turn[-1]) + 1)
    counts = np.bincount(turn[on], minlength=int(turn[-1]) + 1)
    full = counts > 0
    excess = np.full(len(counts), -np.inf)
    if full.sum() >= 2:
        z = per_turn[full] / np.sqrt(counts[full])
        excess[full] = z - np.median(z) - math.sqrt(2 * math.log(full.sum()))
    return excess, np.where(on, turn, -1)


def outlier_turns(x: np.ndarray, tsamp_s: float, period_s: float, duty: float) -> list[tuple[int, int]]:
    """The single pulses in a fold: for each turn more than :data:`TURN_OUTLIER_SIGMA` above a steady
    pulsar's brightest (:func:`turn_excess`), ``(first sample, end sample)`` of its brightest boxcar
    (widths 1, 2, 4, ...) within the turn's on-pulse window, widened by its own length on each side, so a
    short burst in a wide window costs only its own samples."""
    excess, turn = turn_excess(x, tsamp_s, period_s, duty)
    spans = []
    for k in np.flatnonzero(excess > TURN_OUTLIER_SIGMA):
        where = np.flatnonzero(turn == k)
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
        spans.append((max(0, lo - width), min(len(x), hi + width)))
    return spans


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
    "candidates",
    "dispersed_snr_ratio",
    "ffa_candidates",
    "ffa_dm_step",
    "fourier_candidates",
    "outlier_turns",
    "sift",
    "turn_excess",
]
