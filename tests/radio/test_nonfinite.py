"""NaN and infinite samples: masked where they lie, counted, and the rest searched as if absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.cli import main
from cudalab.radio.io.observation import open_observation
from cudalab.radio.rfi import RfiConfig, clean_block
from cudalab.radio.simulate import Burst, SimConfig, simulate
from cudalab.radio.single_pulse.candidates import read_candidates

BURSTS = (
    Burst(time_s=0.6, dm=150.0, snr=30.0, width_s=2e-3),
    Burst(time_s=1.5, dm=300.0, snr=25.0, width_s=1e-3),
    Burst(time_s=2.4, dm=80.0, snr=20.0, width_s=4e-3),
    Burst(time_s=3.3, dm=450.0, snr=30.0, width_s=2e-3),
)


@pytest.fixture(scope="module")
def float_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-bit float filterbank, 128 channels, 4 s, with four bright bursts."""
    path = tmp_path_factory.mktemp("nan") / "f32.fil"
    cfg = SimConfig(
        nchans=128, tsamp_s=256e-6, foff_mhz=-300.0 / 128, duration_s=4.0, nbits=32, seed=3, bursts=BURSTS
    )
    simulate(cfg, path)
    return path


def _poison(src: Path, dst: Path, cells: list[tuple[int, int]], value: float) -> None:
    """A copy of ``src`` with ``value`` written at (channel, sample) ``cells``."""
    h = open_observation(src).header
    raw = bytearray(src.read_bytes())
    hdrlen = int(h.extra["hdrlen"])
    for chan, sample in cells:
        at = hdrlen + 4 * (sample * h.nchans + chan)
        raw[at : at + 4] = np.float32(value).tobytes()
    dst.write_bytes(bytes(raw))


def _search(path: Path, out: Path) -> list[tuple[float, float]]:
    assert (
        main(
            [
                "radio",
                "search",
                str(path),
                "--out",
                str(out),
                "--dm-max",
                "600",
                "--device",
                "cpu",
                "--cutouts",
                "0",
                "--snr",
                "8",
            ]
        )
        == 0
    )
    return [(c.dm, c.time_s) for c in read_candidates(out / "candidates.csv")]


def _found(cands: list[tuple[float, float]]) -> list[bool]:
    """For each injected burst: a candidate within 5 % of its DM and 20 ms of its time."""
    return [
        any(abs(dm - b.dm) <= 0.05 * b.dm and abs(t - b.time_s) <= 0.02 for dm, t in cands) for b in BURSTS
    ]


def test_a_few_nan_and_inf_samples_lose_no_burst(float_file: Path, tmp_path: Path) -> None:
    clean = _search(float_file, tmp_path / "clean")
    assert all(_found(clean))
    poisoned = tmp_path / "poisoned.fil"
    _poison(float_file, poisoned, [(40, 100), (40, 5000), (40, 9000)], float("nan"))
    _poison(poisoned, poisoned, [(77, 12000)], float("inf"))
    found = _search(poisoned, tmp_path / "poisoned")
    assert all(_found(found))  # the same bursts (before the fix: 0 candidates, exit 0, no word)
    record = json.loads((tmp_path / "poisoned" / "search.json").read_text())
    assert record["nonfinite_samples"] == 4
    assert json.loads((tmp_path / "poisoned" / "summary.json").read_text())["nonfinite_samples"] == 4
    assert "4 NaN or infinite samples" in (tmp_path / "poisoned" / "report.html").read_text()
    assert json.loads((tmp_path / "clean" / "search.json").read_text())["nonfinite_samples"] == 0


def test_a_channel_of_nothing_but_nan_is_masked(float_file: Path, tmp_path: Path) -> None:
    h = open_observation(float_file).header
    dead = tmp_path / "dead.fil"
    _poison(float_file, dead, [(12, t) for t in range(h.nsamples)], float("nan"))
    assert all(_found(_search(dead, tmp_path / "dead")))
    mask = json.loads((tmp_path / "dead" / "rfi_mask.json").read_text())
    assert 12 in mask["masked_channels"]


def test_cleaning_sets_non_finite_samples_to_zero_and_counts_the_new_ones_only() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4000, generator=g) * 3 + 10
    x[3, 7], x[5, 3990], x[9, :] = float("nan"), float("-inf"), float("inf")
    cfg = RfiConfig(zero_dm=False, sk_threshold=0, impulse_threshold=0)
    out, mask, nonfinite = clean_block(x, cfg, tsamp_s=256e-6, counted=(0, 3000))[:3]
    assert nonfinite == 1 + 3000  # sample (5, 3990) lies past the new samples: the next block counts it
    assert bool(torch.isfinite(out).all()) and mask[9] and not mask[3]
    assert abs(float(out[3, 7])) < 0.1 and abs(float(out[5, 3990])) < 0.1  # at the channel's median
    assert float(out[9].abs().max()) == 0.0
