"""``open_observation``: one way in for SIGPROC and PSRFITS data, streamed in overlapping gulps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from cudalab.errors import CudalabError
from cudalab.radio.header import Header

PSRFITS_SUFFIXES = (".fits", ".sf", ".fit", ".psrfits")
SIGPROC_SUFFIXES = (".fil", ".tim")


class _Reader(Protocol):
    header: Header

    def read(self, start: int, count: int) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class Block:
    """A stretch of data.

    Attributes
    ----------
    start
        Index of the first sample in the file.
    data
        Float32 total intensity.  Shape: ``(nchans, nsamples)``.
    valid
        Samples at the head of ``data`` that are new in this block; the rest is the overlap that the
        next block starts with (the dispersion sweep needs it to finish the last outputs).
    """

    start: int
    data: NDArray[np.float32]
    valid: int


class Observation:
    """An open data file: an immutable :class:`Header` and random or streamed access to its samples."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self.header: Header = reader.header

    @property
    def reader(self) -> _Reader:
        """The format's reader (a SIGPROC reader also offers ``read_raw``: samples as stored)."""
        return self._reader

    def read(self, start: int = 0, count: int | None = None) -> NDArray[np.float32]:
        """Samples ``[start, start + count)`` (to the end by default).  Shape: ``(nchans, n)``."""
        n = self.header.nsamples - start if count is None else count
        return self._reader.read(start, n)

    def read_padded(self, start: int, count: int) -> NDArray[np.float32]:
        """``count`` samples from ``start`` (which may be negative or run past the end), zero outside the
        file.  Shape: ``(nchans, count)``. For windows around a candidate near the file's edges."""
        out = np.zeros((self.header.nchans, count), dtype=np.float32)
        lo = max(0, start)
        raw = self._reader.read(lo, count - (lo - start))
        out[:, lo - start : lo - start + raw.shape[1]] = raw
        return out

    def blocks(self, gulp: int, overlap: int = 0) -> Iterator[Block]:
        """Stream the file in blocks of ``gulp + overlap`` samples that advance by ``gulp``.

        Each block repeats the last ``overlap`` samples of the previous one's extent, so a stage that
        needs ``overlap`` samples of look-ahead (dedispersion: the maximum delay) sees every output
        sample exactly once, in ``block.valid`` outputs per block. Memory: one block.
        """
        if gulp < 1 or overlap < 0:
            raise ValueError(f"gulp must be >= 1 and overlap >= 0, not {gulp}, {overlap}")
        total = self.header.nsamples
        start = 0
        while start < total:
            data = self._reader.read(start, gulp + overlap)
            valid = min(gulp, total - start)
            yield Block(start=start, data=data, valid=valid)
            start += gulp


def open_observation(path: str | Path) -> Observation:
    """Open a SIGPROC (``.fil``, ``.tim``) or PSRFITS search-mode (``.fits``, ``.sf``) file.

    The format is decided by the file's first bytes, not its name.

    Raises
    ------
    CudalabError
        One line naming the file and the fault: missing, truncated, empty, unknown nbits, nonsense header.
    """
    p = Path(path)
    if not p.exists():
        raise CudalabError(f"{p}: no such file")
    if p.is_dir():
        raise CudalabError(f"{p}: is a directory, not a data file")
    with p.open("rb") as fh:
        head = fh.read(16)
    if head[4:16] == b"HEADER_START":
        from cudalab.radio.sigproc import SigprocReader

        return Observation(SigprocReader(p))
    if head.startswith(b"SIMPLE  ="):
        from cudalab.radio.psrfits import PsrfitsReader

        return Observation(PsrfitsReader(p))
    if not head:
        raise CudalabError(f"{p}: empty file")
    raise CudalabError(f"{p}: neither SIGPROC (no HEADER_START) nor FITS (no SIMPLE card)")
