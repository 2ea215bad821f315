"""A corpus of bad radio files, made from the shared ones, through ``cudalab radio info`` and ``search``.

Truncations at many offsets, every header field set to absurd values, sizes that disagree, random
bytes, special files: each must end in success on a file that is really valid, or in one line on
stderr with exit 2. Never a traceback, never a hang (a watchdog alarm), never a partial output, and
never a bad file accepted silently. Then property-based fuzzing of the SIGPROC header parser and the
PSRFITS card reader (hypothesis).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cudalab.cli import main
from cudalab.errors import CudalabError
from cudalab.radio.io.header import MAX_CHANNELS, MAX_FREQ_MHZ, MAX_TSAMP_S, MIN_FREQ_MHZ
from cudalab.radio.io.sigproc import KEY_TYPES, header_from_dict, read_header_dict

SIGPROC = [
    "parkes_8bit_1.fil",
    "parkes_2bit.fil",
    "tutorial.fil",
    "ascending_noise.fil",
    "small.fil",
    "GBT_J1807-0847.tim",
]
WATCHDOG_S = 30


@contextlib.contextmanager
def watchdog(seconds: int = WATCHDOG_S) -> Iterator[None]:
    """Fail (instead of waiting forever) when the block takes longer than ``seconds``."""

    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``cudalab ARGV`` in-process under the watchdog: (exit code, stderr); a traceback fails the test."""
    with watchdog():
        code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if code != 0:
        assert code == 2, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cudalab: error: "), (argv, err)
    return code, err


def search(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, err = run(
        [
            "radio",
            "search",
            str(path),
            "--out",
            str(out),
            "--dm-max",
            "30",
            "--cutouts",
            "0",
            "--no-classify",  # the input's handling is tested here, not the classifier's (test_classify)
            "--device",
            "cpu",
        ],
        capsys,
    )
    if code != 0:  # no partial output: neither the folder nor its staging
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), err
    return code, err


def sigproc_header(path: Path) -> tuple[dict[str, object], int]:
    values, hdrlen = read_header_dict(path)
    return values, hdrlen


def encode(values: dict[str, object]) -> bytes:
    """A SIGPROC header from key -> value (the types of :data:`KEY_TYPES`), unvalidated."""

    def string(s: str) -> bytes:
        b = s.encode("ascii")
        return struct.pack("<i", len(b)) + b

    out = string("HEADER_START")
    for key, value in values.items():
        if key == "fchannel":
            continue
        kind = KEY_TYPES[key]
        out += string(key)
        out += (
            string(str(value)) if kind == "s" else struct.pack({"i": "<i", "d": "<d", "b": "<b"}[kind], value)
        )
    return out + string("HEADER_END")


