"""PRESTO dedispersed time series: ``NAME.dat`` (float32 samples) described by ``NAME.inf`` (text).

The ``.inf`` file is PRESTO's ``key = value`` lines (``writeinf``); the keys read here are the number
of bins, the bin width, the DM the series was dedispersed at, the epoch, the object, and the band
(low channel, total bandwidth, channel count). The ``.dat`` holds exactly that many little-endian
float32 samples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header

#: The ``.inf`` keys read, by the start of their text (PRESTO pads the keys with spaces and writes
#: "MHz" or "Mhz" depending on the version), and the field each fills.
_KEYS = {
    "Number of bins in the time series": "nbins",
    "Width of each time series bin": "tsamp",
    "Dispersion measure": "dm",
    "Epoch of observation": "mjd",
    "Object being observed": "source",
    "Central freq of low channel": "flow",
    "Total bandwidth": "bandwidth",
    "Number of channels": "nchan",
    "Telescope used": "telescope",
}


def read_inf(path: Path) -> dict[str, str]:
    """The ``.inf`` file's values (strings) by field name; one-line error when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CudalabError(f"{path}: no such .inf file (PRESTO writes one beside each .dat)") from None
    except OSError as exc:
        raise CudalabError(f"{path}: cannot read it ({exc.strerror})") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        for prefix, name in _KEYS.items():
            if key.startswith(prefix):
                values[name] = value.strip()
    return values


def _number(values: dict[str, str], name: str, path: Path, *, default: float | None = None) -> float:
    raw = values.get(name)
    if raw is None:
        if default is None:
            raise CudalabError(f"{path}: lacks '{next(k for k, v in _KEYS.items() if v == name)}'")
        return default
    try:
        number = float(raw)
    except ValueError:
        raise CudalabError(f"{path}: {name} is {raw!r}, not a number") from None
    if not math.isfinite(number):
        raise CudalabError(f"{path}: {name} is {raw}, not a finite number")
    return number


class PrestoReader:
    """Random access to a PRESTO ``.dat`` time series through a read-only memory map."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        self.dat, self.inf = p.with_suffix(".dat"), p.with_suffix(".inf")
        if not self.dat.is_file():
            raise CudalabError(f"{self.dat}: no such .dat file beside {self.inf.name}")
        values = read_inf(self.inf)
        nbins = _number(values, "nbins", self.inf)
        if nbins < 1 or not nbins.is_integer():
            raise CudalabError(f"{self.inf}: the number of bins is {nbins:g}, not a positive integer")
        held = self.dat.stat().st_size // 4
        if held < nbins:
            raise CudalabError(
                f"{self.dat}: truncated: {self.inf.name} says {int(nbins)} samples, it holds {held}"
            )
        tsamp = _number(values, "tsamp", self.inf)
        flow = _number(values, "flow", self.inf, default=0.0)
        bandwidth = _number(values, "bandwidth", self.inf, default=0.0)
        nchan = _number(values, "nchan", self.inf, default=1.0)
        ftop = flow + bandwidth * (1 - 1 / max(nchan, 1.0)) if bandwidth > 0 else flow
        try:
            self.header = Header(
                path=str(self.dat),
                format="presto",
                nchans=1,
                nsamples=int(nbins),
                tsamp_s=tsamp,
                fch1_mhz=ftop,
                foff_mhz=0.0,
                nbits=32,
                tstart_mjd=_number(values, "mjd", self.inf, default=0.0),
                source_name=values.get("source", ""),
                data_type=2,
                refdm=_number(values, "dm", self.inf, default=0.0),
                extra={"telescope": values.get("telescope", ""), "inf": str(self.inf)},
            )
        except ValueError as exc:  # the message names the file and the value
            raise CudalabError(str(exc)) from None
        self._map: np.memmap[Any, np.dtype[np.float32]] = np.memmap(
            self.dat, dtype="<f4", mode="r", shape=(int(nbins),)
        )

    def read(self, start: int, count: int) -> NDArray[np.float32]:
        """Samples ``[start, start + count)``.  Shape: ``(1, count)``."""
        start = max(0, start)
        count = max(0, min(count, self.header.nsamples - start))
        return np.asarray(self._map[start : start + count], dtype=np.float32)[None, :].copy()
