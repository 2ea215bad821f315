"""The classifier's parts on synthetic planes: each augmentation does what it says, the losses and
ranking metrics match their definitions, the models take both planes, and FETCH files (ours and
``your_candmaker``'s layout) read the same way round."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cudalab.cli import main
from cudalab.errors import ExitCode
from cudalab.radio.classify.augment import (
    AugmentConfig,
    Geometry,
    add_noise,
    augment,
    dedisperse_pattern,
    dm_drift,
    impulse_pattern,
    mask_rows,
    narrowband_pattern,
    time_shift,
)
from cudalab.radio.classify.data import load_planes, normalise, planes, read_cutout
from cudalab.radio.classify.losses import (
    average_precision,
    class_balanced_weights,
    focal_loss,
    roc_auc,
    weighted_bce,
)
from cudalab.radio.classify.models import MODELS, STRETCH_KNEE, build_model, stretch

S = 64


def _geometry(b: int, dm: float = 500.0, px_per_dm: float = 0.05) -> Geometry:
    def full(v: float) -> torch.Tensor:
        return torch.full((b,), v)

    # the DM-time rows span 0 to a DM such that row S // 2 is the cutout's DM exactly
    return Geometry(
        full(1500.0), full(1200.0), full(px_per_dm), full(dm), full(0.0), full(dm * (S - 1) / (S // 2))
    )


def _pulse_planes(b: int, amplitude: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Unit noise with a dedispersed pulse: a column at the centre of the frequency-time plane and a
    peak at the centre (the cutout's DM) of the DM-time plane."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, S, S, generator=g)
    x[:, 0, :, S // 2] += amplitude
    x[:, 1, S // 2, S // 2] += amplitude * 8
    return x


def _column_snr(x: torch.Tensor) -> torch.Tensor:
    """The band-averaged profile's centre in units of its off-pulse spread, per example."""
    prof = x[:, 0].mean(dim=1)
    off = torch.cat([prof[:, : S // 2 - 4], prof[:, S // 2 + 4 :]], dim=1)
    return (prof[:, S // 2] - off.mean(dim=1)) / off.std(dim=1)


def test_added_noise_lowers_snr_by_the_stated_factor_and_keeps_unit_noise() -> None:
    x = _pulse_planes(256, amplitude=1.0)
    sigma = torch.full((256,), 1.5)
    y = add_noise(x, sigma, torch.Generator().manual_seed(1))
    ratio = float(_column_snr(y).mean() / _column_snr(x).mean())
    assert ratio == pytest.approx(1 / math.sqrt(1 + 1.5**2), rel=0.1)
    assert float(y[:, 0, :, :20].std()) == pytest.approx(1.0, rel=0.02)


def test_dm_drift_bends_the_pulse_along_the_dispersion_law_and_moves_the_dm_peak() -> None:
    x = torch.zeros(1, 2, S, S)
    x[0, 0, :, 20] = 1.0
    x[0, 1, S // 2, 20] = 1.0
    geo = _geometry(1, dm=500.0, px_per_dm=0.05)
    y = dm_drift(x, geo, torch.tensor([8.0]))
    where = (y[0, 0] * torch.arange(S)).sum(dim=1) / y[0, 0].sum(dim=1)  # each row's centroid in time
    frac = geo.sweep_fraction(S)[0]
    np.testing.assert_allclose(where.numpy(), (20 + 8 * frac).numpy(), atol=1e-4)
    assert where[0] < 20.2 and where[-1] > 27.5  # top row nearly unmoved, bottom row the whole sweep
    # 8 px at 0.05 px per unit DM: 160 units of DM, 160 / (500 / 32) = 10.24 rows later in DM-time
    rows = (y[0, 1, :, 20] * torch.arange(S)).sum() / y[0, 1, :, 20].sum()
    assert float(rows) == pytest.approx(S // 2 + 160 / (500 / (S // 2)), abs=0.05)


def test_injected_rfi_lies_where_it_is_drawn_and_dedisperses_consistently() -> None:
    g = torch.Generator().manual_seed(3)
    geo = _geometry(4)
    amp = torch.full((4,), 3.0)
    pattern = narrowband_pattern(4, S, g, torch.device("cpu"), amp)
    for p in pattern:
        rows = p.abs().sum(dim=1) > 0
        assert 1 <= int(rows.sum()) <= int(0.25 * S) + 1  # 1-25 % of the band, contiguous
        idx = torch.nonzero(rows).flatten()
        assert int(idx[-1] - idx[0]) + 1 == int(rows.sum())
        assert set(p.unique().tolist()) == {0.0, 3.0}
    # its DM-time image at the cutout's own DM (the middle row) is the band mean times sqrt(S)
    dmt = dedisperse_pattern(pattern, geo)
    torch.testing.assert_close(dmt[:, S // 2], pattern.mean(dim=1) * math.sqrt(S), atol=0.15, rtol=0.05)
    # an undispersed impulse arrives early in the lower rows by their share of the cutout DM's sweep
    imp = impulse_pattern(_geometry(64), S, g, torch.device("cpu"), torch.full((64,), 3.0))
    frac = geo.sweep_fraction(S)[0]  # of each row's centre: the top row's is just above 0
    sweep = float(geo.dm[0] * geo.px_per_dm[0] * (frac[-1] - frac[0]))
    checked = 0
    widths = set()
    for p in imp:
        t_top = (p[0] * torch.arange(S)).sum() / p[0].sum()
        width = float(p[0].sum()) / 3.0  # the top row, shifted by a fraction of a pixel, interpolated
        if t_top >= sweep + 2 and p[0, -1] == 0:  # the whole track inside the image
            assert 1 - 1e-4 <= width <= S // 8 + 1e-4
            widths.add(round(width))
            t_bottom = (p[-1] * torch.arange(S)).sum() / p[-1].sum()
            assert float(t_top - t_bottom) == pytest.approx(sweep, abs=0.05)
            checked += 1
    assert checked >= 10 and len(widths) >= 4  # wide and narrow impulses


def test_time_shift_moves_both_planes_and_leaves_zeros_behind() -> None:
    x = _pulse_planes(2, amplitude=20.0)
    y = time_shift(x, torch.tensor([3, -5]))
    assert int(y[0, 0].mean(dim=0).argmax()) == S // 2 + 3 and int(y[1, 0].mean(dim=0).argmax()) == S // 2 - 5
    assert int(y[0, 1].amax(dim=0).argmax()) == S // 2 + 3
    assert torch.all(y[0, :, :, :3] == 0) and torch.all(y[1, :, :, -5:] == 0)


def test_masked_channels_are_zeroed_rows_of_the_frequency_time_plane_only() -> None:
    x = _pulse_planes(8) + 5.0
    y = mask_rows(x, torch.full((8,), 0.3), torch.Generator().manual_seed(0))
    zero = (y[:, 0] == 0).all(dim=2)
    assert 0.15 < float(zero.float().mean()) < 0.45
    torch.testing.assert_close(y[:, 1], x[:, 1])
    torch.testing.assert_close(y[:, 0][~zero], x[:, 0][~zero])


def test_augment_is_a_function_of_its_generator_and_keeps_shapes() -> None:
    x = _pulse_planes(16)
    geo = _geometry(16)
    cfg = AugmentConfig(noise_p=0.5, drift_p=0.5, rfi_p=0.5, shift_p=0.5, mask_p=0.5)
    a = augment(x, geo, cfg, torch.Generator().manual_seed(5))
    b = augment(x, geo, cfg, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and torch.isfinite(a).all() and not torch.equal(a, x)
    torch.testing.assert_close(augment(x, geo, AugmentConfig(enabled=False), torch.Generator()), x)


def test_focal_and_balanced_losses_match_their_definitions() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1, 0, 0, 1])
    # gamma 0, alpha 0.5: half the plain cross-entropy
    torch.testing.assert_close(
        focal_loss(logits, y, alpha=0.5, gamma=0.0),
        0.5 * F.binary_cross_entropy_with_logits(logits, y.float()),
    )
    p = torch.sigmoid(logits)
    p_t = torch.where(y == 1, p, 1 - p)
    a_t = torch.where(y == 1, 0.8, 0.2)
    want = (-a_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(focal_loss(logits, y, alpha=0.8, gamma=2.0), want)
    w_neg, w_pos = class_balanced_weights(900, 100, beta=0.999)
    assert w_neg + w_pos == pytest.approx(2.0) and w_pos > 3 * w_neg  # the rare class weighs more
    w = torch.where(y == 1, w_pos, w_neg)
    torch.testing.assert_close(
        weighted_bce(logits, y, (w_neg, w_pos)),
        (w * F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")).mean(),
    )


def test_ranking_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y * 0.8
    s[:20] = s[20:40]  # ties
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(s, y) == pytest.approx(brute)
    order = np.argsort(-s, kind="stable")
    hits = y[order] == 1
    ap = np.mean([hits[: k + 1].mean() for k in np.flatnonzero(hits)])
    assert average_precision(s, y) == pytest.approx(ap)


def test_normalise_keeps_the_noise_at_one_unit_beside_a_bright_interference() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(10.0, 4.0, size=(S, S)).astype(np.float32)
    image[:, S // 2] += 4.0 * 5  # a burst: a column 5 sigma per pixel
    image[:, 5:7] += 4.0 * 1000  # a broadband impulse 1000 sigma per pixel
    z = normalise(image)
    quiet = np.delete(z, [5, 6, S // 2], axis=1)
    # the 3 bright columns of 64 (a share e = 3 / 64) lift the median by Phi^-1(0.5 + e / 2) = 0.06
    # sigma and the median absolute deviation by Phi^-1(0.5 + 0.25 / (1 - e)) / 0.6745 = 1.06 x
    assert float(np.median(quiet)) == pytest.approx(-0.06, abs=0.05)
    assert quiet.std() == pytest.approx(1 / 1.06, abs=0.03)
    # the burst: (5 + 0.06) / 1.06 units, its mean over 64 pixels known to 0.125 (3 sigma allowed)
    assert float(z[:, S // 2].mean()) == pytest.approx(5.06 / 1.06, abs=0.4)
    # the plain standard deviation would have made the burst a tenth of a unit
    assert float(((image - np.median(image)) / image.std())[:, S // 2].mean()) < 0.05
    # more than half the pixels equal (1-bit data): the standard deviation; a flat image: zeros
    bits = (rng.random((S, S)) < 0.2).astype(np.float32)
    assert normalise(bits).std() == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(normalise(np.full((S, S), 3.0, dtype=np.float32)), np.zeros((S, S), np.float32))


def test_the_stretch_is_linear_near_the_noise_and_compresses_far_above() -> None:
    x = torch.linspace(-2000.0, 2000.0, 40001)
    y = stretch(x)
    assert torch.all(torch.diff(y) > 0) and torch.allclose(stretch(-x), -y)
    near = x.abs() <= 1.0
    assert torch.allclose(y[near], x[near], rtol=0.01, atol=1e-6)  # within 1 % up to a unit of noise
    far = x > 50 * STRETCH_KNEE
    assert torch.allclose(y[far], STRETCH_KNEE * torch.log(2 * x[far] / STRETCH_KNEE), rtol=1e-4)
    # a 1000-sigma impulse beside a 40-sigma burst: 40x as bright in, under 3x out
    assert float(stretch(torch.tensor(1000.0)) / stretch(torch.tensor(40.0))) < 3.0


@pytest.mark.parametrize("name", MODELS)
def test_each_model_scores_both_planes(name: str) -> None:
    if name == "mobilenet":
        pytest.importorskip("torchvision")
    model = build_model(name).eval()
    x = torch.randn(3, 2, S, S)
    x[:, :, :, 7] += 1000.0
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model.logits(stretch(x)))  # every model stretches its input first
    assert out.shape == (3,) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# FETCH files: ours and your_candmaker's layout
# --------------------------------------------------------------------------------------------------


def write_yours(path: Path, ft_time_freq: np.ndarray, dmt: np.ndarray, **attrs: object) -> Path:
    """A candidate as ``your``'s ``Candidate.save_h5`` writes it: float32 images compressed with LZF,
    dimension labels as bytes, the header's fields as attributes."""
    with h5py.File(path, "w") as f:
        for k, v in {"cand_id": path.stem, "tcand": 1.0, "dm": 100.0, "snr": 12.0, "width": 4, "label": 1,
                     "dm_opt": -1.0, "snr_opt": -1.0, "fch1": 1500.0, "foff": -1.0, "nchans": ft_time_freq.shape[1],
                     "tsamp": 2.56e-4, **attrs}.items():  # fmt: skip
            f.attrs[k] = v
        d = f.create_dataset("data_freq_time", data=ft_time_freq.astype(np.float32), compression="lzf")
        d.dims[0].label = b"time"
        d.dims[1].label = b"frequency"
        d = f.create_dataset("data_dm_time", data=dmt.astype(np.float32), compression="lzf")
        d.dims[0].label = b"dm"
        d.dims[1].label = b"time"
    return path


def _marked(ntime: int, nfreq: int) -> tuple[np.ndarray, np.ndarray]:
    """A time x frequency image bright in its first (highest) quarter of frequencies and at time 10 %,
    and a DM x time image bright in its last quarter of DMs."""
    rng = np.random.default_rng(1)
    ft = rng.normal(size=(ntime, nfreq))
    ft[:, : nfreq // 4] += 3.0
    ft[ntime // 10, :] += 5.0
    dmt = rng.normal(size=(256, ntime))
    dmt[-64:, :] += 3.0
    return ft, dmt


def test_yours_and_ours_read_the_same_way_round_at_any_size(tmp_path: Path) -> None:
    ft, dmt = _marked(512, 336)  # your_candmaker without resizing: native sizes
    x = load_planes(write_yours(tmp_path / "yours.h5", ft, dmt), S)
    assert x.shape == (2, S, S)
    assert x[0, : S // 4].mean() > 1.0 > x[0, S // 2 :].mean()  # plane 0 is frequency x time, top first
    assert int(x[0].mean(axis=0).argmax()) == S // 10  # time on the last axis
    assert x[1, -S // 4 :].mean() > 1.0 > x[1, : S // 2].mean()
    for plane in x:
        robust_sigma = 1.4826 * float(np.median(np.abs(plane - np.median(plane))))
        assert abs(float(np.median(plane))) < 0.05 and robust_sigma == pytest.approx(1.0, rel=1e-3)
    # the same images written frequency-first (as some tools do) read back identically
    with h5py.File(tmp_path / "transposed.h5", "w") as f:
        d = f.create_dataset("data_freq_time", data=ft.T.astype(np.float32))
        d.dims[0].label = "frequency"
        d.dims[1].label = "time"
        f.create_dataset("data_dm_time", data=dmt.astype(np.float32))
    np.testing.assert_allclose(load_planes(tmp_path / "transposed.h5", S), x, atol=1e-5)
    np.testing.assert_allclose(planes(ft.T, dmt, S), x, atol=1e-5)


def test_bad_cutout_files_are_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "nodm.h5", "w") as f:
        f.create_dataset("data_freq_time", data=np.zeros((8, 8), np.float32))
    ft, dmt = _marked(64, 32)
    ft[3, 3] = np.nan
    write_yours(tmp_path / "nan.h5", ft, dmt)
    for name, fault in (("text.h5", "not an HDF5 file"), ("nodm.h5", "no data_dm_time"), ("nan.h5", "NaN")):
        with pytest.raises(ValueError, match=fault):
            read_cutout(tmp_path / name)
        assert main(["radio", "classify", str(tmp_path / name), "--device", "cpu"]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert name in err and fault in err and "Traceback" not in err and err.count("\n") == 1


def test_augment_ranges_are_checked() -> None:
    with pytest.raises(ValueError, match="rfi_amplitude_max must be >= 1"):
        AugmentConfig(rfi_amplitude_max=0.5)
    with pytest.raises(ValueError, match="augment ranges must be >= 0"):
        AugmentConfig(noise_sigma_max=-1.0)
    AugmentConfig(rfi_amplitude_max=1.0)  # every impulse at 1 sigma a pixel
