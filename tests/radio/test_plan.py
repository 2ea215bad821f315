"""The DM grid and the scrunch decisions."""

from __future__ import annotations

import numpy as np
import pytest

from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s, smearing_s
from cudalab.radio.dedispersion.plan import dm_trials, make_plan
from cudalab.radio.io.header import Header


def test_heimdall_grid_for_the_fast_like_beam() -> None:
    """The FAST-like case of the issue: 4096 ch, 49.152 us, 1000-1500 MHz, DM 0-3000 -> 5326 trials."""
    dms = dm_trials(0, 3000, 49.152e-6, 1500.0, -500.0 / 4096, 4096)
    assert len(dms) == 5326
    assert dms[0] == 0 and dms[-2] < 3000 <= dms[-1]
    steps = np.diff(dms)
    assert (steps > 0).all() and steps[-1] > steps[0]  # coarser at high DM, where smearing dominates


def test_tolerance_controls_density() -> None:
    a = dm_trials(0, 500, 64e-6, 1500, -0.3, 1024, tolerance=1.25)
    b = dm_trials(0, 500, 64e-6, 1500, -0.3, 1024, tolerance=1.1)
    assert len(b) > 1.5 * len(a)
    with pytest.raises(ValueError):
        dm_trials(10, 5, 64e-6, 1500, -0.3, 1024)


def _header(**kw: float) -> Header:
    base = {"nchans": 256, "nsamples": 10000, "tsamp_s": 64e-6, "fch1_mhz": 1500.0, "foff_mhz": -1.0}
    base.update(kw)
    return Header(path="", format="sigproc", nbits=8, **base)  # type: ignore[arg-type]


def test_delays_follow_the_dispersion_law_from_the_top_channel() -> None:
    h = _header()
    plan = make_plan(h, 0, 300)
    i = len(plan.dms) // 2
    want = DM_CONSTANT * plan.dms[i] * (h.freqs_mhz**-2 - 1500.0**-2) / h.tsamp_s
    np.testing.assert_array_equal(plan.delays[i], np.rint(want).astype(np.int64))
    assert plan.delays[:, 0].max() == 0 and plan.max_delay == plan.delays[-1, -1]


def test_delays_for_an_ascending_band_refer_to_the_highest_channel() -> None:
    h = _header(fch1_mhz=1245.0, foff_mhz=1.0)
    plan = make_plan(h, 0, 100)
    assert plan.fref_mhz == 1500.0
    assert (plan.delays[:, -1] == 0).all() and (plan.delays[:, 0] == plan.delays.max(axis=1)).all()


def test_scrunch_factors_follow_the_smearing() -> None:
    h = _header()
    plan = make_plan(h, 0, 2000, max_scrunch=16)
    s = plan.scrunch
    assert s[0] == 1 and (np.diff(s) >= 0).all() and set(np.unique(s)) <= {1, 2, 4, 8, 16}
    # The rule: s * tsamp stays within w_eff * sqrt(1.15^2 - 1) at the band centre.
    smear = smearing_s(plan.dms, 1.0, 0.5 * (h.fmax_mhz + h.fmin_mhz))
    w_eff = np.sqrt(h.tsamp_s**2 + 40e-6**2 + smear**2)
    assert ((s == 1) | (s * h.tsamp_s <= w_eff * np.sqrt(1.15**2 - 1) + 1e-12)).all()  # 1 is the floor
    assert s[-1] > 1
    assert make_plan(h, 0, 2000, scrunch=False).scrunch.max() == 1


def test_smearing_is_the_delay_across_one_channel() -> None:
    assert smearing_s(100, 1.0, 1000.0) == pytest.approx(
        float(dispersion_delay_s(100, 999.5, 1000.5)), rel=1e-12
    )
    assert smearing_s(100, 1.0, 1000.0) == pytest.approx(8.3e-6 * 100, rel=0.01)  # the textbook 8.3 us
