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
    y, mask, _, _ = clean_block(x, RfiConfig())
    assert mask[40] and mask[41] and mask.sum() <= 3
    assert (y[mask] == 0).all()
    good = ~mask
    assert y[good].std(dim=1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert y[good][:, 1000:1003].mean().abs() < 0.15  # the impulse is gone; unit noise remains (375 samples)
    assert y[torch.arange(128)[good], sweep[good]].mean() > 2.5


def test_clean_block_scales_long_channels_from_a_strided_subset() -> None:
    """A block longer than STATS_SAMPLES takes each channel's median and MAD from evenly spaced samples:
    every channel still comes out at zero median and unit robust std, to well within their errors."""
    n = 3 * STATS_SAMPLES + 5
    g = torch.Generator().manual_seed(6)
    gains = torch.tensor([0.5, 1.0, 7.0, 30.0])[:, None]
    x = 100 * gains + gains * torch.randn(4, n, generator=g)
    out, mask, _, _ = clean_block(x, RfiConfig(zero_dm=False, mad_threshold=0, sk_threshold=0))
    assert not mask.any()
    med = out.median(dim=1).values
    mad_std = (out - med[:, None]).abs().median(dim=1).values * MAD_TO_STD
    assert med.abs().max() < 0.02 and (mad_std - 1).abs().max() < 0.02
