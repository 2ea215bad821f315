"""``open_observation``: one way in for SIGPROC and PSRFITS data (streamed in blocks by
:class:`cudalab.radio.io.stream.BlockStream`)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header

#: A PRESTO time series is raw floats: told by its name, ``NAME.dat`` with ``NAME.inf`` beside it.
PRESTO_SUFFIXES = (".dat", ".inf")


class _Reader(Protocol):
    header: Header

    def read(self, start: int, count: int) -> NDArray[np.float32]: ...


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


def open_observation(path: str | Path) -> Observation:
    """Open a SIGPROC (``.fil``, ``.tim``) or PSRFITS search-mode (``.fits``, ``.sf``) file, or a PRESTO
    time series (``.dat`` with its ``.inf``, either named).

    The format is decided by the file's first bytes, not its name (a PRESTO ``.dat`` has none: its
    name and the ``.inf`` beside it say what it is).

    Raises
    ------
    CudalabError
        One line naming the file and the fault: missing, not a regular file (a FIFO would block the
        reader forever), unreadable, empty, truncated, no samples, a header value out of range.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise CudalabError(f"{p}: no such file") from None
    except OSError as exc:
        raise CudalabError(f"{p}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise CudalabError(f"{p}: is a directory, not a data file")
    if not stat.S_ISREG(mode):
        raise CudalabError(f"{p}: not a regular file (a FIFO, device or socket cannot be read as data)")
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CudalabError(f"{p}: cannot read it ({exc.strerror})") from None
    if p.suffix in PRESTO_SUFFIXES and head[4:16] != b"HEADER_START":
        from cudalab.radio.io.presto import PrestoReader

        obs = Observation(PrestoReader(p))
    elif head[4:16] == b"HEADER_START":
        from cudalab.radio.io.sigproc import SigprocReader

        obs = Observation(SigprocReader(p))
    elif head.startswith(b"SIMPLE  ="):
        from cudalab.radio.io.psrfits import PsrfitsReader

        obs = Observation(PsrfitsReader(p))
    elif not head:
        raise CudalabError(f"{p}: empty file")
    else:
        raise CudalabError(f"{p}: neither SIGPROC (no HEADER_START) nor FITS (no SIMPLE card)")
    if obs.header.nsamples == 0:
        raise CudalabError(f"{p}: holds no samples after its header")
    return obs
