"""RFI mitigation: each test catches its kind of interference and spares a dispersed burst."""

from __future__ import annotations

import pytest
import torch

from cudalab.radio.rfi import (
    MAD_TO_STD,
    STATS_SAMPLES,
    RfiConfig,
    channel_mask_mad,
    clean_block,
    impulse_mask,
    robust_location_scale,
    row_median,
    spectral_kurtosis_mask,
    zero_dm,
)


def _noise(nchans: int = 128, n: int = 4096, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    bandpass = 100 + 40 * torch.sin(torch.linspace(0, 3, nchans))[:, None]  # a smooth bandpass shape
    return bandpass + 10 * torch.randn(nchans, n, generator=g)


def test_zero_dm_removes_a_broadband_impulse_and_keeps_a_dispersed_pulse() -> None:
    x = torch.randn(128, 2000, generator=torch.Generator().manual_seed(1))
    x[:, 500:504] += 5.0  # impulse in every channel
    sweep = torch.arange(128) * 4 + 1000
    x[torch.arange(128), sweep] += 5.0  # dispersed: one channel at a time
    y, mean = zero_dm(x)
    torch.testing.assert_close(y + mean, x)  # what was subtracted, given back
    assert y[:, 500:504].mean().abs() < 0.2
    assert y[torch.arange(128), sweep].mean() > 4.8


def test_mad_masks_a_carrier_not_the_bandpass() -> None:
    x = _noise()
    x[40:42] += 30.0  # persistent carrier: offset
    x[90] *= 3  # a channel with triple the variance
    mask = channel_mask_mad(x)
    assert mask[40] and mask[41] and mask[90]
    assert mask.sum() <= 4


def test_spectral_kurtosis_masks_an_intermittent_carrier() -> None:
    x = _noise() - 100
    on = torch.zeros(4096, dtype=torch.bool)
    on[::37] = True
    x[70, on] += 80.0  # switching on and off
    mask = spectral_kurtosis_mask(x, threshold=8.0)
    assert mask[70] and mask.sum() == 1


def test_clean_block_normalises_masks_and_spares_bursts() -> None:
    x = _noise()
    x[40:42] += 30.0
    x[:, 1000:1003] += 60.0  # a strong broadband impulse must not make the kurtosis test mask everything
    sweep = torch.arange(128) * 2 + 2000
    x[torch.arange(128), sweep] += 30.0  # a dispersed burst (3 sigma per channel)
    y, mask = clean_block(x, RfiConfig(), tsamp_s=256e-6)[:2]
    assert mask[40] and mask[41] and mask.sum() <= 3
    assert (y[mask] == 0).all()
    good = ~mask
    assert y[good].std(dim=1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert y[good][:, 1000:1003].mean().abs() < 0.15  # the impulse is gone; unit noise remains (375 samples)
    assert y[torch.arange(128)[good], sweep[good]].mean() > 2.5


def test_clean_block_scales_long_channels_from_a_strided_subset() -> None:
    """A block longer than STATS_SAMPLES takes each channel's robust statistics from evenly spaced samples:
    every channel still comes out at zero median and unit robust std, to well within their errors."""
    n = 3 * STATS_SAMPLES + 5
    g = torch.Generator().manual_seed(6)
    gains = torch.tensor([0.5, 1.0, 7.0, 30.0])[:, None]
    x = 100 * gains + gains * torch.randn(4, n, generator=g)
    off = RfiConfig(zero_dm=False, mad_threshold=0, sk_threshold=0, impulse_threshold=0)
    out, mask = clean_block(x, off, tsamp_s=256e-6)[:2]
    assert not mask.any()
    med = out.median(dim=1).values
    mad_std = (out - med[:, None]).abs().median(dim=1).values * MAD_TO_STD
    assert med.abs().max() < 0.02 and (mad_std - 1).abs().max() < 0.02


def test_robust_scale_is_unbiased_on_quantised_data_where_the_mad_is_not() -> None:
    # The sum of 64 one-bit channels (integers, sigma 4): the MAD is quantised (12 % high here), the
    # clipped standard deviation is not; on continuous Gaussian data both agree; outliers are ignored.
    g = torch.Generator().manual_seed(3)
    bits = (torch.rand(8, 64, 50_000, generator=g) < 0.5).float().sum(dim=1)
    true = bits.std(dim=1)
    centre, scale = robust_location_scale(bits)
    mad = (bits - bits.median(dim=1, keepdim=True).values).abs().median(dim=1).values * MAD_TO_STD
    assert ((scale[:, 0] / true) - 1).abs().max() < 0.01
    assert ((mad / true) - 1).abs().min() > 0.1
    assert (centre[:, 0] - bits.mean(dim=1)).abs().max() < 0.05
    gauss = torch.randn(4, 50_000, generator=g)
    gauss[:, ::100] += 50.0  # 1 % outliers
    _, s = robust_location_scale(gauss)
    assert (s - 1).abs().max() < 0.02


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_median_is_torchs_median(n: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(n)
    y = torch.randn(5, 2 * n, generator=g, dtype=dtype)[:, ::2]  # a strided view, as the stats take
    y[1] = torch.round(y[1])  # ties
    y[3, n // 2] = float("nan")
    torch.testing.assert_close(
        row_median(y), y.median(dim=1, keepdim=True).values, rtol=0, atol=0, equal_nan=True
    )
    assert row_median(y).dtype == dtype and row_median(y).shape == (5, 1)


def _band(nchans: int = 256, n: int = 20_000, seed: int = 0) -> torch.Tensor:
    return torch.randn(nchans, n, generator=torch.Generator().manual_seed(seed))


def test_impulse_mask_removes_a_narrowband_impulse_not_a_broadband_one_nor_a_dispersed_pulse() -> None:
    x = _band()
    x[100:130, 5000:5120] += 3.0  # narrowband impulse: 30 channels, 120 samples
    x[:, 9000:9010] += 8.0  # broadband impulse: zero-DM's
    sweep = torch.arange(256) * 30 + 10_000  # a bright pulse crossing the band, 30 samples per channel
    for k in range(4):
        x[torch.arange(256), sweep + k] += 8.0
    before = x.clone()
    regions = impulse_mask(x, torch.zeros(256, dtype=torch.bool), threshold=6.0, scales=[16, 64, 256])
    # within a channel and the coarsest cell (256) of the impulse
    assert regions and all(c0 >= 99 and c1 <= 131 and s >= 4744 and e <= 5376 for c0, c1, s, e in regions)
    assert x[100:130, 5000:5120].abs().mean() < 0.9  # the impulse is gone (set to the centre, 0)
    changed = (x != before).any(dim=0)
    assert not changed[8000:].any()  # the broadband impulse and the pulse untouched


def test_impulse_mask_regions_skip_masked_channels() -> None:
    # A broadband impulse across a masked carrier is still one broadband region (left to zero-DM),
    # not two narrowband halves.
    x = _band()
    x[:, 9000:9010] += 8.0
    x[120:124] = 0.0
    mask = torch.zeros(256, dtype=torch.bool)
    mask[120:124] = True
    assert impulse_mask(x, mask, threshold=6.0, scales=[16, 64]) == []


def test_clean_block_records_the_impulses_it_masked() -> None:
    x = 100 + 10 * _band(seed=1)
    x[40:60, 8000:8200] += 40.0
    cleaned = clean_block(x, RfiConfig(), tsamp_s=256e-6)
    assert cleaned.impulses and not cleaned.mask[40:60].all()
    off = clean_block(x, RfiConfig(impulse_threshold=0), tsamp_s=256e-6)
    # the test off: the kurtosis test takes the 20 channels whole instead of 200 samples of each
    assert off.impulses == [] and bool(off.mask[40:60].all())