# --------------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIGPROC)
def test_truncations_are_refused_unless_the_file_is_still_whole(
    name: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = shared_data / "radio" / name
    data = src.read_bytes()
    values, hdrlen = sigproc_header(src)
    nbytes = int(values.get("nchans", 1)) * int(values.get("nifs", 1)) * int(values["nbits"]) // 8
    cuts = sorted(
        {
            *range(0, hdrlen + 1, max(1, hdrlen // 8)),
            hdrlen + 1,
            hdrlen + nbytes - 1,
            hdrlen + nbytes,
            len(data) - 1,
        }
    )
    for cut in cuts:
        bad = tmp_path / f"cut{cut}.fil"
        bad.write_bytes(data[:cut])
        code, err = run(["radio", "info", str(bad)], capsys)
        whole = cut > hdrlen and (cut - hdrlen) % nbytes == 0
        assert (code == 0) == whole, (cut, err)  # a cut mid-header, mid-sample or at no sample: refused
        if not whole:
            assert str(bad) in err


@pytest.mark.parametrize(
    ("key", "values", "must_refuse"),
    [
        ("nchans", [0, -1, MAX_CHANNELS + 1, 2**31 - 1], True),
        ("nbits", [0, 3, 7, 64, -8, 2**31 - 1], True),
        ("nifs", [0, -2], True),
        ("tsamp", [0.0, -1e-3, math.nan, math.inf, 1e300, MAX_TSAMP_S * 2], True),
        ("fch1", [0.0, -1400.0, math.nan, math.inf, -math.inf, 1e-300, 1e300, MAX_FREQ_MHZ * 10], True),
        ("foff", [0.0, math.nan, math.inf, 1e300, -1e300, -1500.0], True),  # -1500: the band reaches 0 MHz
        ("tstart", [math.nan, math.inf], True),
        ("data_type", [3, -1, 99], True),
        ("nsamples", [10**9], True),  # more samples declared than the file holds
        ("refdm", [math.nan], True),
        ("tstart", [0.0, 59000.5], False),  # values that are fine
        ("src_raj", [0.0, 123456.7], False),
    ],
)
def test_absurd_header_values_are_refused_naming_the_file(
    key: str,
    values: list[float],
    must_refuse: bool,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = shared_data / "radio" / "parkes_8bit_1.fil"
    header, hdrlen = sigproc_header(src)
    samples = src.read_bytes()[hdrlen:]
    for value in values:
        bad = tmp_path / f"{key}.fil"
        bad.write_bytes(encode({**header, key: value}) + samples)
        code, err = run(["radio", "info", str(bad)], capsys)
        if must_refuse:
            assert code == 2 and str(bad) in err, (key, value, err)
        else:
            assert code == 0, (key, value, err)
    if not must_refuse:
        assert search(bad, tmp_path / "out", capsys)[0] == 0


def test_sizes_that_disagree_and_random_bytes(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = shared_data / "radio" / "parkes_8bit_1.fil"
    header, hdrlen = sigproc_header(src)
    samples = src.read_bytes()[hdrlen:]
    rng = np.random.default_rng(0)
    cases = {
        "odd_bits.fil": encode({**header, "nchans": 3, "nbits": 1}) + samples,  # 3 bits a sample
        "one_byte_more.fil": src.read_bytes() + b"\x00",
        "garbage.fil": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "garbage_after_magic.fil": encode({})[:16] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "no_header_end.fil": encode(header)[:-14],
        "unknown_key.fil": encode(header).replace(b"source_name", b"source_nomen"),
        "fits_magic.fits": b"SIMPLE  =" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.fil": b"",
    }
    for name, blob in cases.items():
        bad = tmp_path / name
        bad.write_bytes(blob)
        for argv in (["radio", "info", str(bad)],):
            code, err = run(argv, capsys)
            assert code == 2 and str(bad) in err, (name, err)
        assert search(bad, tmp_path / "out", capsys)[0] == 2


def test_special_files_are_refused_without_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.fil"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.fil"
    loop.symlink_to(loop)
    cases = {
        fifo: "not a regular file",
        Path("/dev/null"): "not a regular file",
        tmp_path: "is a directory",
        loop: "cannot read it",
    }
    for path, message in cases.items():
        code, err = run(["radio", "info", str(path)], capsys)
        assert code == 2 and message in err, (path, err)
        code, err = search(path, tmp_path / "out", capsys)
        assert code == 2 and message in err, (path, err)


def test_psrfits_header_faults_are_one_line(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from astropy.io import fits

    src = shared_data / "radio" / "parkes_4bit.sf"
    edits: dict[str, tuple[str, object | None, str]] = {
        "no_nbits": ("NBITS", None, "lacks NBITS"),
        "nbits_word": ("NBITS", "eight", "NBITS is 'eight', not a number"),
        "tbin_word": ("TBIN", "fast", "TBIN is 'fast', not a number"),
        "nchan_wrong": ("NCHAN", 417, "DATA holds"),
        "npol_wrong": ("NPOL", 2, "DATA holds"),
        "nsblk_wrong": ("NSBLK", 4096, "DATA holds"),
        "npol_three": ("NPOL", 3, "unsupported NPOL 3"),
        "tbin_zero": ("TBIN", 0.0, "tsamp must be > 0"),
        "chan_bw_zero": ("CHAN_BW", 0.0, "foff must not be 0"),
    }
    for name, (card, value, message) in edits.items():
        bad = tmp_path / f"{name}.sf"
        with fits.open(src) as hdul:
            sub = hdul["SUBINT"].header
            if value is None:
                del sub[card]
            else:
                sub[card] = value
            hdul.writeto(bad, output_verify="silentfix")
        code, err = run(["radio", "info", str(bad)], capsys)
        assert code == 2 and message in err and str(bad) in err, (name, err)
    data = src.read_bytes()
    for cut in (2880, 2880 * 3, len(data) // 2, len(data) - 4000):
        bad = tmp_path / f"cut{cut}.sf"
        bad.write_bytes(data[:cut])
        code, err = run(["radio", "info", str(bad)], capsys)
        assert code == 2 and str(bad) in err, (cut, err)


# --------------------------------------------------------------------------------------------------
# fuzzing
# --------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_after_the_magic_parse_or_fail_in_one_line(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "fuzz.fil"
    path.write_bytes(encode({})[:16] + blob)
    with watchdog(10), contextlib.suppress(CudalabError):
        values, hdrlen = read_header_dict(path)
        header_from_dict(values, hdrlen, path.stat().st_size, path)


def _value(kind: str) -> st.SearchStrategy[object]:
    if kind == "i":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "d":
        return st.floats(allow_nan=True, allow_infinity=True, width=64)
    if kind == "b":
        return st.integers(-128, 127)
    return st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)


HEADERS = st.fixed_dictionaries({}, optional={k: _value(t) for k, t in KEY_TYPES.items() if k != "fchannel"})


@FUZZ
@given(HEADERS, st.integers(0, 5000))
def test_a_header_that_parses_describes_a_real_observation(
    tmp_path: Path, header: dict[str, object], nbytes: int
) -> None:
    """Whatever the values: a header is refused in one line, or describes something searchable."""
    path = tmp_path / "fuzz.fil"
    path.write_bytes(encode(header) + b"\x00" * nbytes)
    try:
        values, hdrlen = read_header_dict(path)
        h = header_from_dict(values, hdrlen, path.stat().st_size, path)
    except CudalabError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert 1 <= h.nchans <= MAX_CHANNELS and 0 < h.tsamp_s <= MAX_TSAMP_S and h.nbits in (1, 2, 4, 8, 16, 32)
    assert math.isfinite(h.tstart_mjd) and math.isfinite(h.refdm)
    assert h.nsamples * h.nchans * h.npol_stored * h.nbits == 8 * (path.stat().st_size - hdrlen)
    if h.data_type != 2:
        assert MIN_FREQ_MHZ <= h.fmin_mhz <= h.fmax_mhz <= MAX_FREQ_MHZ


WORDS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=5)  # what a card holds


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "NBITS": st.one_of(st.integers(-10, 64), WORDS, st.floats()),
            "NCHAN": st.one_of(st.integers(-5, 2**20), st.floats()),
            "NPOL": st.integers(-2, 8),
            "NSBLK": st.one_of(st.integers(-5, 2**16), st.floats()),
            "TBIN": st.one_of(st.floats(), WORDS, st.integers(-5, 5)),
            "CHAN_BW": st.one_of(st.floats(), st.integers(-5, 5)),
            "ZERO_OFF": st.one_of(st.floats(), WORDS),
        },
    )
)
def test_psrfits_cards_of_any_value_read_or_fail_in_one_line(
    tmp_path: Path, cards: dict[str, object]
) -> None:
    from astropy.io import fits

    from tests.radio.test_psrfits import write_psrfits

    path = tmp_path / "fuzz.sf"
    path.unlink(missing_ok=True)
    raw = np.zeros((2, 16, 1, 8), dtype=np.uint8)
    one = np.ones(8, dtype=np.float32)
    write_psrfits(path, raw, nbits=8, pol_type="AA+BB", scl=one, offs=0 * one, wts=one)
    with fits.open(path, mode="update") as hdul:
        sub = hdul["SUBINT"].header
        for card, value in cards.items():
            if isinstance(value, float) and not math.isfinite(value):
                continue  # FITS cannot hold a NaN card; astropy refuses to write one
            sub[card] = value
    from cudalab.radio.io.observation import open_observation

    with watchdog(10):
        try:
            obs = open_observation(path)
        except CudalabError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        h = obs.header
        assert h.nbits in (1, 2, 4, 8) and h.nchans >= 1 and 0 < h.tsamp_s <= MAX_TSAMP_S
        assert obs.read(0, h.nsamples).shape == (h.nchans, h.nsamples)
