"""Candidate cutouts: only the file's data is shown, marked where the window leaves the file, and the h5
carries what ``your`` writes (normalisation and header attributes)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s
from cudalab.radio.io.observation import open_observation
from cudalab.radio.rfi import RfiConfig
from cudalab.radio.simulate import Burst, SimConfig, simulate
from cudalab.radio.single_pulse.candidates import Candidate
from cudalab.radio.single_pulse.cutouts import SIZE, make_cutout, write_fetch_h5

CPU = torch.device("cpu")

#: 256 channels over 1500-1200 MHz, 4 s: a DM-1000 burst at 2.5 s is in the file at its own DM (it
#: sweeps 1.04 s, the window reaches 0.26 s past it) but the DM-time rows up to 2 x DM read 2.07 s past
#: it, beyond the end.
SIM = SimConfig(
    nchans=256,
    tsamp_s=256e-6,
    fch1_mhz=1500.0,
    foff_mhz=-300.0 / 256,
    duration_s=4.0,
    seed=7,
    bursts=(Burst(time_s=2.5, dm=1000.0, snr=40.0, width_s=4e-3), Burst(time_s=0.01, dm=50.0, snr=40.0)),
    rfi=(),
)


def _candidate(time_s: float, dm: float, width_samples: int, tsamp_s: float) -> Candidate:
    s = round(time_s / tsamp_s)
    return Candidate(
        snr=40.0,
        dm=dm,
        dm_err=0.1,
        time_s=s * tsamp_s,
        width_s=width_samples * tsamp_s,
        sample=s,
        dm_index=0,
        dm_trial=dm,
        members=1,
        width_samples=width_samples,
        dm_lo=dm,
        dm_hi=dm,
        begin_sample=s,
        end_sample=s,
        mjd=60000.0,
        fref_mhz=1500.0,
    )


def _profile_peak(freq_time: np.ndarray, centre: int = SIZE // 2) -> float:
    """The band-averaged profile's peak, within 2 pixels of ``centre``, in its off-pulse sigma."""
    profile = freq_time.mean(axis=1)
    off = np.r_[profile[: max(0, centre - 10)], profile[centre + 10 :]]
    peak = int(profile.argmax())
    assert abs(peak - centre) <= 2
    return float((profile[peak] - np.median(off)) / off.std())


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cutouts") / "end.fil"
    simulate(SIM, path)
    return path


