"""Two-stage dedispersion: exactly a direct sum with the planned delays, and those within tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cudalab.radio.dedispersion.direct import dedisperse, dedisperse_numpy
from cudalab.radio.dedispersion.plan import make_plan
from cudalab.radio.dedispersion.subband import dedisperse_subband, plan_subbands
from cudalab.radio.io.header import Header


def lband_delays(nchans: int = 256, dm_max: float = 600.0) -> np.ndarray:
    """Real delays: a 256-channel L-band plan (1200-1500 MHz, 256 us) on heimdall's DM grid."""
    h = Header(
        path="", format="sigproc", nbits=8, nchans=nchans, nsamples=1 << 16, tsamp_s=256e-6,
        fch1_mhz=1500.0, foff_mhz=-300.0 / nchans,
    )  # fmt: skip
    return make_plan(h, 0.0, dm_max, scrunch=False).delays


@pytest.mark.parametrize(("seed", "nsub", "tolerance"), [(0, 16, 1), (1, 8, 0), (2, 32, 2), (3, 1, 1)])
def test_two_stages_are_a_direct_sum_with_the_planned_delays(seed: int, nsub: int, tolerance: int) -> None:
    delays = lband_delays()
    plan = plan_subbands(delays, nsub, tolerance)
    effective = plan.effective_delays()
    assert (
        np.abs(effective - delays).max() == plan.max_error <= tolerance + 1
    )  # +1: the rounding of each part
    rng = np.random.default_rng(seed)
    nout = 700
    data = rng.integers(0, 64, size=(delays.shape[1], nout + int(effective.max()) + 1)).astype(np.float32)
    got = dedisperse_subband(torch.from_numpy(data), plan, nout, budget_bytes=1 << 16)  # many chunks
    # integer data: every sum is exact in float32, whatever the order, so equality is exact
    want = dedisperse_numpy(data, effective, nout)
    np.testing.assert_array_equal(got.numpy(), want)


def test_weights_mask_channels_as_in_the_direct_path() -> None:
    delays = lband_delays(64, 300.0)
    plan = plan_subbands(delays, 8, 1)
    g = torch.Generator().manual_seed(4)
    data = torch.randint(0, 32, (64, 500 + int(delays.max()) + 4), generator=g).float()
    w = torch.ones(64)
    w[[3, 17, 40]] = 0.0
    got = dedisperse_subband(data, plan, 500, weights=w)
    want = dedisperse(data, torch.from_numpy(plan.effective_delays()), 500, weights=w)
    assert torch.equal(got, want)


def test_the_fast_like_beam_needs_a_tenth_of_the_adds() -> None:
    """The figure README and RESULTS quote: 4096 channels, DM 0-3000 on heimdall's grid, scrunched."""
    h = Header(
        path="", format="sigproc", nbits=8, nchans=4096, nsamples=1 << 20, tsamp_s=49.152e-6,
        fch1_mhz=1500.0, foff_mhz=-500.0 / 4096,
    )  # fmt: skip
    plan = make_plan(h, 0.0, 3000.0)
    assert len(plan.dms) == 5326
    direct = two_stage = 0.0
    for s, idx in plan.groups():
        sub = plan_subbands(plan.delays_scrunched(s, idx), 128, 1)
        assert sub.max_error <= 2
        direct += len(idx) * 4096 / s
        two_stage += sub.adds_ratio() * len(idx) * 4096 / s
    assert 0.05 < two_stage / direct < 0.10  # measured 0.0963


def test_a_burst_keeps_its_snr() -> None:
    delays = lband_delays(256, 1000.0)
    plan = plan_subbands(delays, 32, 1)
    # a dispersed, 4-sample-wide burst at trial k: the two-stage peak keeps >= 90 % of the direct one
    k, t0, nout = len(delays) * 3 // 4, 200, 600
    data = np.zeros((256, nout + int(delays.max()) + 8), dtype=np.float32)
    for c in range(256):
        data[c, t0 + delays[k, c] : t0 + delays[k, c] + 4] = 1.0
    x = torch.from_numpy(data)
    direct = dedisperse(x, torch.from_numpy(delays), nout)
    two = dedisperse_subband(x, plan, nout)
    box = torch.nn.functional.avg_pool1d
    peak_direct = box(direct[None], 4, 1).amax()
    peak_two = box(two[None], 4, 1).amax()
    assert peak_two >= 0.9 * peak_direct


def test_bad_arguments() -> None:
    delays = lband_delays(32, 100.0)
    with pytest.raises(ValueError, match="nsub"):
        plan_subbands(delays, 0)
    with pytest.raises(ValueError, match="monotonic"):
        plan_subbands(np.array([[0, 3], [4, 1]]), 1)  # no channel is the earliest at every trial
    plan = plan_subbands(delays, 4)
    with pytest.raises(ValueError, match="channels"):
        dedisperse_subband(torch.zeros(16, 100), plan, 10)
