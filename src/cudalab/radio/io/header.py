"""The immutable description of an observation, common to SIGPROC and PSRFITS data."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray


def sigproc_angle_deg(packed: float, *, hours: bool) -> float:
    """Decode SIGPROC's packed sexagesimal angle (``src_raj`` as hhmmss.s, ``src_dej`` as ddmmss.s) to degrees.

    ``53431.9`` as right ascension is 05h34m31.9s = 83.633 deg; ``-84743.7`` as declination is
    -08d47'43.7" (the sign applies to the whole angle, as SIGPROC writes it).
    """
    sign = -1.0 if packed < 0 else 1.0
    v = abs(packed)
    whole = int(v // 10000)
    minutes = int((v - whole * 10000) // 100)
    seconds = v - whole * 10000 - minutes * 100
    value = whole + minutes / 60 + seconds / 3600
    return sign * value * (15.0 if hours else 1.0)


#: Sanity limits of a header, far outside any real instrument: a value past them is a corrupt or
#: foreign file, not an observation. 0.1 MHz lies far below the ionospheric cut-off (about 10 MHz,
#: where LOFAR's lowest band starts), 1 THz above any radio receiver; 2^20 channels; 100 s a sample.
MIN_FREQ_MHZ = 0.1
MAX_FREQ_MHZ = 1e6
MAX_CHANNELS = 1 << 20
MAX_TSAMP_S = 100.0
#: The header keys the fields are read from, for messages that name what the file says.
_KEYS = {"tsamp_s": "tsamp", "fch1_mhz": "fch1", "foff_mhz": "foff", "tstart_mjd": "tstart", "refdm": "refdm"}


@dataclass(frozen=True, slots=True)
class Header:
    """What a search needs to know about a file.

    Attributes
    ----------
    path
        The file it came from ("" for data built in memory).
    format
        ``"sigproc"`` or ``"psrfits"``.
    nchans
        Number of frequency channels.
    nsamples
        Number of time samples in the file.
    tsamp_s
        Sampling time, seconds.
    fch1_mhz
        Centre frequency of the first channel as stored, MHz.
    foff_mhz
        Channel spacing, MHz; negative for a descending band (the usual SIGPROC order).
    nbits
        Bits per sample as stored.
    tstart_mjd
        Start time (MJD, topocentric UTC) of the first sample.
    source_name
        Source name as recorded.
    data_type
        SIGPROC data type: 1 (or 0, as some writers put it) filterbank, 2 time series.
    npol_stored
        Polarisation products in the file (after reading, data are total intensity).
    signed
        Whether 8-bit samples are signed.
    refdm
        Reference DM of a dedispersed time series (pc cm^-3), else 0.
    extra
        Every other header key, as read.
    """

    path: str
    format: str
    nchans: int
    nsamples: int
    tsamp_s: float
    fch1_mhz: float
    foff_mhz: float
    nbits: int
    tstart_mjd: float = 0.0
    source_name: str = ""
    data_type: int = 1
    npol_stored: int = 1
    signed: bool = False
    refdm: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        where = self.path or "header"
        for name in ("tsamp_s", "fch1_mhz", "foff_mhz", "tstart_mjd", "refdm"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{where}: {_KEYS[name]} is {value}, not a finite number")
        if not 1 <= self.nchans <= MAX_CHANNELS:
            raise ValueError(f"{where}: nchans must be 1 to {MAX_CHANNELS}, not {self.nchans}")
        if not 0 < self.tsamp_s <= MAX_TSAMP_S:
            raise ValueError(f"{where}: tsamp must be > 0 and <= {MAX_TSAMP_S:g} s, not {self.tsamp_s}")
        if self.nbits not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"{where}: nbits must be 1, 2, 4, 8, 16 or 32, not {self.nbits}")
        if self.nsamples < 0:
            raise ValueError(f"{where}: nsamples must be >= 0, not {self.nsamples}")
        if self.data_type not in (0, 1, 2):
            raise ValueError(
                f"{where}: data_type {self.data_type} is neither a filterbank (0, 1) nor a time series (2)"
            )
        if self.data_type != 2:
            if self.nchans > 1 and self.foff_mhz == 0:
                raise ValueError(f"{where}: foff must not be 0 for {self.nchans} channels")
            lo, hi = sorted((self.fch1_mhz, self.fch1_mhz + self.foff_mhz * (self.nchans - 1)))
            if lo < MIN_FREQ_MHZ or hi > MAX_FREQ_MHZ:
                raise ValueError(
                    f"{where}: the channels span {lo:.6g} to {hi:.6g} MHz (fch1 {self.fch1_mhz:g}, foff "
                    f"{self.foff_mhz:g}); a radio band lies within {MIN_FREQ_MHZ:g} to {MAX_FREQ_MHZ:g} MHz"
                )
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    # ------------------------------------------------------------------ derived quantities
    @property
    def freqs_mhz(self) -> NDArray[np.float64]:
        """Centre frequency of each channel in stored order, MHz.  Shape: ``(nchans,)``."""
        return self.fch1_mhz + self.foff_mhz * np.arange(self.nchans, dtype=np.float64)

    @property
    def fmax_mhz(self) -> float:
        """Centre of the highest-frequency channel: the reference for every time we report."""
        return float(self.freqs_mhz.max())

    @property
    def fmin_mhz(self) -> float:
        """Centre of the lowest-frequency channel."""
        return float(self.freqs_mhz.min())

    @property
    def bandwidth_mhz(self) -> float:
        """Total bandwidth, MHz (channel count times channel width)."""
        return abs(self.foff_mhz) * self.nchans

    @property
    def ascending(self) -> bool:
        """True when the first channel is the lowest frequency."""
        return self.foff_mhz > 0

    @property
    def is_time_series(self) -> bool:
        """Already dedispersed (``.tim``, ``.dat``, one channel): searched as one trial at ``refdm``."""
        return self.data_type == 2 or self.nchans == 1

    @property
    def duration_s(self) -> float:
        """Length of the observation, seconds."""
        return self.nsamples * self.tsamp_s

    @property
    def position_deg(self) -> tuple[float, float] | None:
        """(RA, Dec) in degrees from SIGPROC's ``src_raj`` / ``src_dej``, or None when absent."""
        ra, dec = self.extra.get("src_raj"), self.extra.get("src_dej")
        if ra is None or dec is None:
            return None
        return sigproc_angle_deg(float(ra), hours=True), sigproc_angle_deg(float(dec), hours=False)

    def with_(self, **changes: Any) -> Header:
        """A copy with ``changes`` applied (headers are values)."""
        return replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """Plain-JSON description for reports and manifests."""
        return {
            "path": self.path,
            "format": self.format,
            "source_name": self.source_name,
            "nchans": self.nchans,
            "nsamples": self.nsamples,
            "tsamp_s": self.tsamp_s,
            "duration_s": self.duration_s,
            "fch1_mhz": self.fch1_mhz,
            "foff_mhz": self.foff_mhz,
            "fmax_mhz": self.fmax_mhz,
            "fmin_mhz": self.fmin_mhz,
            "bandwidth_mhz": self.bandwidth_mhz,
            "nbits": self.nbits,
            "npol_stored": self.npol_stored,
            "tstart_mjd": self.tstart_mjd,
            "position_deg": self.position_deg,
            "data_type": "time series" if self.data_type == 2 else "filterbank",
            "refdm": self.refdm,
        }
