"""SIGPROC I/O on the real Parkes, Apertif and GBT files and on round trips."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header
from cudalab.radio.io.observation import open_observation
from cudalab.radio.io.psrfits import unpack_msb_first
from cudalab.radio.io.sigproc import (
    encode_header,
    pack_lsb_first,
    read_header_dict,
    unpack_lsb_first,
    write_sigproc,
)


def _median_channel_corr(a: np.ndarray, b: np.ndarray) -> float:
    good = (a.std(axis=1) > 0) & (b.std(axis=1) > 0)
    a, b = a[good] - a[good].mean(1, keepdims=True), b[good] - b[good].mean(1, keepdims=True)
    r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return float(np.median(r))


@pytest.mark.parametrize(("nbits", "expect"), [(4, 0.97), (2, 0.94), (1, 0.80)])
def test_sub_byte_unpacking_matches_the_8bit_copy(shared_data: Path, nbits: int, expect: float) -> None:
    ref = open_observation(shared_data / "radio" / "parkes_8bit_1.fil").read()
    obs = open_observation(shared_data / "radio" / f"parkes_{nbits}bit.fil")
    assert obs.header.nbits == nbits and obs.header.nsamples == 4096 and obs.header.nchans == 832
    data = obs.read()
    corr = _median_channel_corr(ref, data)
    assert corr > 0.75 and corr == pytest.approx(expect, abs=0.03)
    # The opposite (PSRFITS) bit order scrambles channels within each byte: no correlation left.
    raw = np.fromfile(obs.header.path, dtype=np.uint8, offset=obs.header.extra["hdrlen"]).reshape(4096, -1)
    wrong = unpack_msb_first(raw, nbits).T.astype(np.float32)
    assert abs(_median_channel_corr(ref, wrong)) < 0.1


def test_header_keys_and_types(shared_data: Path) -> None:
    values, hdrlen = read_header_dict(shared_data / "radio" / "parkes_8bit_1.fil")
    assert hdrlen == 351
    assert values["source_name"] == "J0534+2200" and values["telescope_id"] == 4
    assert values["src_raj"] == pytest.approx(53431.9) and values["src_dej"] == pytest.approx(220052.0)
    h = open_observation(shared_data / "radio" / "parkes_8bit_1.fil").header
    assert (h.fch1_mhz, h.foff_mhz, h.tsamp_s) == (4030.0, -4.0, 0.000512)
    assert h.fmax_mhz == 4030.0 and h.fmin_mhz == 4030.0 - 4 * 831


def test_ascending_band(shared_data: Path) -> None:
    h = open_observation(shared_data / "radio" / "ascending_noise.fil").header
    assert h.ascending and h.foff_mhz == 1.0 and h.nchans == 32 and h.nsamples == 512
    assert h.fmax_mhz == 1431.0 and h.freqs_mhz[0] == 1400.0


def test_time_series_and_small_files(shared_data: Path) -> None:
    tim = open_observation(shared_data / "radio" / "GBT_J1807-0847.tim")
    assert (
        tim.header.data_type == 2 and tim.header.nbits == 32 and tim.header.refdm == pytest.approx(112.3802)
    )
    series = tim.read()[0]
    # The pulsar's spin frequency (6.108 Hz) stands out in the power spectrum of the real series.
    power = np.abs(np.fft.rfft(series - series.mean())) ** 2
    freqs = np.fft.rfftfreq(len(series), tim.header.tsamp_s)
    band = (freqs > 1) & (freqs < 50)
    resolution = 1 / tim.header.duration_s  # 0.047 Hz
    peak = freqs[band][np.argmax(power[band])]
    assert min(abs(peak - k * 6.108) for k in (1, 2, 3, 4)) <= resolution
    small = open_observation(shared_data / "radio" / "small.fil")
    assert small.header.nsamples == 10 and small.read().shape == (336, 10)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("foff", [-0.5, 0.5])
def test_round_trip_every_bit_depth(tmp_path: Path, nbits: int, foff: float) -> None:
    rng = np.random.default_rng(nbits)
    nchans, nsamp = 16, 101
    top = 1.0 if nbits == 32 else (1 << min(nbits, 16)) - 1
    data = (
        rng.integers(0, int(top) + 1, size=(nchans, nsamp)).astype(np.float32)
        if nbits < 32
        else rng.standard_normal((nchans, nsamp)).astype(np.float32)
    )
    h = Header(
        path="",
        format="sigproc",
        nchans=nchans,
        nsamples=nsamp,
        tsamp_s=64e-6,
        fch1_mhz=1400.0,
        foff_mhz=foff,
        nbits=nbits,
        tstart_mjd=60123.5,
        source_name="rt",
        extra={"telescope_id": 6, "src_raj": 53431.9},
    )
    path = write_sigproc(tmp_path / f"x{nbits}.fil", h, data)
    obs = open_observation(path)
    assert obs.header.nsamples == nsamp and obs.header.nbits == nbits and obs.header.foff_mhz == foff
    assert obs.header.tstart_mjd == 60123.5 and obs.header.extra["src_raj"] == 53431.9
    np.testing.assert_array_equal(obs.read(), data)
    np.testing.assert_array_equal(obs.read(37, 20), data[:, 37:57])


def test_pack_order_is_first_channel_in_least_significant_bits() -> None:
    packed = pack_lsb_first(np.array([[1, 2, 3, 0]], dtype=np.uint8), 2)
    assert packed.tolist() == [[0b00_11_10_01]]
    np.testing.assert_array_equal(unpack_lsb_first(packed, 2), [[1, 2, 3, 0]])


@pytest.mark.parametrize("nbits", [8, 16])
def test_signed_integers_round_trip(tmp_path: Path, nbits: int) -> None:
    lo, hi = -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1
    data = np.array([[lo, -1, 0, hi]], dtype=np.float32).repeat(2, axis=0)
    h = Header(
        path="",
        format="sigproc",
        nchans=2,
        nsamples=4,
        tsamp_s=1e-3,
        fch1_mhz=1400,
        foff_mhz=-1,
        nbits=nbits,
        signed=True,
    )
    obs = open_observation(write_sigproc(tmp_path / "s.fil", h, data))
    assert obs.header.signed
    np.testing.assert_array_equal(obs.read(), data)


def _hdr(**kv: object) -> bytes:
    def s(x: str) -> bytes:
        return struct.pack("<i", len(x)) + x.encode()

    body = b""
    for k, v in kv.items():
        body += s(k) + (struct.pack("<i", v) if isinstance(v, int) else struct.pack("<d", v))
    return s("HEADER_START") + body + s("HEADER_END")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello world, not a header", "neither SIGPROC"),
        (_hdr(nchans=4, nbits=3, tsamp=1e-3, fch1=1400.0, foff=-1.0) + b"\0" * 8, "nbits"),
        (_hdr(nchans=4, nbits=8, tsamp=1e-3, fch1=1400.0, foff=-1.0) + b"\0" * 10, "truncated"),
        (_hdr(nchans=4, nbits=8, tsamp=-1.0, fch1=1400.0, foff=-1.0) + b"\0" * 8, "tsamp"),
        (
            _hdr(nchans=4, nbits=8, tsamp=1e-3, fch1=1400.0, foff=-1.0, nsamples=9) + b"\0" * 8,
            "header says 9 samples",
        ),
        (_hdr(nchans=4, nbits=8, tsamp=1e-3)[:-14], "truncated header"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.fil"
    path.write_bytes(content)
    with pytest.raises(CudalabError) as exc:
        open_observation(path)
    assert str(path) in str(exc.value) and message in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "k.fil"
    body = _hdr(nchans=4, nbits=8, tsamp=1e-3, fch1=1400.0, foff=-1.0)
    key = b"mystery"
    path.write_bytes(body[:-14] + struct.pack("<i", len(key)) + key + body[-14:])
    with pytest.raises(CudalabError, match="unknown header key 'mystery'"):
        open_observation(path)


def test_header_encoding_is_what_we_read(tmp_path: Path) -> None:
    h = Header(
        path="", format="sigproc", nchans=3, nsamples=0, tsamp_s=1e-4, fch1_mhz=1500.0, foff_mhz=-1.0, nbits=8
    )
    path = tmp_path / "h.fil"
    path.write_bytes(encode_header(h))
    values, hdrlen = read_header_dict(path)
    assert hdrlen == path.stat().st_size and values["nchans"] == 3
    with pytest.raises(CudalabError, match="holds no samples after its header"):
        open_observation(path)  # a header alone is not an observation


def test_packed_sexagesimal_positions(shared_data: Path) -> None:
    from cudalab.radio.io.header import sigproc_angle_deg

    assert sigproc_angle_deg(53431.9, hours=True) == pytest.approx((5 + 34 / 60 + 31.9 / 3600) * 15)
    assert sigproc_angle_deg(220052.0, hours=False) == pytest.approx(22 + 52 / 3600)
    assert sigproc_angle_deg(-84743.7463, hours=False) == pytest.approx(-(8 + 47 / 60 + 43.7463 / 3600))
    ra, dec = open_observation(shared_data / "radio" / "parkes_8bit_1.fil").header.position_deg  # type: ignore[misc]
    assert ra == pytest.approx(83.633, abs=1e-3) and dec == pytest.approx(22.0144, abs=1e-3)  # the Crab
