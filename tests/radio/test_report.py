"""The report's pictures: what they show is the data, scaled so it can be read."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.outputs import run_search
from cudalab.radio.report import (
    MARKER_MIN,
    display_waterfall,
    marker_sizes,
    robust_limits,
    snr_norm,
    sqrt_ticks,
    uses_sqrt_dm,
)
from cudalab.radio.simulate import Burst, SimConfig, simulate
from cudalab.radio.single_pulse.cutouts import SIZE, Cutout


def test_colour_limits_come_from_the_data_pixels_only() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(64, 64))
    valid = np.ones_like(image, dtype=bool)
    valid[:, 40:] = False
    image[:, 40:] = 1e6  # what lies outside the file must not set the scale
    lo, hi = robust_limits(image, valid)
    assert -3.5 < lo < -1.5 and 1.5 < hi < 3.5
    assert robust_limits(np.zeros((4, 4))) == (0.0, 1.0)  # a flat image still gets a range
    assert robust_limits(np.full((2, 2), np.nan)) == (0.0, 1.0)


def test_markers_are_visible_and_grow_with_snr() -> None:
    sizes = marker_sizes(np.array([6.0, 6.1, 12.0, 500.0]), 6.0)
    assert sizes[0] == MARKER_MIN and np.all(np.diff(sizes) >= 0)  # a lone threshold candidate is seen
    assert sizes[2] == pytest.approx(4 * MARKER_MIN)  # area as S/N squared
    assert sizes[3] == sizes.max() <= 320  # one bright impulse does not cover the plot


def test_the_snr_colour_scale_turns_logarithmic_for_a_bright_outlier() -> None:
    assert type(snr_norm(np.array([6.0, 9.0]), 6.0)).__name__ == "Normalize"
    assert type(snr_norm(np.array([6.0, 500.0]), 6.0)).__name__ == "LogNorm"
    assert snr_norm(np.array([]), 6.0).vmax > 6.0  # no candidates: still a valid scale


@pytest.mark.parametrize("top", [100.0, 103.5, 600.0, 1000.0, 2003.5, 3000.0])
def test_square_root_dm_ticks_are_round_and_spread(top: float) -> None:
    ticks = sqrt_ticks(top)
    assert ticks[0] == 0.0 and 4 <= len(ticks) <= 8 and ticks[-1] <= top
    assert all(t == float(f"{t:.0e}") for t in ticks[1:])  # 1, 2 or 5 x 10^k
    assert np.min(np.diff(np.sqrt(ticks))) >= np.sqrt(top) / 7 - 1e-9
    assert ticks[-1] >= top / 2.5  # the axis is labelled to near its top


def test_low_dm_searches_keep_a_linear_axis() -> None:
    assert not uses_sqrt_dm(np.linspace(0, 60, 30))
    assert uses_sqrt_dm(np.linspace(0, 1000, 300))
    assert not uses_sqrt_dm(np.array([112.4]))  # one trial: no DM axis at all


def test_the_waterfall_averages_live_channels_only() -> None:
    """A sub-band with masked (zeroed) channels shows the mean of the others, and says how much is masked."""
    rng = np.random.default_rng(2)
    ft = rng.normal(size=(SIZE, SIZE)).astype(np.float32)  # (time, frequency)
    masked = np.zeros(SIZE, dtype=np.float32)
    masked[8:12] = 1.0  # half of the second sub-band of eight columns
    ft[:, 8:12] = 0.0
    ones = np.ones((SIZE, SIZE), dtype=np.float32)
    cut = Cutout(ft, ft.T.copy(), np.linspace(0, 100, SIZE), 1, ones, ones, masked)
    shown, valid, frac = display_waterfall(cut, subbands=32)
    assert shown.shape == valid.shape == (32, SIZE)
    np.testing.assert_allclose(shown[1], ft[:, 12:16].mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shown[5], ft[:, 40:48].mean(axis=1), rtol=1e-4, atol=1e-5)
    assert frac[1] == pytest.approx(0.5) and np.delete(frac, 1).max() == 0.0


def _quiet_search(path: Path, out: Path, cfg: SearchConfig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning either (an empty range, a bad scale)
        run_search(path, out, cfg)


def test_report_of_a_burst_at_the_files_end(tmp_path: Path) -> None:
    """The overview shades the unsearched end, the candidate's picture hatches what lies past it."""
    path = tmp_path / "end.fil"
    simulate(
        SimConfig(
            nchans=256,
            foff_mhz=-300.0 / 256,
            tsamp_s=256e-6,
            duration_s=4.0,
            seed=7,
            bursts=(Burst(time_s=2.5, dm=1000.0, snr=40.0, width_s=4e-3),),
            rfi=(),
        ),
        path,
    )
    _quiet_search(path, tmp_path / "o", SearchConfig(dm_max=1200.0, device="cpu", cutouts=1, report_top=1))
    page = (tmp_path / "o" / "report.html").read_text()
    assert "square-root axes" in page and "unsearched at the end" in page and "MJD" in page
    with Image.open(tmp_path / "o" / "plots" / "cand_0000.png") as im:
        assert im.width > 600 and im.height > 600
    with Image.open(tmp_path / "o" / "plots" / "overview.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    grey = (np.abs(rgb - round(0.82 * 255)).max(axis=2) <= 2).sum()  # the "not searched" shading
    assert grey > 2000


def test_report_of_a_time_series_and_of_noise(shared_data: Path, tmp_path: Path) -> None:
    """One trial: S/N against time, each candidate's profile, no cutout; noise alone: no candidate, and
    every panel says so instead of failing on empty data."""
    tim = shared_data / "radio" / "GBT_J1807-0847.tim"
    _quiet_search(tim, tmp_path / "tim", SearchConfig(device="cpu", report_top=2))
    assert sorted(p.name for p in (tmp_path / "tim" / "plots").iterdir()) == [
        "cand_0000.png",
        "cand_0001.png",
        "overview.png",
    ]
    assert not (tmp_path / "tim" / "cands").exists()
    assert "the boxcar shaded" in (tmp_path / "tim" / "report.html").read_text()

    noise = tmp_path / "noise.fil"
    simulate(SimConfig(nchans=128, foff_mhz=-300.0 / 128, duration_s=2.0, seed=1, rfi=()), noise)
    _quiet_search(noise, tmp_path / "n", SearchConfig(dm_max=300.0, device="cpu", snr_threshold=8.0))
    page = (tmp_path / "n" / "report.html").read_text()
    assert "No candidate above threshold" in page
