"""What a search covers: every trial to its own limit at the file's end, and what it could not search said."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cudalab.cli import main
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.search import search_file, trial_runs
from cudalab.radio.simulate import Burst, SimConfig, simulate


def test_a_low_dm_burst_at_the_files_end_is_found_beside_high_dm_trials(tmp_path: Path) -> None:
    """Its trial shares a scrunch group with trials of DM ~400, whose sweep ends their search 0.4 s
    before the file does; searched to its own limit, the burst 0.2 s from the end is found."""
    burst = Burst(time_s=12.8, dm=17.8, snr=23.0, width_s=1e-3)
    path = tmp_path / "end.fil"
    simulate(
        SimConfig(
            nchans=512, foff_mhz=-300.0 / 512, tsamp_s=256e-6, duration_s=13.0, seed=5, bursts=(burst,)
        ),
        path,
    )
    res = search_file(path, SearchConfig(dm_max=1000.0, device="cpu", cutouts=0))
    best = res.candidates[0]
    assert abs(best.dm - 17.8) < 2 and abs(best.time_s - 12.8) < 0.01 and best.snr > 15
    # the file's whole length was searched at that DM, but for its short sweep past the end
    trial = int(np.argmin(np.abs(res.plan.dms - 17.8)))
    assert res.unsearched_s[trial] < 0.03
    assert not res.warnings()  # 13 s: every trial to DM 1000 searched most of the file


@pytest.mark.parametrize(("name", "supported"), [("apertif_noise.fil", 90.4), ("parkes_8bit_1.fil", 130.0)])
def test_a_short_file_is_warned_about_and_auto_chooses_what_it_supports(
    name: str, supported: float, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_data / "radio" / name
    args = ["radio", "search", str(path), "--device", "cpu", "--cutouts", "0"]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "were not searched at all" in out and f"supports DM <= {supported:.4g}" in out
    record = json.loads((tmp_path / "default" / "search.json").read_text())
    u = record["unsearched"]
    assert u["trials_not_searched"] > 0 and u["not_searched_above_dm"] < 1000 and u["dm_max_beyond_supported"]
    assert u["supported_dm_max"] == pytest.approx(supported, rel=1e-3)
    assert record["warnings"] and "not searched at all" in record["warnings"][0]
    assert u["ranges"][-1]["unsearched_s"][1] == pytest.approx(record["header"]["duration_s"])
    page = (tmp_path / "default" / "report.html").read_text()  # the report says it too
    assert "were not searched at all" in page and f"supports DM &lt;= {supported:.4g}" in page

    assert main([*args, "--out", str(tmp_path / "auto"), "--dm-max", "auto"]) == 0
    assert "warning" not in capsys.readouterr().out
    record = json.loads((tmp_path / "auto" / "search.json").read_text())
    assert record["plan"]["dm_max"] == pytest.approx(supported, rel=0.05)
    assert record["unsearched"]["trials_not_searched"] == 0 and not record["warnings"]
    # every trial searched at least about half the file (the grid's last step may pass dm_max a little)
    assert record["unsearched"]["ranges"][-1]["unsearched_s"][1] <= 0.52 * record["header"]["duration_s"]


def test_trials_are_searched_in_runs_that_end_alike() -> None:
    n = np.array([100, 100, 100, 98, 95, 90, 0, -3])
    assert trial_runs(n, tolerance=5, rows=10) == [(0, 5, 95), (5, 6, 90)]
    assert trial_runs(n, tolerance=100, rows=2) == [(0, 2, 100), (2, 4, 98), (4, 6, 90)]
    assert trial_runs(np.array([7, 7, 7]), tolerance=0, rows=10) == [(0, 3, 7)]
    assert trial_runs(np.array([0, 0]), tolerance=3, rows=10) == []
