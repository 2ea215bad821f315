"""PSRFITS search-mode files: read total intensity from the SUBINT table.

The DATA column holds, per row (subintegration), ``NSBLK`` samples of ``NPOL`` x ``NCHAN`` values,
channel index fastest; values narrower than a byte are packed first-sample-in-most-significant-bits
(the PSRFITS definition, opposite to SIGPROC). Physical values are
``(raw - ZERO_OFF) * DAT_SCL + DAT_OFFS``, weighted by ``DAT_WTS``. Polarisations are reduced to
total intensity: AA+BB are summed (``AABBCRCI`` and ``AABB``), ``IQUV`` keeps I.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cudalab.errors import CudalabError
from cudalab.radio.io.header import MAX_CHANNELS, Header

#: Seconds per day, for turning STT_IMJD/STT_SMJD/STT_OFFS into an MJD.
SECONDS_PER_DAY = 86400.0

_MISSING = object()


def _card(header: Any, key: str, kind: type[int] | type[float], path: Path, default: Any = _MISSING) -> Any:
    """A header card as an ``int`` or a finite ``float``; one-line error when it is absent (without a
    default), unreadable, or not such a number."""
    try:
        value = header.get(key, None)
    except Exception as exc:  # astropy refuses a card it cannot parse when it is read
        raise CudalabError(f"{path}: the {key} card is unreadable ({type(exc).__name__})") from None
    if value is None or value == "":
        if default is _MISSING:
            raise CudalabError(f"{path}: the header lacks {key}")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CudalabError(f"{path}: {key} is {value!r}, not a number")
    if not math.isfinite(value):
        raise CudalabError(f"{path}: {key} is {value}, not a finite number")
    if kind is int:
        if not float(value).is_integer():
            raise CudalabError(f"{path}: {key} is {value}, not an integer")
        return int(value)
    return float(value)


def unpack_msb_first(packed: NDArray[np.uint8], nbits: int) -> NDArray[np.uint8]:
    """Unpack sub-byte values stored first-value-in-most-significant-bits (PSRFITS order).

    Shapes: ``(..., nbytes)`` -> ``(..., nbytes * 8 // nbits)``.
    """
    per_byte = 8 // nbits
    mask = (1 << nbits) - 1
    shifts = (np.arange(per_byte, dtype=np.uint8)[::-1] * nbits).astype(np.uint8)
    out = (packed[..., None] >> shifts) & mask
    return out.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte).astype(np.uint8)


class PsrfitsReader:
    """Random access to a PSRFITS search-mode file, one subintegration at a time (memory-mapped)."""

    def __init__(self, path: str | Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns of what the checks below report in one line
            self._open(Path(path))

    def _open(self, path: Path) -> None:
        from astropy.io import fits

        self.path = Path(path)
        p = self.path
        if not p.is_file():
            raise CudalabError(f"{p}: no such file")
        try:
            self._hdul = fits.open(p, memmap=True, mode="readonly")
            primary = self._hdul[0].header
            sub = self._hdul["SUBINT"]
            sh = sub.header
            nrows = int(sh.get("NAXIS2", 0))
        except KeyError:
            raise CudalabError(f"{p}: no SUBINT table: not a PSRFITS search-mode file") from None
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise CudalabError(f"{p}: not a readable FITS file ({str(exc).splitlines()[0]})") from None
        mode = str(primary.get("OBS_MODE", "SEARCH")).strip().upper()
        if mode != "SEARCH":
            raise CudalabError(f"{p}: OBS_MODE is {mode}, not SEARCH (fold-mode data cannot be searched)")
        if nrows == 0:
            raise CudalabError(f"{p}: the SUBINT table has no rows (empty or truncated file)")
        self._sub = sub
        self.nbits = _card(sh, "NBITS", int, p)
        if self.nbits not in (1, 2, 4, 8):
            raise CudalabError(f"{p}: unsupported NBITS {self.nbits} (1, 2, 4 or 8)")
        self.nchan = _card(sh, "NCHAN", int, p)
        self.npol = _card(sh, "NPOL", int, p)
        self.nsblk = _card(sh, "NSBLK", int, p)
        self.nrows = nrows
        self.pol_type = str(sh.get("POL_TYPE", "AA+BB")).strip().upper()
        if self.npol not in (1, 2, 4):
            raise CudalabError(f"{p}: unsupported NPOL {self.npol} (1, 2 or 4)")
        if not 1 <= self.nchan <= MAX_CHANNELS or not 1 <= self.nsblk <= 1 << 24:
            raise CudalabError(f"{p}: NCHAN {self.nchan} or NSBLK {self.nsblk} out of range")
        self.zero_off = _card(sh, "ZERO_OFF", float, p, default=0.0)
        if abs(self.zero_off) > 1 << 16:  # an offset of integer codes of at most 8 bits
            raise CudalabError(f"{p}: ZERO_OFF {self.zero_off:g} is out of range for {self.nbits}-bit codes")
        tbin = _card(sh, "TBIN", float, p)
        self._check_size(sub, nrows)
        try:
            first = sub.data[0]
            freqs = np.asarray(first["DAT_FREQ"], dtype=np.float64).ravel()
            nbytes = np.asarray(first["DATA"]).size
            nwts = np.asarray(first["DAT_WTS"]).size
        except Exception as exc:  # a column missing, or rows shorter than declared
            raise CudalabError(f"{p}: unreadable SUBINT table ({exc.__class__.__name__}: {exc})") from None
        want = self.nsblk * self.npol * self.nchan * self.nbits // 8
        if nbytes != want:
            raise CudalabError(
                f"{p}: DATA holds {nbytes} bytes a row, but NSBLK {self.nsblk} x NPOL {self.npol} x NCHAN "
                f"{self.nchan} x NBITS {self.nbits} / 8 = {want}"
            )
        if freqs.size != self.nchan:
            raise CudalabError(f"{p}: DAT_FREQ has {freqs.size} values for NCHAN {self.nchan}")
        if nwts != self.nchan:
            raise CudalabError(f"{p}: DAT_WTS has {nwts} values for NCHAN {self.nchan}")
        default_bw = float(freqs[1] - freqs[0]) if self.nchan > 1 else 1.0
        chan_bw = _card(sh, "CHAN_BW", float, p, default=default_bw)
        nsuboffs = _card(sh, "NSUBOFFS", float, p, default=0.0)
        tstart = (
            _card(primary, "STT_IMJD", float, p, default=0.0)
            + (
                _card(primary, "STT_SMJD", float, p, default=0.0)
                + _card(primary, "STT_OFFS", float, p, default=0.0)
                + nsuboffs * self.nsblk * tbin
            )
            / SECONDS_PER_DAY
        )
        try:
            self.header = Header(
                path=str(p),
                format="psrfits",
                nchans=self.nchan,
                nsamples=nrows * self.nsblk,
                tsamp_s=tbin,
                fch1_mhz=float(freqs[0]),
                foff_mhz=chan_bw,
                nbits=self.nbits,
                tstart_mjd=tstart,
                source_name=str(primary.get("SRC_NAME", "")).strip(),
                npol_stored=self.npol,
                extra={
                    "telescope": str(primary.get("TELESCOP", "")).strip(),
                    "pol_type": self.pol_type,
                    "ra": str(primary.get("RA", "")).strip(),
                    "dec": str(primary.get("DEC", "")).strip(),
                    "zero_off": self.zero_off,
                },
            )
        except ValueError as exc:  # the message names the file and the value
            raise CudalabError(str(exc)) from None

    def _check_size(self, sub: Any, nrows: int) -> None:
        """Refuse a file cut short: the SUBINT table must hold every row its header declares."""
        index = self._hdul.index_of("SUBINT")
        info = self._hdul.fileinfo(index) or {}
        start, span = info.get("datLoc"), _card(sub.header, "NAXIS1", int, self.path) * nrows
        size = self.path.stat().st_size
        if isinstance(start, int) and start + span > size:
            held = max(0, size - start) // max(1, span // nrows)
            raise CudalabError(
                f"{self.path}: truncated: the SUBINT table declares {nrows} rows, the file holds {held}"
            )

    # ---------------------------------------------------------------------------------------------
    def _row(self, i: int) -> NDArray[np.float32]:
        """Subintegration ``i`` as calibrated total intensity.  Shape: ``(nchan, nsblk)``."""
        try:
            return self._calibrated(i)
        except CudalabError:
            raise
        except Exception as exc:  # a row that cannot be read as its header says
            raise CudalabError(
                f"{self.path}: subintegration {i} is unreadable ({type(exc).__name__})"
            ) from None

    def _calibrated(self, i: int) -> NDArray[np.float32]:
        row = self._sub.data[i]
        raw = np.asarray(row["DATA"], dtype=np.uint8).reshape(-1)
        if self.nbits < 8:
            raw = unpack_msb_first(raw, self.nbits)
        vals = raw.reshape(self.nsblk, self.npol, self.nchan).astype(np.float32)  # (time, pol, chan)
        scl = np.asarray(row["DAT_SCL"], dtype=np.float32).reshape(-1)
        offs = np.asarray(row["DAT_OFFS"], dtype=np.float32).reshape(-1)
        wts = np.asarray(row["DAT_WTS"], dtype=np.float32).reshape(self.nchan)
        if scl.size == self.nchan * self.npol:
            vals = (vals - self.zero_off) * scl.reshape(self.npol, self.nchan) + offs.reshape(
                self.npol, self.nchan
            )
        else:
            vals = vals - self.zero_off
        # Total intensity: I itself for IQUV or a single product; AA + BB for AABB and AABBCRCI.
        total = vals[:, 0] if self.npol == 1 or self.pol_type == "IQUV" else vals[:, 0] + vals[:, 1]
        return np.ascontiguousarray((total * wts).T)  # (chan, time)

    def read(self, start: int, count: int) -> NDArray[np.float32]:
        """Samples ``[start, start + count)``.  Shape: ``(nchans, count)``."""
        total = self.header.nsamples
        start = max(0, start)
        count = max(0, min(count, total - start))
        out = np.empty((self.nchan, count), dtype=np.float32)
        pos = 0
        while pos < count:
            row, off = divmod(start + pos, self.nsblk)
            take = min(self.nsblk - off, count - pos)
            out[:, pos : pos + take] = self._row(row)[:, off : off + take]
            pos += take
        return out

    def close(self) -> None:
        self._hdul.close()

    def __del__(self) -> None:
        hdul: Any = getattr(self, "_hdul", None)
        if hdul is not None:
            hdul.close()
