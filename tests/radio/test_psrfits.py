"""PSRFITS search mode: the real files, and synthetic files that pin down the conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cudalab.errors import CudalabError
from cudalab.radio.io.observation import open_observation


def write_psrfits(
    path: Path,
    raw: np.ndarray,
    *,
    nbits: int,
    pol_type: str,
    scl: np.ndarray,
    offs: np.ndarray,
    wts: np.ndarray,
    zero_off: float = 0.0,
    tbin: float = 1e-3,
    freqs: np.ndarray | None = None,
) -> None:
    """A minimal PSRFITS search-mode file; ``raw`` is (nrow, nsblk, npol, nchan) integer codes."""
    from astropy.io import fits

    nrow, nsblk, npol, nchan = raw.shape
    flat = raw.reshape(nrow, -1).astype(np.uint8)
    if nbits < 8:  # first value in the most significant bits
        per = 8 // nbits
        v = flat.reshape(nrow, -1, per)
        shifts = (np.arange(per)[::-1] * nbits).astype(np.uint8)
        flat = np.bitwise_or.reduce(v << shifts, axis=-1).astype(np.uint8)
    freqs = np.linspace(1500, 1500 - nchan + 1, nchan) if freqs is None else freqs
    cols = [
        fits.Column(name="TSUBINT", format="1D", array=np.full(nrow, nsblk * tbin)),
        fits.Column(name="OFFS_SUB", format="1D", array=(np.arange(nrow) + 0.5) * nsblk * tbin),
        fits.Column(name="DAT_FREQ", format=f"{nchan}D", array=np.tile(freqs, (nrow, 1))),
        fits.Column(name="DAT_WTS", format=f"{nchan}E", array=np.tile(wts, (nrow, 1))),
        fits.Column(name="DAT_OFFS", format=f"{nchan * npol}E", array=np.tile(offs, (nrow, 1))),
        fits.Column(name="DAT_SCL", format=f"{nchan * npol}E", array=np.tile(scl, (nrow, 1))),
        fits.Column(name="DATA", format=f"{flat.shape[1]}B", array=flat),
    ]
    sub = fits.BinTableHDU.from_columns(cols, name="SUBINT")
    sub.header.update(
        {
            "TBIN": tbin,
            "NCHAN": nchan,
            "NPOL": npol,
            "NBITS": nbits,
            "NSBLK": nsblk,
            "POL_TYPE": pol_type,
            "ZERO_OFF": zero_off,
            "CHAN_BW": float(freqs[1] - freqs[0]) if nchan > 1 else 1.0,
            "NSUBOFFS": 0,
        }
    )
    primary = fits.PrimaryHDU()
    primary.header.update(
        {
            "OBS_MODE": "SEARCH",
            "STT_IMJD": 60000,
            "STT_SMJD": 43200,
            "STT_OFFS": 0.25,
            "SRC_NAME": "SYN",
            "TELESCOP": "cudalab",
        }
    )
    fits.HDUList([primary, sub]).writeto(path)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize(("npol", "pol_type"), [(1, "AA+BB"), (2, "AABB"), (4, "AABBCRCI"), (4, "IQUV")])
def test_synthetic_psrfits_round_trip(tmp_path: Path, nbits: int, npol: int, pol_type: str) -> None:
    rng = np.random.default_rng(nbits * 10 + npol)
    nrow, nsblk, nchan = 3, 16, 8
    raw = rng.integers(0, 1 << nbits, size=(nrow, nsblk, npol, nchan))
    scl = rng.uniform(0.5, 2, size=npol * nchan).astype(np.float32)
    offs = rng.uniform(-3, 3, size=npol * nchan).astype(np.float32)
    wts = np.ones(nchan, np.float32)
    wts[2] = 0.0
    zero_off = (2**nbits - 1) / 2
    path = tmp_path / "syn.fits"
    write_psrfits(path, raw, nbits=nbits, pol_type=pol_type, scl=scl, offs=offs, wts=wts, zero_off=zero_off)
    obs = open_observation(path)
    h = obs.header
    assert (h.nchans, h.nsamples, h.nbits, h.npol_stored) == (nchan, nrow * nsblk, nbits, npol)
    assert h.tstart_mjd == pytest.approx(60000.5 + 0.25 / 86400)
    phys = (raw - zero_off) * scl.reshape(npol, nchan) + offs.reshape(npol, nchan)  # (row, t, pol, chan)
    total = phys[:, :, 0] if npol == 1 or pol_type == "IQUV" else phys[:, :, 0] + phys[:, :, 1]
    expect = (total * wts).reshape(nrow * nsblk, nchan).T
    np.testing.assert_allclose(obs.read(), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        obs.read(10, 20), expect[:, 10:30], rtol=1e-5, atol=1e-5
    )  # across a row boundary


def test_real_parkes_psrfits(shared_data: Path) -> None:
    obs = open_observation(shared_data / "radio" / "parkes_4bit.sf")
    h = obs.header
    assert (h.nchans, h.nsamples, h.nbits, h.npol_stored) == (416, 4096, 4, 4)
    assert (h.fch1_mhz, h.foff_mhz, h.tsamp_s) == (4028.0, -8.0, 0.000512)
    assert h.extra["pol_type"] == "AABBCRCI" and h.source_name == "J0534+2200"
    # It starts 4096 samples before the SIGPROC copy of the same observation.
    fil = open_observation(shared_data / "radio" / "parkes_8bit_1.fil").header
    assert (fil.tstart_mjd - h.tstart_mjd) * 86400 == pytest.approx(4096 * 0.000512, abs=1e-3)
    data = obs.read()
    assert data.shape == (416, 4096) and np.isfinite(data).all() and (data.std(axis=1) > 0).mean() > 0.9


def test_real_small_and_four_pol(shared_data: Path) -> None:
    small = open_observation(shared_data / "radio" / "small.fits")
    assert (small.header.nchans, small.header.nsamples) == (336, 789)
    # The SIGPROC and PSRFITS versions of this tiny file hold the same first 10 samples.
    fil = open_observation(shared_data / "radio" / "small.fil").read()
    np.testing.assert_allclose(small.read(0, 10), fil)
    four = open_observation(shared_data / "radio" / "test_4pol.fits")
    assert four.header.extra["pol_type"] == "IQUV" and four.header.nchans == 512
    from astropy.io import fits

    with fits.open(shared_data / "radio" / "test_4pol.fits") as f:
        stokes_i = f["SUBINT"].data["DATA"][0][:, 0, :].astype(np.float32).T
    np.testing.assert_allclose(four.read(), stokes_i)


def test_empty_psrfits_is_a_clear_error(shared_data: Path) -> None:
    with pytest.raises(
        CudalabError, match=r"empty\.fits: the SUBINT table has no rows \(empty or truncated file\)"
    ):
        open_observation(shared_data / "radio" / "empty.fits")


def test_fold_mode_is_refused(tmp_path: Path) -> None:
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["OBS_MODE"] = "PSR"
    sub = fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="1D", array=np.zeros(1))], name="SUBINT"
    )
    fits.HDUList([primary, sub]).writeto(tmp_path / "fold.fits")
    with pytest.raises(CudalabError, match="OBS_MODE is PSR, not SEARCH"):
        open_observation(tmp_path / "fold.fits")
