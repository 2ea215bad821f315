"""The simulator: determinism, truth, and bursts of the S/N they claim."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.radio.dedispersion.direct import dedisperse
from cudalab.radio.dedispersion.plan import make_plan
from cudalab.radio.io.observation import open_observation
from cudalab.radio.simulate import Burst, Pulsar, Rfi, SimConfig, simulate

SMALL = SimConfig(nchans=64, tsamp_s=256e-6, fch1_mhz=1500.0, foff_mhz=-4.0, duration_s=2.0, seed=3)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = replace(
        SMALL,
        bursts=(Burst(time_s=0.5, dm=100, snr=20),),
        pulsars=(Pulsar(period_s=0.3, dm=30, snr=8),),
        rfi=(Rfi(kind="intermittent", amplitude=5, channels=(3, 5)),),
    )
    a, b, c = tmp_path / "a.fil", tmp_path / "b.fil", tmp_path / "c.fil"
    simulate(cfg, a, block=1000)
    simulate(cfg, b, block=1000)
    simulate(replace(cfg, seed=4), c, block=1000)
    assert _sha(a) == _sha(b) != _sha(c)
    truth = json.loads(a.with_suffix(".truth.json").read_text())
    assert [p["kind"] for p in truth["pulses"]].count("pulsar") == 7  # 0, 0.3, ..., 1.8 s
    assert truth["time_reference"].startswith("centre of the highest channel, 1500.000000 MHz")
    assert a.with_suffix(".truth.csv").read_text().startswith("kind,time_s,dm,snr")


@pytest.mark.parametrize(("width", "dm", "snr"), [(1e-3, 150.0, 20.0), (4e-3, 400.0, 12.0)])
def test_injected_snr_is_the_matched_filter_snr(tmp_path: Path, width: float, dm: float, snr: float) -> None:
    """Dedisperse at the true DM and apply the matched filter: the S/N comes back as injected (+- noise)."""
    cfg = replace(
        SMALL,
        nchans=128,
        foff_mhz=-2.0,
        duration_s=3.0,
        bursts=(Burst(time_s=1.0, dm=dm, snr=snr, width_s=width),),
    )
    noise_only = replace(cfg, bursts=())
    simulate(cfg, tmp_path / "s.fil")
    simulate(noise_only, tmp_path / "n.fil")
    sig = open_observation(tmp_path / "s.fil").read().astype(np.float64)
    noise = open_observation(tmp_path / "n.fil").read().astype(np.float64)
    h = open_observation(tmp_path / "s.fil").header
    plan = make_plan(h, dm, dm)
    d = torch.from_numpy(plan.delays[:1])
    nout = h.nsamples - plan.max_delay
    pulse = dedisperse(torch.from_numpy((sig - noise).astype(np.float32)), d, nout).numpy()[0] / SMALL.sigma
    ts = dedisperse(torch.from_numpy((sig - 128.0).astype(np.float32)), d, nout).numpy()[0] / SMALL.sigma
    # matched filter: correlate with the (noise-free) pulse profile, normalise by the noise's rms
    template = pulse[np.abs(pulse) > 1e-3 * np.abs(pulse).max()]
    start = int(np.flatnonzero(np.abs(pulse) > 1e-3 * np.abs(pulse).max())[0])
    measured_noise_free = float(np.sqrt((template**2).sum()) / np.sqrt(h.nchans))
    assert measured_noise_free == pytest.approx(snr, rel=0.03)  # quantisation and rounding of delays
    filt = np.correlate(ts, template / np.linalg.norm(template), mode="valid")
    noise_rms = float(np.std(np.delete(filt, np.s_[max(0, start - 200) : start + 200])))
    assert filt[start] / noise_rms == pytest.approx(snr, abs=3.5)  # one noise draw: +- a few sigma


def test_arrival_time_refers_to_the_top_channel(tmp_path: Path) -> None:
    # Narrow channels: at 4 MHz the top channel alone would smear the pulse over 2 ms.
    # float32 output: at S/N 2000 8-bit samples would clip and flatten the peak.
    cfg = replace(SMALL, foff_mhz=-0.5, nbits=32, bursts=(Burst(time_s=0.8, dm=200, snr=2000, width_s=1e-3),))
    simulate(cfg, tmp_path / "t.fil")
    data = open_observation(tmp_path / "t.fil").read()
    peak_top = int(np.argmax(data[0]))
    assert peak_top * SMALL.tsamp_s == pytest.approx(
        0.8, abs=1.5 * SMALL.tsamp_s
    )  # sample 3125 starts at 0.8 s
    from cudalab.radio.constants import dispersion_delay_s

    lag = float(dispersion_delay_s(200, 1500 - 0.5 * 63, 1500))
    assert int(np.argmax(data[-1])) * SMALL.tsamp_s == pytest.approx(0.8 + lag, abs=3 * SMALL.tsamp_s)


def test_background_file_is_tiled_and_keeps_its_header(tmp_path: Path, shared_data: Path) -> None:
    bg = shared_data / "radio" / "apertif_noise.fil"
    cfg = replace(SMALL, background=str(bg), duration_s=0.5, bursts=(Burst(time_s=0.1, dm=50, snr=30),))
    simulate(cfg, tmp_path / "bg.fil")
    obs = open_observation(tmp_path / "bg.fil")
    ref = open_observation(bg)
    assert obs.header.nchans == 1536 and obs.header.tsamp_s == ref.header.tsamp_s
    assert obs.header.nsamples == round(0.5 / ref.header.tsamp_s) > ref.header.nsamples
    tail = obs.read(
        ref.header.nsamples, 100
    )  # the second tile repeats the background exactly (no burst there)
    np.testing.assert_array_equal(tail, ref.read(0, 100))


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        Burst(time_s=1, dm=-1, snr=10)
    with pytest.raises(ValueError):
        SimConfig(nbits=3)


def _one_channel(
    t_arrival: float, sigma_t: float, smear: float, tau: float, tsamp: float
) -> tuple[int, np.ndarray]:
    """The reference: one channel's pulse (Gaussian, in-channel smearing boxcar, scattering
    exponential) integrated over samples on its own window, written the plain way."""
    from scipy.special import erf

    from cudalab.radio.simulate import OVERSAMPLE

    s0 = int(np.floor((t_arrival - 5 * sigma_t - smear / 2 - tsamp) / tsamp))
    s1 = int(np.ceil((t_arrival + 5 * sigma_t + smear / 2 + 8 * tau + tsamp) / tsamp)) + 1
    dt = tsamp / OVERSAMPLE
    x = (s0 + (np.arange((s1 - s0) * OVERSAMPLE) + 0.5) / OVERSAMPLE) * tsamp - t_arrival
    if smear > dt:
        r = np.sqrt(2) * sigma_t
        fine = 0.5 * (erf((x + smear / 2) / r) - erf((x - smear / 2) / r)) / smear
    else:
        fine = np.exp(-0.5 * (x / sigma_t) ** 2) / (sigma_t * np.sqrt(2 * np.pi))
    if tau > dt / 4:
        k = np.exp(-np.arange(int(np.ceil(8 * tau / dt)) + 1) * dt / tau)
        fine = np.convolve(fine, k / k.sum())[: len(fine)]
    prof = fine.reshape(-1, OVERSAMPLE).mean(axis=1)
    return s0, prof / prof.sum()


def test_channel_profiles_match_one_channel_at_a_time() -> None:
    """All channels at once (padded to the longest window) give each channel's own profile, to
    rounding, with smeared, unsmeared and scattered channels mixed, and nothing beyond its window."""
    from cudalab.radio.simulate import _channel_profiles

    rng = np.random.default_rng(3)
    tsamp, n = 64e-6, 40
    t_arr = rng.uniform(0.01, 0.02, n)
    smear = np.where(rng.uniform(size=n) < 0.5, rng.uniform(0, 2e-3, n), 0.0)
    tau = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0, 1e-3, n), 0.0)
    s0, profs = _channel_profiles(t_arr, 2e-4, smear, tau, tsamp)
    for c in range(n):
        r0, ref = _one_channel(t_arr[c], 2e-4, smear[c], tau[c], tsamp)
        assert s0[c] == r0
        np.testing.assert_allclose(profs[c, : len(ref)], ref, rtol=1e-12, atol=1e-15)
        assert not profs[c, len(ref) :].any()


def test_burst_span_bounds_the_patch() -> None:
    """The span a block uses to decide which pulses to build holds every sample of the pulse's patch,
    for narrow and wide, smeared, scattered and undispersed pulses (else a block would cut a pulse)."""
    from cudalab.radio.constants import DM_CONSTANT
    from cudalab.radio.simulate import burst_patch, burst_span, planned_header

    rng = np.random.default_rng(5)
    h = planned_header(SimConfig(nchans=64, tsamp_s=256e-6, foff_mhz=-300.0 / 64, duration_s=5.0))
    for _ in range(40):
        b = Burst(time_s=rng.uniform(0, 4), dm=rng.choice([0.0, rng.uniform(0, 2000)]), snr=10.0,
                  width_s=rng.uniform(1e-4, 2e-2), scatter_s=rng.choice([0.0, rng.uniform(0, 5e-3)]))  # fmt: skip
        p = burst_patch(b, h, DM_CONSTANT)
        first, stop = burst_span(b, h, DM_CONSTANT)
        assert first <= p.t0 and p.t0 + p.values.shape[1] <= stop, (b, first, stop, p.t0, p.values.shape)
        assert stop - first < 1.1 * p.values.shape[1] + 8  # a bound, and a close one


def test_pulses_straddling_blocks_are_whole(tmp_path: Path) -> None:
    """Pulses are built block by block, and one straddling two blocks is whole in the file: the
    pulsar's signal (the file less the same file without it) is the same written in one block as in
    blocks of 1000 samples."""

    def signal(name: str, block: int) -> np.ndarray:
        base = SimConfig(nchans=32, tsamp_s=512e-6, foff_mhz=-300.0 / 32, duration_s=4.0, seed=2, nbits=32,
                         level=0.0, sigma=1.0)  # fmt: skip
        psr = replace(base, pulsars=(Pulsar(period_s=0.0371, dm=300.0, snr=8.0, width_s=2e-3, jitter=0.0),))
        simulate(psr, tmp_path / f"{name}.fil", block=block)
        simulate(base, tmp_path / f"{name}-noise.fil", block=block)
        return (
            open_observation(tmp_path / f"{name}.fil").read()
            - open_observation(tmp_path / f"{name}-noise.fil").read()
        )

    one, many = signal("one", 1 << 20), signal("many", 1000)
    assert one.max() > 0.3  # the pulses are there (S/N 8 over 32 channels: 0.48 a channel at the peak)
    np.testing.assert_allclose(many, one, atol=1e-5)


@pytest.mark.parametrize(
    "background", ["apertif_noise.fil", "parkes_8bit_1.fil", "parkes_2bit.fil", "parkes_1bit.fil"]
)
def test_a_burst_on_a_real_background_has_the_stated_snr(
    tmp_path: Path, shared_data: Path, background: str
) -> None:
    """The stated S/N holds on a real background whatever its levels and bits: the search finds a burst
    of S/N 20 at 16-25 (a boxcar's loss below; above, the Parkes band's own noise, partly common to
    its channels, which the search's zero-DM filter takes out). It had found 10 and 21 times more on
    the 8-bit backgrounds, whose noise is 10 and 21.5 counts, and nothing on 1- and 2-bit data, where
    a fraction of a count rounded away."""
    from cudalab.radio.pipeline.search import SearchConfig, search_file

    cfg = SimConfig(background=str(shared_data / "radio" / background), duration_s=2.0, seed=4,
                    bursts=(Burst(time_s=0.5, dm=40.0, snr=20.0, width_s=2e-3),))  # fmt: skip
    simulate(cfg, tmp_path / "b.fil")
    r = search_file(tmp_path / "b.fil", SearchConfig(dm_max=100.0, device="cpu"))
    (found,) = [c for c in r.candidates if abs(c.dm - 40.0) < 3 and abs(c.time_s - 0.5) < 0.01]
    assert 20.0 * 0.8 < found.snr < 20.0 * 1.25, found.snr  # the backgrounds' own interference aside


def test_dead_channels_of_a_background_get_no_signal_and_are_named_in_the_truth(
    tmp_path: Path, shared_data: Path
) -> None:
    """None of the shared backgrounds has a dead channel, so one is made: the Parkes 8-bit file with a
    block of channels and every 7th held constant. The burst leaves them constant, the truth names
    them, and the stated S/N (counted over the live channels) is what the search finds."""
    from cudalab.radio.io.observation import open_observation
    from cudalab.radio.io.sigproc import write_sigproc
    from cudalab.radio.pipeline.search import SearchConfig, search_file

    src = open_observation(shared_data / "radio" / "parkes_8bit_1.fil")
    data = src.read(0, src.header.nsamples)
    dead = sorted({*range(300, 400), *range(0, data.shape[0], 7)})
    data[dead] = 128
    bg = write_sigproc(tmp_path / "bg.fil", src.header, data)
    cfg = SimConfig(background=str(bg), duration_s=2.0, seed=4,
                    bursts=(Burst(time_s=0.5, dm=40.0, snr=20.0, width_s=2e-3),))  # fmt: skip
    truth = simulate(cfg, tmp_path / "b.fil")
    assert truth["dead_channels"] == dead
    out = open_observation(tmp_path / "b.fil").read(0, 2000)
    assert np.all(out[dead] == 128)  # no signal where there is no noise
    r = search_file(tmp_path / "b.fil", SearchConfig(dm_max=100.0, device="cpu"))
    (found,) = [c for c in r.candidates if abs(c.dm - 40.0) < 3 and abs(c.time_s - 0.5) < 0.01]
    assert 20.0 * 0.8 < found.snr < 20.0 * 1.25, found.snr


def test_a_truth_tables_dead_channels_are_checked(tmp_path: Path) -> None:
    from cudalab.radio.simulate import load_truth

    good = {"header": {"fmin_mhz": 1200.0, "fmax_mhz": 1500.0, "nchans": 64}, "pulses": []}
    for dead, ok in (([], True), ([0, 63], True), ([64], False), (["3"], False), ([True], False), (5, False)):
        f = tmp_path / "t.json"
        f.write_text(json.dumps({**good, "dead_channels": dead}))
        if ok:
            assert load_truth(f)["dead_channels"] == dead
        else:
            with pytest.raises(ValueError, match="dead_channels is not a list of channel numbers"):
                load_truth(f)
