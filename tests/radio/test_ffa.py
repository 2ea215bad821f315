"""The fast folding algorithm: the transform against the folds it approximates, the profile S/N against
its definition, and the search on synthetic pulse trains (a long-period narrow pulsar the Fourier
search loses, white noise, a single bright burst)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cudalab.radio.periodic.ffa import (
    FfaConfig,
    Workspace,
    boxcar_widths,
    ffa_transform,
    peaks,
    periodogram,
    profile_snr,
)
from cudalab.radio.periodic.search import (
    PeriodicConfig,
    dispersed_snr_ratio,
    ffa_candidates,
    fourier_candidates,
    outlier_turns,
    sift,
    turn_excess,
)

TSAMP = 1e-3


def _brute_fold(rows: torch.Tensor, s: int) -> torch.Tensor:
    """The reference: row r rolled left by round(r s / (m - 1)) bins, summed."""
    m = rows.shape[-2]
    return sum(torch.roll(rows[..., r, :], -math.floor(r * s / (m - 1) + 0.5), dims=-1) for r in range(m))


@pytest.mark.parametrize("m, b", [(2, 5), (16, 37), (64, 240)])
def test_the_transform_is_every_fold_to_within_one_bin(m: int, b: int) -> None:
    """Exact at drifts 0 and m - 1 (fresh random rows); every other row lands within one bin of where
    the exact fold puts it (a delta per row, traced through)."""
    rows = torch.randn(3, m, b, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
    out = ffa_transform(rows)
    for s in (0, m - 1):
        torch.testing.assert_close(out[:, s], _brute_fold(rows, s))
    deltas = torch.zeros(m, m, b, dtype=torch.float64)
    deltas[torch.arange(m), torch.arange(m), 0] = 1.0  # batch r: a delta in row r only
    landed = ffa_transform(deltas).argmax(dim=-1)  # (r, s): the bin it ends up in
    r, s = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    exact = (-np.floor(r * s / (m - 1) + 0.5)) % b
    off = np.abs(landed.numpy() - exact)
    assert np.minimum(off, b - off).max() <= 1
    # the sum of everything is conserved in every fold
    torch.testing.assert_close(out.sum(dim=-1), rows.sum(dim=(-1, -2))[:, None].expand(3, m))


def _recursive_ffa(rows: torch.Tensor) -> torch.Tensor:
    """The reference recursion, riptide's formula as written: the halves' transforms joined, output
    ``s`` taking head ``round(s (g - 1) / (2 g - 1))`` and tail likewise, rolled left by
    ``round(s g / (2 g - 1))``, where each half has ``g`` rows."""
    m = rows.shape[-2]
    if m == 1:
        return rows.clone()
    g = m // 2
    head, tail = _recursive_ffa(rows[..., :g, :]), _recursive_ffa(rows[..., g:, :])
    out = []
    for s in range(m):
        pick = math.floor(s * (g - 1) / (2 * g - 1) + 0.5)
        shift = math.floor(s * g / (2 * g - 1) + 0.5)
        out.append(head[..., pick, :] + torch.roll(tail[..., pick, :], -shift, dims=-1))
    return torch.stack(out, dim=-2)


@pytest.mark.parametrize("m, b", [(1, 4), (2, 1), (8, 5), (256, 3), (64, 240), (512, 37)])
def test_the_transform_equals_the_recursion(m: int, b: int) -> None:
    """Bit for bit on fresh random rows, rolls that wrap a row many times over (256 rows of 3 bins)
    included; the input is left as it was, and a second call on the same workspace agrees."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    rows = torch.randn(2, 3, m, b, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    before = rows.clone()
    ws = Workspace(rows.device, rows.dtype)
    out = ffa_transform(rows, ws).clone()
    torch.testing.assert_close(out, _recursive_ffa(rows), rtol=0, atol=1e-12, msg=f"seed {seed}")
    torch.testing.assert_close(rows, before, rtol=0, atol=0)
    torch.testing.assert_close(ffa_transform(rows, ws), out, rtol=0, atol=0)


def test_rows_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        ffa_transform(torch.zeros(3, 10))


def test_profile_snr_is_the_best_wrapped_boxcar() -> None:
    """On random profiles, against the definition written out in loops."""
    rng = np.random.default_rng(3)
    rows, b = 50, 24
    prof = rng.normal(size=(4, b)) * math.sqrt(rows)
    prof[1, [23, 0, 1]] += 40  # a pulse across the wrap
    widths = boxcar_widths(b, 0.3)
    best, best_w = profile_snr(torch.from_numpy(prof), rows, widths)
    for i in range(4):
        ref, ref_w = -np.inf, 0
        for w in widths:
            for j in range(b):
                window = prof[i, [(j + k) % b for k in range(w)]]
                snr = (window.sum() - w * prof[i].mean()) / math.sqrt(rows * w * (1 - w / b))
                if snr > ref:
                    ref, ref_w = snr, w
        assert float(best[i]) == pytest.approx(ref) and int(best_w[i]) == ref_w
    assert int(best_w[1]) == 3


