"""The torch dedisperser against the definition, on fresh random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cudalab.radio.dedispersion.direct import LiveChannels, dedisperse, dedisperse_numpy, scrunch_time


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_direct_sum_exactly_on_integer_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nchans, ndm, nout = 37, 23, 301
    delays = np.sort(rng.integers(0, 120, size=(ndm, nchans)), axis=1)
    data = rng.integers(0, 256, size=(nchans, nout + 120)).astype(np.float32)  # sums stay exact in float32
    want = dedisperse_numpy(data, delays, nout)
    got = dedisperse(torch.from_numpy(data), torch.from_numpy(delays), nout, dm_chunk=7, time_tile=64)
    np.testing.assert_array_equal(got.numpy(), want)


def test_float_data_within_rounding() -> None:
    rng = np.random.default_rng(5)
    delays = rng.integers(0, 50, size=(11, 64))
    data = rng.standard_normal((64, 550)).astype(np.float32)
    want = dedisperse_numpy(data, delays, 500)
    got = dedisperse(torch.from_numpy(data), torch.from_numpy(delays), 500).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_tiling_does_not_change_a_bit() -> None:
    g = torch.Generator().manual_seed(3)
    data = torch.randn(48, 3000, generator=g)
    delays = torch.randint(0, 400, (30, 48), generator=g)
    a = dedisperse(data, delays, 2600, time_tile=2600)
    b = dedisperse(data, delays, 2600, time_tile=97, dm_chunk=4)
    assert torch.equal(a, b)


def test_weights_skip_and_scale_channels() -> None:
    rng = np.random.default_rng(9)
    data = rng.standard_normal((8, 100)).astype(np.float32)
    delays = rng.integers(0, 10, size=(5, 8))
    w = np.array([1, 0, 1, 2, 1, 1, 0, 1], dtype=np.float32)
    want = dedisperse_numpy(data * w[:, None], delays, 90)
    got = dedisperse(
        torch.from_numpy(data), torch.from_numpy(delays), 90, weights=torch.from_numpy(w)
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_live_channels_and_out_give_the_weights_result() -> None:
    """The block's live channels, worked out once, stand for its weights; ``out`` may be a strided view
    (a sub-band's slice of the stage-1 array) and is overwritten, not added to."""
    g = torch.Generator().manual_seed(9)
    data = torch.randn(12, 300, generator=g)
    delays = torch.randint(0, 40, (7, 12), generator=g)
    w = torch.rand(12, generator=g) * 2
    w[[1, 5, 6]] = 0
    want = dedisperse(data, delays, 200, weights=w)
    big = torch.full((7, 3, 210), 5.0)
    got = dedisperse(data, delays, 200, weights=LiveChannels.of(w, 12, data.device), out=big[:, 1, 4:204])
    assert torch.equal(got, want) and torch.equal(big[:, 1, 4:204], want)
    assert (big[:, 0] == 5).all() and (big[:, 1, :4] == 5).all(), "wrote outside its view"


def test_a_dispersed_pulse_lines_up_at_its_dm_only() -> None:
    nchans, n = 32, 400
    delays = np.outer(np.arange(4), np.arange(nchans))  # trial k: k samples per channel
    data = np.zeros((nchans, n), dtype=np.float32)
    data[np.arange(nchans), 50 + 2 * np.arange(nchans)] = 1.0  # swept at 2 samples per channel
    out = dedisperse(torch.from_numpy(data), torch.from_numpy(delays), 300).numpy()
    assert out[2, 50] == nchans and out[2].argmax() == 50
    assert out[[0, 1, 3]].max() < nchans / 2


def test_needs_enough_samples() -> None:
    with pytest.raises(ValueError, match="need"):
        dedisperse(torch.zeros(4, 100), torch.full((2, 4), 50), 60)


def test_scrunch_sums_adjacent_samples() -> None:
    x = torch.arange(10.0).reshape(1, 10)
    assert scrunch_time(x, 4).tolist() == [[6.0, 22.0]]
    assert scrunch_time(x, 1) is x


@pytest.mark.gpu
def test_gpu_equals_cpu_on_fresh_random_data() -> None:
    g = torch.Generator().manual_seed(11)
    data = torch.randint(0, 256, (256, 9000), generator=g).float()
    delays = torch.sort(torch.randint(0, 1000, (200, 256), generator=g), dim=1).values
    cpu = dedisperse(data, delays, 8000)
    gpu = dedisperse(data.cuda(), delays.cuda(), 8000).cpu()
    assert torch.equal(cpu, gpu)  # integer-valued float32 sums below 2^24 are exact on both