def test_a_window_past_the_files_end_is_marked_and_never_shown_as_data(sim: Path) -> None:
    obs = open_observation(sim)
    h = obs.header
    cand = _candidate(2.5, 1000.0, 16, h.tsamp_s)
    cut = make_cutout(obs, cand, k_dm=DM_CONSTANT, rfi=RfiConfig(), device=CPU)
    assert cut.freq_time.shape == cut.dm_time.shape == (SIZE, SIZE)
    assert cut.time_decimation == 8

    # freq-time at the burst's DM lies inside the file; the burst is at the centre, in every channel
    assert cut.valid_freq_time.min() == 1.0
    assert _profile_peak(cut.freq_time) > 15.0
    assert (cut.freq_time[SIZE // 2 - 1 : SIZE // 2 + 2].mean(axis=0) > 0).mean() > 0.9

    # DM-time: a row's output at time t needs the lowest channel at t + its delay; compute which are in
    # the file independently of the code, and compare pixel for pixel (at the cutout's resolution)
    last = h.nsamples - 1
    start = cand.sample - SIZE * cut.time_decimation // 2
    row_delay = np.rint(dispersion_delay_s(cut.dms, h.fmin_mhz, h.fmax_mhz, DM_CONSTANT) / h.tsamp_s).astype(
        int
    )
    t_end = start + (np.arange(SIZE) + 1) * cut.time_decimation - 1  # a pixel's last native sample
    expect_full = (t_end[None, :] + row_delay[:, None]) <= last
    full = cut.valid_dm_time > 0.999
    assert (full == expect_full).mean() > 0.995  # a pixel straddling the end may round either way
    assert 0.2 < 1 - full.mean() < 0.6  # a good share of the 0-2 x DM panel is past the end
    assert full[: SIZE // 2 - 5].all()  # rows up to the burst's DM are all data
    # pixels that are not wholly data carry no value (the normalised median), data pixels are
    # normalised as your_candmaker does
    assert np.all(cut.dm_time[~full] == 0.0)
    assert np.median(cut.dm_time[full]) == pytest.approx(0.0, abs=1e-6)
    assert cut.dm_time[full].std() == pytest.approx(1.0, rel=1e-4)
    # the burst peaks at its own DM and time
    row, col = np.unravel_index(int(np.argmax(cut.dm_time)), cut.dm_time.shape)
    assert abs(cut.dms[row] - 1000.0) < 20.0 and abs(int(col) - SIZE // 2) <= 2
    assert cut.valid_fraction == pytest.approx((1.0 + cut.valid_dm_time.mean()) / 2)


def test_a_window_before_the_files_start_is_marked(sim: Path) -> None:
    obs = open_observation(sim)
    cand = _candidate(0.01, 50.0, 4, obs.header.tsamp_s)
    cut = make_cutout(obs, cand, k_dm=DM_CONSTANT, rfi=RfiConfig(), device=CPU)
    # 0.01 s is 39 samples and the window 512 samples wide: the top channel (the image's first column)
    # has no data in the first (256 - 39) / 2 pixels; a lower channel reads its delay later, so has more
    before = (SIZE * cut.time_decimation // 2 - cand.sample) // cut.time_decimation
    top = cut.valid_freq_time[:, 0]
    assert np.all(top[:before] == 0.0) and np.all(top[before + 1 :] == 1.0)
    assert cut.valid_freq_time[:before, -1].mean() > top[:before].mean()
    np.testing.assert_array_equal(cut.freq_time[cut.valid_freq_time < 0.999], 0.0)
    np.testing.assert_array_equal(cut.dm_time[:, :before], 0.0)  # no DM-time output before the start
    assert _profile_peak(cut.freq_time[before + 1 :], centre=SIZE // 2 - before - 1) > 10.0  # still shown


def test_the_h5_holds_yours_attributes_and_the_masks(tmp_path: Path, shared_data: Path) -> None:
    """A real Parkes file near its end: the SIGPROC header keys your copies, and the validity masks."""
    obs = open_observation(shared_data / "radio" / "parkes_8bit_1.fil")
    h = obs.header
    cand = _candidate((h.nsamples - 100) * h.tsamp_s, 5.0, 2, h.tsamp_s)
    cut = make_cutout(obs, cand, k_dm=DM_CONSTANT, rfi=RfiConfig(), device=CPU)
    path = write_fetch_h5(tmp_path / "c.h5", cut, cand, h, "cand_0")
    with h5py.File(path) as f:
        assert f["data_freq_time"].shape == f["data_dm_time"].shape == (SIZE, SIZE)
        assert f["data_freq_time"].dtype == np.float32
        a = f.attrs
        for key in ("telescope_id", "src_raj", "src_dej", "machine_id", "rawdatafile", "az_start"):
            assert a[key] == h.extra[key]
        assert a["tstart_utc"].startswith("2")  # an ISO date
        assert a["nspectra"] == h.nsamples and a["nchans"] == h.nchans
        assert a["data_type"] == h.data_type and a["tcand"] == pytest.approx(cand.time_s)
        # 100 samples before the end, a window of 256 native samples: the top channel has 128 + 100
        assert np.asarray(f["valid_freq_time"])[:, 0].mean() == pytest.approx(228 / 256, abs=1 / SIZE)
        assert 0.5 < a["valid_fraction"] < 228 / 256
        valid = np.asarray(f["valid_freq_time"])
        np.testing.assert_array_equal(np.asarray(f["data_freq_time"])[valid < 0.999], 0.0)