def _pulses(n: int, period_s: float, duty: float, snr: float) -> np.ndarray:
    """A Gaussian pulse train whose matched-filter S/N in unit white noise is ``snr``."""
    phase = np.mod(np.arange(n) * TSAMP / period_s, 1.0)
    pulse = np.exp(-0.5 * ((phase - 0.5) / (duty / 2.355)) ** 2)
    return snr * pulse / math.sqrt((pulse**2).sum())


def test_a_long_period_narrow_pulsar_is_found_by_the_ffa_not_the_fourier_search() -> None:
    """1.3 s at 1 % duty, S/N 12 ideal, in 120 s: its power spreads over ~100 harmonics, so 32 summed
    incoherently fall short, while folding recovers most of it at the right period (the FFA from
    0.5 s here, to keep the test short on a CPU)."""
    rng = np.random.default_rng(7)
    n = 120_000
    x = torch.from_numpy((rng.normal(size=n) + _pulses(n, 1.3, 0.01, 12.0)).astype(np.float32))[None]
    cfg = PeriodicConfig(ffa_period_min_s=0.5)
    ffa = ffa_candidates(x, TSAMP, np.array([50.0]), cfg)
    best = max(ffa, key=lambda c: c.sigma)
    tolerance = 1.3**2 / (n * TSAMP)  # a turn of drift over the observation
    assert abs(best.period_s - 1.3) < tolerance and best.search == "ffa"
    assert best.power > 0.8 * 12.0  # folded S/N against the ideal
    fourier = sift(fourier_candidates(x, TSAMP, np.array([50.0]), cfg), n * TSAMP, 1, cfg)
    assert not any(abs(c.period_s - 1.3) < tolerance or abs(c.period_s - 0.65) < tolerance for c in fourier)


def test_white_noise_gives_no_ffa_candidate() -> None:
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(size=(3, 60_000)).astype(np.float32))
    assert ffa_candidates(x, TSAMP, np.array([10.0, 11.0, 12.0]), PeriodicConfig(ffa_period_min_s=0.25)) == []


def test_over_dm_trials_a_dispersed_pulsar_is_kept_and_an_undispersed_signal_dropped() -> None:
    """26 DM trials (0-100) of 64 channels over 1200-1500 MHz: a pulsar at DM 60 (0.53 s, 2 %), summed
    channel by channel at each trial's residual delays, so it smears away from its DM; and a periodic
    interferer (0.37 s, 1 %), undispersed and narrowband, the same at every trial. Both fold to S/N
    about 20 where they are strongest. After sifting the pulsar leads, at its DM, and the interferer is
    gone (a weak fold of it, S/N near the threshold, may stay: too weak for its DM curve to tell);
    without the channels' delays (as for a time series) it is a candidate at every trial."""
    from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s

    rng = np.random.default_rng(13)
    n = 60_000
    freqs = 1500.0 - (np.arange(64) + 0.5) * 300 / 64
    delays = dispersion_delay_s(1.0, freqs, 1500.0, DM_CONSTANT)
    dms = np.arange(0.0, 101.0, 4.0)
    t = np.arange(n) * TSAMP

    def train(period: float, duty: float, late: float) -> np.ndarray:
        on = (np.mod((t - late) / period, 1.0) < duty).astype(float)
        return on * 20.0 / math.sqrt(on.sum())

    series = rng.normal(size=(len(dms), n)) + train(0.37, 0.01, 0.1)[None]
    for k, dm in enumerate(dms):
        series[k] += np.mean([train(0.53, 0.02, (60.0 - dm) * d) for d in delays[::4]], axis=0)
    x = torch.from_numpy(series.astype(np.float32))
    cfg = PeriodicConfig(ffa_period_min_s=0.25)
    found = sift(ffa_candidates(x, TSAMP, dms, cfg, delays), n * TSAMP, len(dms), cfg)
    assert abs(found[0].period_s - 0.53) < 0.53**2 / (n * TSAMP) and abs(found[0].dm - 60.0) <= 4.0
    assert not any(abs(c.period_s - 0.37) < 0.37**2 / (n * TSAMP) or c.power > 10 for c in found[1:])
    blind = ffa_candidates(x[:4], TSAMP, dms[:4], cfg)
    assert {c.dm for c in blind if abs(c.period_s - 0.37) < 0.37**2 / (n * TSAMP)} == set(dms[:4])


