"""The pulsar search: noise statistics of the whitened spectrum and the trials-corrected significance,
harmonic sums and sifting on synthetic pulse trains, folding, and the real pulsars: B1804-08 in the
GBT time series, the tutorial's 250 ms pulsar, and the demo's."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from cudalab.cli import main
from cudalab.errors import ExitCode
from cudalab.radio.periodic.fold import fold, optimise, prepare, refine, true_period
from cudalab.radio.periodic.fourier import harmonic_sum, log_chance, power_spectrum, sigma_of, whiten, zap
from cudalab.radio.periodic.search import PeriodicConfig, fourier_candidates, sift

TSAMP = 1e-3


def _pulse_train(n: int, period_s: float, duty: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) * TSAMP
    phase = np.mod(t / period_s, 1.0)
    return rng.normal(size=n) + amp * np.exp(-0.5 * ((phase - 0.5) / (duty / 2.355)) ** 2)


def test_whitened_noise_power_is_unit_exponential_and_red_noise_goes() -> None:
    rng = np.random.default_rng(0)
    n = 1 << 17
    red = np.cumsum(rng.normal(size=n)) * 0.05  # a random walk: power rising as 1/f^2
    x = torch.from_numpy(np.stack([rng.normal(size=n), rng.normal(size=n) + red]).astype(np.float32))
    p = whiten(power_spectrum(x))[:, 2::2]  # Fourier bins, DC left out
    for row in p.numpy():
        assert row.mean() == pytest.approx(1.0, abs=0.02)
        assert np.median(row) == pytest.approx(math.log(2), abs=0.02)
        assert (row > 10).mean() == pytest.approx(math.exp(-10), abs=3e-4)


def test_the_significance_is_the_gamma_tail_after_trials_and_stays_finite() -> None:
    for h in (1, 4, 32):
        x = np.array([h + 30.0, h + 60.0])
        assert np.allclose(log_chance(x, h), stats.gamma.logsf(x, h))
        # p -> sigma through the Gaussian tail, N trials
        p = stats.gamma.sf(x, h) * 1000
        assert np.allclose(sigma_of(x, h, 1000), stats.norm.isf(p), atol=1e-6)
    huge = sigma_of(np.array([5000.0, 20000.0]), 32, 1e8)
    assert np.all(np.isfinite(huge)) and huge[1] > huge[0] > 90


def test_noise_alone_gives_no_candidate() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(8, 1 << 16)).astype(np.float32))
    assert fourier_candidates(x, TSAMP, np.arange(8.0), PeriodicConfig()) == []


def test_a_narrow_pulsar_is_found_at_its_period_through_its_harmonics() -> None:
    rng = np.random.default_rng(2)
    n = 1 << 17
    x = _pulse_train(n, 0.2371, 0.03, 0.6, rng)
    cfg = PeriodicConfig()
    cands = fourier_candidates(torch.from_numpy(x[None].astype(np.float32)), TSAMP, np.array([50.0]), cfg)
    best = sift(cands, n * TSAMP, 1, cfg)[0]
    assert best.harmonics >= 8  # its power lies in many harmonics: summing them found it
    k = round(best.period_s and 0.2371 / best.period_s)  # the fundamental or a harmonic of it
    assert k >= 1 and abs(best.period_s * k - 0.2371) < 0.2371**2 / (n * TSAMP)
    period = true_period(prepare(x, TSAMP), TSAMP, best.period_s)
    f = optimise(prepare(x, TSAMP), TSAMP, period)
    assert abs(f.period_s - 0.2371) < 0.1 * 0.2371**2 / (n * TSAMP)  # a tenth of a turn's drift
    assert f.snr > 20 and f.chi2_r > 10
    assert fold(prepare(x, TSAMP), TSAMP, 0.31).chi2_r < 3  # folded at another period: flat


def test_sifting_merges_harmonics_and_repeats_and_drops_undispersed_signals() -> None:
    from cudalab.radio.periodic.search import PeriodCandidate

    c = [
        PeriodCandidate(4.0, 30.0, 20.0, 100.0, 8, 3),
        PeriodCandidate(4.0001, 31.0, 15.0, 80.0, 8, 4),  # the same signal at the next DM
        PeriodCandidate(8.0, 30.0, 12.0, 60.0, 4, 3),  # its second harmonic, at two DMs
        PeriodCandidate(8.0, 31.0, 11.0, 60.0, 4, 4),
        PeriodCandidate(4.0 * 3 / 2, 30.0, 9.0, 50.0, 2, 3),  # a 3/2 relative, at two DMs
        PeriodCandidate(4.0 * 3 / 2, 31.0, 8.0, 50.0, 2, 4),
        PeriodCandidate(50.0, 0.0, 30.0, 200.0, 1, 0),  # mains hum: undispersed
        PeriodCandidate(13.37, 60.0, 11.0, 50.0, 1, 9),  # seen at one DM only
    ]
    out = sift(c, 100.0, 20, PeriodicConfig())
    assert [round(k.freq_hz, 4) for k in out] == [4.0]
    assert out[0].dms == (30.0, 31.0) and out[0].related == (6.0, 8.0)


def test_sifting_keeps_a_pulsar_that_a_slow_signal_only_approximates_by_a_large_fraction() -> None:
    from cudalab.radio.periodic.search import HARMONIC_RATIOS, PeriodCandidate

    c = [
        PeriodCandidate(0.7, 30.0, 30.0, 300.0, 16, 3),  # a slow, bright pulsar
        PeriodCandidate(0.7, 31.0, 25.0, 250.0, 16, 4),
        PeriodCandidate(1.4, 30.0, 14.0, 90.0, 8, 3),  # its second harmonic
        PeriodCandidate(1.4, 31.0, 13.0, 90.0, 8, 4),
        PeriodCandidate(1.3, 40.0, 12.0, 80.0, 8, 5),  # another pulsar: 13/7 of the first
        PeriodCandidate(1.3, 41.0, 11.0, 80.0, 8, 6),
    ]
    out = sift(c, 100.0, 20, PeriodicConfig())
    assert [round(k.freq_hz, 4) for k in out] == [0.7, 1.3]
    assert out[0].related == (1.4,)
    assert (2, 3) in HARMONIC_RATIOS and (1, 16) in HARMONIC_RATIOS and (13, 7) not in HARMONIC_RATIOS


def test_zapping_removes_a_birdie() -> None:
    rng = np.random.default_rng(3)
    n = 1 << 15
    t = np.arange(n) * TSAMP
    x = torch.from_numpy((rng.normal(size=n) + 0.3 * np.sin(2 * np.pi * 50.0 * t))[None].astype(np.float32))
    p = whiten(power_spectrum(x))
    assert float(harmonic_sum(p, 1).max()) > 100
    zap(p, n * TSAMP, [(50.0, 0.05)])
    assert float(p.max()) < 30


def _run(tmp_path: Path, data: Path, *args: str) -> tuple[list[dict], dict]:
    out = tmp_path / "p"
    assert main(["radio", "periodic", str(data), "--out", str(out), "--device", "cpu", *args]) == ExitCode.OK
    rows = list(csv.DictReader((out / "candidates.csv").open()))
    assert (out / "folds" / "cand_00.png").stat().st_size > 20_000 and (out / "report.html").is_file()
    with np.load(out / "folds" / "cand_00.npz") as z:
        assert z["profile"].ndim == 1 and z["subints"].shape[1] == len(z["profile"])
        meta = json.loads(str(z["meta"]))
    # the report: the file described, and every fold drawn and listed with its period, in the table's order
    page = (out / "report.html").read_text()
    assert f"Periodicity search: {data.name}" in page and "<h2>Observation</h2>" in page
    folds = sorted((out / "folds").glob("cand_*.png"))
    assert folds and all(f"src='folds/{f.name}'" in page for f in folds)
    for row in rows[: len(folds)]:
        assert f"<td>{float(row['folded_period_ms']):.6f}</td>" in page
    return rows, meta


def test_b1804_08_is_found_at_its_catalogue_period(shared_data: Path, tmp_path: Path) -> None:
    rows, meta = _run(tmp_path, shared_data / "radio" / "GBT_J1807-0847.tim")
    period = float(rows[0]["folded_period_ms"])
    resolution = 163.727**2 / (131072 * 0.16384)  # P^2 / T, ms: one turn of drift over the data
    assert abs(period - 163.727) < 0.05 * resolution, period
    assert float(rows[0]["fold_snr"]) > 100 and float(rows[0]["dm"]) == pytest.approx(112.38)
    assert meta["snr"] == pytest.approx(float(rows[0]["fold_snr"]), rel=1e-3)


def test_the_tutorial_pulsar_is_found_at_250_ms_and_dm_30(shared_data: Path, tmp_path: Path) -> None:
    rows, _ = _run(tmp_path, shared_data / "radio" / "tutorial.fil", "--dm-max", "100")
    best = rows[0]
    assert abs(float(best["folded_period_ms"]) - 250.0) < 0.05 * 250.0**2 / 60_000
    # the DM to the resolution of 64 channels over 70 MHz: a 10 ms pulse smears by 1.8 ms per 10 DM
    assert abs(float(best["folded_dm"]) - 30.0) < 8 and float(best["fold_snr"]) > 40
    assert int(best["dm_hits"]) >= 3


def test_the_demo_pulsar_is_found(tmp_path: Path) -> None:
    from cudalab.radio.simulate import demo_config, simulate

    demo = tmp_path / "demo.fil"
    simulate(demo_config(), demo)
    rows, _ = _run(tmp_path, demo, "--dm-max", "200")
    best = rows[0]
    assert abs(float(best["folded_period_ms"]) - 714.5) < 0.1 * 714.5**2 / 13_000
    assert abs(float(best["folded_dm"]) - 26.8) < 6 and float(best["fold_snr"]) > 10


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "birdies.txt"
    bad.write_text("50 0.1\nsixty\n")
    cases = [
        (["radio", "periodic", str(tmp_path / "none.fil")], "no such file"),
        (["radio", "periodic", str(tmp_path / "none.fil"), "--dm-min", "5", "--dm-max", "1"], "--dm-min"),
        (["radio", "periodic", str(bad), "--birdies", str(bad)], "birdies.txt: line 2"),
    ]
    for argv, fault in cases:
        assert main([*argv, "--out", str(tmp_path / "o")]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert fault in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_binary_msp_is_found_by_the_acceleration_search_only() -> None:
    from cudalab.radio.periodic.search import C_M_S, accel_trials

    rng = np.random.default_rng(0)
    tsamp, n, period, accel = 2.56e-4, 1 << 20, 0.0023, 150.0  # 268 s; a drift of 17 bins at 435 Hz
    t = np.arange(n) * tsamp
    phase = np.mod((t - accel * t**2 / (2 * C_M_S)) / period, 1.0) - 0.5
    pulse = np.exp(-0.5 * (phase / (0.05 / 2.355)) ** 2)
    x = (rng.normal(size=n) + pulse * 40 / np.sqrt((pulse**2).sum())).astype(np.float32)
    series = torch.from_numpy(x[None])
    plain = PeriodicConfig()
    # without the acceleration search its power is smeared over 17 bins: at most a marginal detection
    weak = [c.sigma for c in sift(fourier_candidates(series, tsamp, np.array([50.0]), plain), n * tsamp, 1, plain)
            if abs(c.period_s - period) < 1e-5]  # fmt: skip
    assert max(weak, default=0.0) < 5
    cfg = PeriodicConfig(accel_max=200.0, accel_ref_hz=250.0)
    assert len(accel_trials(n * tsamp, cfg)) == 27
    found = sift(fourier_candidates(series, tsamp, np.array([50.0]), cfg), n * tsamp, 1, cfg)[0]
    assert abs(found.period_s - period) < 1e-5 and abs(found.accel - accel) < 20
    assert found.sigma > 2 * max(weak, default=2.5)
    f = refine(prepare(x, tsamp), tsamp, found.period_s, found.accel)
    # the period at mid-observation (what the data constrain; at the start it trades off against the
    # derivative) within a tenth of a turn of drift
    tobs = n * tsamp
    mid, true_mid = f.period_s + f.pdot * tobs / 2, period * (1 + accel * tobs / (2 * C_M_S))
    assert abs(mid - true_mid) < 0.1 * period**2 / tobs
    assert f.pdot == pytest.approx(accel * period / C_M_S, rel=0.2) and f.snr > 15


def test_detrend_scales_to_unit_noise_short_or_long() -> None:
    from cudalab.radio.periodic.fold import detrend

    g = torch.Generator().manual_seed(7)
    for n in (64, 1 << 16):  # shorter than two baseline blocks, and many of them
        x = 5.0 + 3.0 * torch.randn(2, n, generator=g, dtype=torch.float64)
        x[:, n // 2] += 50.0  # a pulse: not counted in the noise
        y = detrend(x, 1e-3, 1.0)
        assert y.shape == x.shape
        assert torch.allclose(y.median(dim=-1).values, torch.zeros(2, dtype=torch.float64), atol=0.3)
        off = torch.cat([y[:, : n // 2], y[:, n // 2 + 1 :]], dim=1)  # the noise, the pulse left out
        assert torch.allclose(off.std(dim=-1), torch.ones(2, dtype=torch.float64), atol=0.3)
        assert bool((y[:, n // 2] > 12).all())  # the pulse stands out by about 50 / 3
