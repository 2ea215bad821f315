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
