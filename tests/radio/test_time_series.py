"""Single-pulse search of dedispersed time series: SIGPROC .tim and PRESTO .dat + .inf."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cudalab.cli import main
from cudalab.errors import CudalabError
from cudalab.radio.io.observation import open_observation

#: B1804-08's apparent period in this observation, s (163.727 ms catalogued; Doppler-shifted here).
PERIOD_S = 0.1637


def pulses_found(out: Path) -> int:
    """Distinct rotations of the pulsar with a candidate of S/N >= 7 on its pulse (a period fitted to
    the candidates' times; a candidate off the pulse by more than 10 ms counts for nothing)."""
    rows = list(csv.DictReader((out / "candidates.csv").open()))
    t = np.sort([float(r["time_s"]) for r in rows if float(r["snr"]) >= 7])
    k = np.round((t - t[0]) / PERIOD_S)
    a = np.vstack([np.ones_like(k), k]).T
    fit = np.linalg.lstsq(a, t, rcond=None)[0]
    on = np.abs(t - a @ fit) < 0.010
    assert abs(fit[1] - 0.163727) < 0.0002  # the candidates beat with B1804-08's period
    return len(set(k[on]))


@pytest.mark.parametrize("name", ["GBT_J1807-0847.tim", "GBT_J1807-0847.dat", "GBT_J1807-0847.inf"])
def test_b1804_08s_single_pulses_are_found_in_its_time_series(
    name: str, shared_data: Path, tmp_path: Path
) -> None:
    src = shared_data / "radio" / name
    out = tmp_path / "psr"
    assert main(["radio", "search", str(src), "--out", str(out), "--device", "cpu", "--snr", "7"]) == 0
    assert pulses_found(out) >= 120  # of the 131 rotations in 21.5 s (128 measured)
    record = json.loads((out / "search.json").read_text())
    assert record["plan"]["ndm"] == 1 and record["plan"]["dm_max"] == pytest.approx(112.38, abs=0.01)
    assert record["header"]["data_type"] == "time series" and not record["warnings"]
    assert not (out / "cands").exists() or not list((out / "cands").iterdir())  # no spectrum: no cutouts


def test_a_presto_series_needs_both_files_and_a_sound_inf(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "radio" / "GBT_J1807-0847"
    dat, inf = tmp_path / "p.dat", tmp_path / "p.inf"
    shutil.copy(src.with_suffix(".dat"), dat)
    with pytest.raises(CudalabError, match=r"p\.inf: no such \.inf file"):
        open_observation(dat)
    text = src.with_suffix(".inf").read_text()
    for bad, message in [
        (text.replace("131072", "999999"), "truncated: p.inf says 999999 samples"),
        (text.replace("0.00016384", "fast"), "tsamp is 'fast', not a number"),
        (text.replace("0.00016384", "nan"), "not a finite number"),
        (text.replace("0.00016384", "0"), "tsamp must be > 0"),
        ("\n".join(line for line in text.splitlines() if "Width" not in line), "lacks 'Width of each"),
    ]:
        inf.write_text(bad)
        with pytest.raises(CudalabError, match=message):
            open_observation(dat)
    inf.write_text(text)
    dat.unlink()
    with pytest.raises(CudalabError, match=r"p\.dat: no such \.dat file"):
        open_observation(inf)