def test_a_single_bright_burst_is_not_a_periodic_candidate() -> None:
    """A burst folded over m turns keeps S/N / sqrt(m): at long periods (few turns) a bright one is a
    bright profile at every period. Its candidates owe their pulse to one turn and are dropped; a
    pulsar in the same series is kept."""
    rng = np.random.default_rng(5)
    n = 60_000
    burst = np.zeros(n)
    burst[30_000:30_004] = 200.0 / 2  # S/N 200 over 4 samples
    x = rng.normal(size=n) + burst
    cfg = FfaConfig(period_min_s=1.0)  # the burst matters at long periods: few turns
    search = PeriodicConfig(ffa_period_min_s=1.0)
    pg = periodogram(torch.from_numpy(x[None]), TSAMP, cfg)
    slow = pg.periods_s > 2.0  # at most 30 turns: the burst keeps 200 / sqrt(30), less what its bins take
    assert pg.snr[0, slow].min() > 12
    assert peaks(pg, cfg.snr_min, n * TSAMP)  # the periodogram alone cannot tell
    assert ffa_candidates(torch.from_numpy(x[None].astype(np.float32)), TSAMP, np.array([30.0]), search) == []
    with_pulsar = torch.from_numpy((x + _pulses(n, 2.7, 0.05, 15.0))[None].astype(np.float32))
    found = ffa_candidates(with_pulsar, TSAMP, np.array([30.0]), search)
    assert found and abs(max(found, key=lambda c: c.sigma).period_s - 2.7) < 2.7**2 / (n * TSAMP)


def test_outlier_turns_tell_folded_bursts_from_a_pulsar() -> None:
    """One burst, and two that a 5 s fold lines up, stand out of their folds' turns and are found where
    they are; a steady pulsar's turns, 12 or 200 of them, do not stand out."""
    rng = np.random.default_rng(9)
    n = 60_000
    noise = rng.normal(size=n)
    burst = noise.copy()
    burst[30_000:30_004] += 100.0
    assert outlier_turns(burst, TSAMP, 5.0, 0.01) == [(29_996, 30_008)]
    two = burst.copy()
    two[45_000:45_004] += 60.0  # 3 turns later, in phase
    (lo1, hi1), (lo2, hi2) = outlier_turns(two, TSAMP, 5.0, 0.01)  # both, in one call
    assert lo1 <= 30_000 and hi1 >= 30_004 and lo2 <= 45_000 and hi2 >= 45_004
    assert max(hi1 - lo1, hi2 - lo2) <= 16
    for period, duty, snr in ((5.0, 0.05, 12.0), (0.3, 0.02, 10.0), (0.3, 0.02, 100.0)):
        excess, _ = turn_excess(noise + _pulses(n, period, duty, snr), TSAMP, period, duty)
        assert excess.max() < 2.0, (period, snr)


def test_a_pulse_dispersed_keeps_less_snr_away_from_its_dm() -> None:
    """The model against a direct simulation: a top-hat pulse shifted per channel by its residual delay
    and summed, measured with its best boxcar, over 256 channels of 1200-1500 MHz."""
    from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s

    freqs = 1500.0 - (np.arange(256) + 0.5) * 300 / 256
    delays = dispersion_delay_s(1.0, freqs, 1500.0, DM_CONSTANT)
    dt, width = 1e-5, 2e-3
    for offset in (0.0, 1.0, 5.0, 50.0):
        shift = np.rint(offset * delays / dt).astype(int)
        series = np.zeros(shift.max() + int(width / dt) + 10)
        for k in shift:
            series[k : k + int(width / dt)] += 1.0
        c = np.concatenate([[0.0], np.cumsum(series)])
        best = max(float((c[w:] - c[:-w]).max()) / math.sqrt(w) for w in range(1, len(series), 7))
        direct = best / (256 * int(width / dt) / math.sqrt(int(width / dt)))
        assert dispersed_snr_ratio(delays, offset, width) == pytest.approx(direct, rel=0.03), offset
    assert dispersed_snr_ratio(delays, 50.0, width) < 0.25  # 52 ms of sweep against 2 ms


@pytest.mark.gpu
def test_the_periodogram_on_the_gpu_equals_the_cpu() -> None:
    """Fresh random series holding a pulsar: the same folds, S/N and widths on cuda as on the CPU."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    rng = np.random.default_rng(seed)
    n = 200_000
    x = rng.normal(size=(4, n)) + _pulses(n, 0.913, 0.03, 20.0)[None]
    cfg = FfaConfig(period_min_s=0.3, period_max_s=5.0)
    cpu = periodogram(torch.from_numpy(x), 5e-4, cfg)
    gpu = periodogram(torch.from_numpy(x).cuda(), 5e-4, cfg)
    np.testing.assert_allclose(gpu.snr, cpu.snr, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gpu.periods_s, cpu.periods_s)
    assert abs(gpu.periods_s[np.argmax(gpu.snr[0])] - 0.913) < 0.913**2 / (n * 5e-4), seed
