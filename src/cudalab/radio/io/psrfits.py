"""PSRFITS search-mode files: read total intensity from the SUBINT table.

The DATA column holds, per row (subintegration), ``NSBLK`` samples of ``NPOL`` x ``NCHAN`` values,
channel index fastest; values narrower than a byte are packed first-sample-in-most-significant-bits
(the PSRFITS definition, opposite to SIGPROC). Physical values are
``(raw - ZERO_OFF) * DAT_SCL + DAT_OFFS``, weighted by ``DAT_WTS``. Polarisations are reduced to
total intensity: AA+BB are summed (``AABBCRCI`` and ``AABB``), ``IQUV`` keeps I.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header

#: Seconds per day, for turning STT_IMJD/STT_SMJD/STT_OFFS into an MJD.
SECONDS_PER_DAY = 86400.0


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
        from astropy.io import fits

        self.path = Path(path)
        p = self.path
        if not p.is_file():
            raise CudalabError(f"{p}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # astropy warns, then fails below with the reason we report
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
        self.nbits = int(sh["NBITS"])
        if self.nbits not in (1, 2, 4, 8):
            raise CudalabError(f"{p}: unsupported NBITS {self.nbits} (1, 2, 4 or 8)")
        self.nchan = int(sh["NCHAN"])
        self.npol = int(sh["NPOL"])
        self.nsblk = int(sh["NSBLK"])
        self.nrows = nrows
        self.pol_type = str(sh.get("POL_TYPE", "AA+BB")).strip().upper()
        if self.npol not in (1, 2, 4):
            raise CudalabError(f"{p}: unsupported NPOL {self.npol}")
        zero_off = sh.get("ZERO_OFF")
        self.zero_off = float(zero_off) if zero_off not in (None, "") else 0.0
        tbin = float(sh["TBIN"])
        try:
            first = sub.data[0]
        except Exception as exc:  # a table whose rows are shorter than declared
            raise CudalabError(f"{p}: truncated SUBINT table ({exc.__class__.__name__})") from None
        freqs = np.asarray(first["DAT_FREQ"], dtype=np.float64).ravel()
        if freqs.size != self.nchan:
            raise CudalabError(f"{p}: DAT_FREQ has {freqs.size} values for NCHAN {self.nchan}")
        chan_bw = float(sh.get("CHAN_BW", freqs[1] - freqs[0] if self.nchan > 1 else 1.0))
        nsuboffs = float(sh.get("NSUBOFFS", 0) or 0)
        tstart = (
            float(primary.get("STT_IMJD", 0))
            + (
                float(primary.get("STT_SMJD", 0))
                + float(primary.get("STT_OFFS", 0.0))
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
        except ValueError as exc:
            raise CudalabError(f"nonsense header: {exc}") from None

    # ---------------------------------------------------------------------------------------------
    def _row(self, i: int) -> NDArray[np.float32]:
        """Subintegration ``i`` as calibrated total intensity.  Shape: ``(nchan, nsblk)``."""
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
