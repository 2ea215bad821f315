"""SIGPROC filterbank (.fil) and time-series (.tim) files: read and write, every bit depth.

Layout: a header of length-prefixed keys with typed values between ``HEADER_START`` and
``HEADER_END``, then samples in time order, each holding ``nifs * nchans`` values with the channel
index fastest. Samples narrower than a byte are packed first-channel-in-least-significant-bits
(SIGPROC's own ``pack``/``unpack``; sigpyproc gets this backwards for 2 and 4 bits).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from cudalab._io import atomic_write_bytes
from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header

#: Header keys and their binary types: "i" int32, "d" float64, "s" length-prefixed string,
#: "b" one signed byte (SIGPROC's ``signed``). From SIGPROC's read_header.c, and the keys sigpyproc
#: and ``your`` add.
KEY_TYPES: dict[str, str] = {
    "telescope_id": "i",
    "machine_id": "i",
    "data_type": "i",
    "barycentric": "i",
    "pulsarcentric": "i",
    "nbits": "i",
    "nsamples": "i",
    "nchans": "i",
    "nifs": "i",
    "nbeams": "i",
    "ibeam": "i",
    "sampsize": "i",
    "hdrlen": "i",
    "orig_hdrlen": "i",
    "new_hdrlen": "i",
    "rawdatafile": "s",
    "source_name": "s",
    "telescope": "s",
    "obs_date": "s",
    "obs_time": "s",
    "az_start": "d",
    "za_start": "d",
    "src_raj": "d",
    "src_dej": "d",
    "tstart": "d",
    "tsamp": "d",
    "fch1": "d",
    "foff": "d",
    "refdm": "d",
    "period": "d",
    "gal_l": "d",
    "gal_b": "d",
    "header_tol": "d",
    "flux": "d",
    "pb": "d",
    "ecc": "d",
    "asini": "d",
    "accel": "d",
    "bandwidth": "d",
    "fbottom": "d",
    "ftop": "d",
    "fchannel": "d",
    "signed": "b",
}
_MAX_KEY_LEN = 80
_MAX_HEADER_BYTES = 1 << 20


def _fail(path: Path | str, msg: str) -> CudalabError:
    return CudalabError(f"{path}: {msg}")


def _read_string(fh: BinaryIO, path: Path) -> str:
    raw = fh.read(4)
    if len(raw) < 4:
        raise _fail(path, "truncated header (no HEADER_END)")
    (n,) = struct.unpack("<i", raw)
    if not 0 < n <= _MAX_KEY_LEN:
        raise _fail(path, f"not a SIGPROC header (string length {n} at byte {fh.tell() - 4})")
    data = fh.read(n)
    if len(data) < n:
        raise _fail(path, "truncated header (no HEADER_END)")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(path, f"not a SIGPROC header (non-text key at byte {fh.tell() - n})") from None


def read_header_dict(path: str | Path) -> tuple[dict[str, Any], int]:
    """Parse the header of ``path``: (key -> value, header length in bytes).

    Raises
    ------
    CudalabError
        A file that is missing, not SIGPROC, truncated in its header, or carries an unknown key.
    """
    p = Path(path)
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise _fail(p, exc.strerror or "cannot open") from None
    with fh:
        if _read_string(fh, p) != "HEADER_START":
            raise _fail(p, "not a SIGPROC file (no HEADER_START)")
        values: dict[str, Any] = {}
        freqs: list[float] = []
        while True:
            if fh.tell() > _MAX_HEADER_BYTES:
                raise _fail(p, "header longer than 1 MiB: not a SIGPROC file")
            key = _read_string(fh, p)
            if key == "HEADER_END":
                break
            if key in ("FREQUENCY_START", "FREQUENCY_END"):
                continue
            kind = KEY_TYPES.get(key)
            if kind is None:
                raise _fail(p, f"unknown header key {key!r} at byte {fh.tell() - len(key) - 4}")
            if kind == "s":
                values[key] = _read_string(fh, p)
                continue
            size = {"i": 4, "d": 8, "b": 1}[kind]
            raw = fh.read(size)
            if len(raw) < size:
                raise _fail(p, "truncated header (no HEADER_END)")
            value = struct.unpack({"i": "<i", "d": "<d", "b": "<b"}[kind], raw)[0]
            if key == "fchannel":
                freqs.append(value)
            else:
                values[key] = value
        if freqs:
            values["fchannel"] = freqs
        return values, fh.tell()


def header_from_dict(values: Mapping[str, Any], hdrlen: int, file_size: int, path: str | Path) -> Header:
    """Validate SIGPROC header values and build a :class:`Header` (nsamples from the file size)."""
    p = str(path)
    for key in ("nbits", "tsamp"):
        if key not in values:
            raise _fail(p, f"header lacks {key!r}")
    data_type = int(values.get("data_type", 1))
    nchans = int(values.get("nchans", 1))
    nifs = int(values.get("nifs", 1))
    nbits = int(values["nbits"])
    if nbits not in (1, 2, 4, 8, 16, 32):
        raise _fail(p, f"unsupported nbits {nbits} (1, 2, 4, 8, 16 or 32)")
    if nchans < 1 or nifs < 1:
        raise _fail(p, f"nonsense header: nchans={nchans}, nifs={nifs}")
    bits_per_sample = nchans * nifs * nbits
    if bits_per_sample % 8:
        raise _fail(p, f"{nchans} channels x {nifs} IFs x {nbits} bits is not a whole number of bytes")
    bytes_per_sample = bits_per_sample // 8
    data_bytes = file_size - hdrlen
    nsamples, trailing = divmod(data_bytes, bytes_per_sample)
    if trailing:
        raise _fail(p, f"truncated: the last sample is cut {trailing} bytes into its {bytes_per_sample}")
    declared = int(values.get("nsamples", 0) or 0)
    if declared and declared > nsamples:
        raise _fail(p, f"truncated: header says {declared} samples, the file holds {nsamples}")
    if "fch1" not in values and data_type != 2:
        raise _fail(p, "header lacks 'fch1'")
    if nchans > 1 and "foff" not in values:
        raise _fail(p, "header lacks 'foff'")
    known = {
        "nbits",
        "nchans",
        "nifs",
        "tsamp",
        "fch1",
        "foff",
        "tstart",
        "source_name",
        "data_type",
        "signed",
        "refdm",
    }
    try:
        return Header(
            path=p,
            format="sigproc",
            nchans=nchans,
            nsamples=nsamples,
            tsamp_s=float(values["tsamp"]),
            fch1_mhz=float(values.get("fch1", 0.0)),
            foff_mhz=float(values.get("foff", 0.0)),
            nbits=nbits,
            tstart_mjd=float(values.get("tstart", 0.0)),
            source_name=str(values.get("source_name", "")),
            data_type=data_type,
            npol_stored=nifs,
            signed=bool(values.get("signed", 0)),
            refdm=float(values.get("refdm", 0.0)),
            extra={k: v for k, v in values.items() if k not in known} | {"hdrlen": hdrlen},
        )
    except ValueError as exc:  # the message names the file and the value
        raise CudalabError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------------------


def unpack_lsb_first(packed: NDArray[np.uint8], nbits: int) -> NDArray[np.uint8]:
    """Unpack sub-byte samples stored first-value-in-least-significant-bits (SIGPROC order).

    Shapes: ``(..., nbytes)`` -> ``(..., nbytes * 8 // nbits)``.
    """
    per_byte = 8 // nbits
    mask = (1 << nbits) - 1
    shifts = np.arange(per_byte, dtype=np.uint8) * nbits
    out = (packed[..., None] >> shifts) & mask
    return out.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte).astype(np.uint8)


def pack_lsb_first(values: NDArray[np.integer], nbits: int) -> NDArray[np.uint8]:
    """Inverse of :func:`unpack_lsb_first`; the last axis must be a multiple of ``8 // nbits``."""
    per_byte = 8 // nbits
    v = np.asarray(values, dtype=np.uint8).reshape(*values.shape[:-1], values.shape[-1] // per_byte, per_byte)
    shifts = np.arange(per_byte, dtype=np.uint8) * nbits
    return np.bitwise_or.reduce(v << shifts, axis=-1).astype(np.uint8)


def _dtype(header: Header) -> np.dtype[Any]:
    return {
        8: np.dtype(np.int8) if header.signed else np.dtype(np.uint8),
        16: np.dtype("<i2") if header.signed else np.dtype("<u2"),
        32: np.dtype("<f4"),
    }.get(header.nbits, np.dtype(np.uint8))


class SigprocReader:
    """Random access to the samples of a SIGPROC file through a read-only memory map.

    Only the bytes of the requested samples are touched, so memory stays bounded by the block size.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        values, hdrlen = read_header_dict(self.path)
        self.values = values
        self.header = header_from_dict(values, hdrlen, self.path.stat().st_size, self.path)
        self._hdrlen = hdrlen
        h = self.header
        self._nifs = h.npol_stored
        self._bytes_per_sample = h.nchans * self._nifs * h.nbits // 8
        #: the type :meth:`read_raw` returns (sub-byte samples unpacked to uint8)
        self.raw_dtype: np.dtype[Any] = _dtype(h)
        self._map: np.memmap[Any, np.dtype[np.uint8]] | None = (
            np.memmap(self.path, dtype=np.uint8, mode="r", offset=hdrlen) if h.nsamples else None
        )

    def read_raw(self, start: int, count: int) -> NDArray[Any]:
        """Samples ``[start, start + count)`` as stored: ``(count, nifs, nchans)`` in the file's type.

        Sub-byte samples are unpacked to uint8; 8-, 16- and 32-bit samples are a view of the memory
        map (no copy: the pages are read when the array is). :func:`raw_to_intensity` turns the result
        into what :meth:`read` returns, on the host or, from a torch tensor, on the device: so a
        streamed search moves 8-bit samples to the GPU, a quarter of the float32 bytes.
        """
        h = self.header
        start = max(0, start)
        count = max(0, min(count, h.nsamples - start))
        if count == 0 or self._map is None:
            return np.zeros((0, self._nifs, h.nchans), dtype=_dtype(h))
        raw = np.asarray(self._map[start * self._bytes_per_sample : (start + count) * self._bytes_per_sample])
        if h.nbits < 8:
            values = unpack_lsb_first(raw.reshape(count, self._bytes_per_sample), h.nbits)
        else:
            values = raw.view(_dtype(h))
        return values.reshape(count, self._nifs, h.nchans)

    def read(self, start: int, count: int) -> NDArray[np.float32]:
        """Samples ``[start, start + count)`` as float32 total intensity.  Shape: ``(nchans, count)``.

        ``nifs == 2`` sums the two IFs (AA + BB); ``nifs == 4`` keeps the first (Stokes I).
        """
        values = self.read_raw(start, count)  # (time, if, chan)
        total = (
            values[:, :2].sum(axis=1, dtype=np.float32)
            if self._nifs == 2
            else values[:, 0].astype(np.float32)
        )
        return np.ascontiguousarray(total.T)  # (chan, time)


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _encode(key: str, value: Any) -> bytes:
    def string(s: str) -> bytes:
        b = s.encode("ascii")
        return struct.pack("<i", len(b)) + b

    kind = KEY_TYPES[key]
    if kind == "s":
        return string(key) + string(str(value))
    return string(key) + struct.pack({"i": "<i", "d": "<d", "b": "<b"}[kind], value)


def encode_header(header: Header, extra: Mapping[str, Any] | None = None) -> bytes:
    """The binary SIGPROC header for ``header`` (plus any known keys in ``extra``)."""

    def string(s: str) -> bytes:
        return struct.pack("<i", len(s)) + s.encode("ascii")

    values: dict[str, Any] = {
        "source_name": header.source_name or "unknown",
        "data_type": header.data_type,
        "nchans": header.nchans,
        "nifs": 1,
        "nbits": header.nbits,
        "tsamp": header.tsamp_s,
        "tstart": header.tstart_mjd,
        "fch1": header.fch1_mhz,
        "foff": header.foff_mhz,
    }
    if header.nbits in (8, 16) and header.signed:  # the reader honours it for both integer widths
        values["signed"] = 1
    if header.data_type == 2:
        values["refdm"] = header.refdm
    for key, value in {**dict(header.extra), **dict(extra or {})}.items():
        if key in KEY_TYPES and key not in values and key not in ("hdrlen", "nsamples", "fchannel", "signed"):
            values[key] = value
    body = b"".join(_encode(k, v) for k, v in values.items())
    return string("HEADER_START") + body + string("HEADER_END")


def encode_samples(data: NDArray[np.floating[Any]] | NDArray[np.integer[Any]], header: Header) -> bytes:
    """Quantise and pack ``data`` (shape ``(nchans, nsamples)``) for ``header.nbits``.

    Integer formats round and clip to their range; 32-bit is stored as float32.
    """
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[0] != header.nchans:
        raise ValueError(f"data must be (nchans={header.nchans}, nsamples), not {arr.shape}")
    tc = arr.T  # (time, chan): SIGPROC stores the channel index fastest
    if header.nbits == 32:
        return np.ascontiguousarray(tc, dtype="<f4").tobytes()
    if header.nbits in (8, 16):
        info = np.iinfo(_dtype(header))
        return np.clip(np.rint(tc), info.min, info.max).astype(_dtype(header)).tobytes()
    q = np.clip(np.rint(tc), 0, (1 << header.nbits) - 1).astype(np.uint8)
    return pack_lsb_first(q, header.nbits).tobytes()


def write_sigproc(
    path: str | Path, header: Header, data: NDArray[Any], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a SIGPROC filterbank or time series atomically.  ``data``: ``(nchans, nsamples)``."""
    return atomic_write_bytes(path, encode_header(header, extra) + encode_samples(data, header))
