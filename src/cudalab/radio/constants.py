"""Physical constants and the dispersion law shared by the simulator and the search."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Dispersion constant k_DM in s MHz^2 pc^-1 cm^3 (Lorimer & Kramer, *Handbook of Pulsar Astronomy*,
#: eq. 4.7, the value 1 / 2.41e-4 used by SIGPROC, PRESTO and heimdall). Configurable per call.
DM_CONSTANT = 4.148808e3


def dispersion_delay_s(
    dm: ArrayLike, freq_mhz: ArrayLike, ref_freq_mhz: float, k_dm: float = DM_CONSTANT
) -> NDArray[np.float64]:
    """Arrival delay (s) at ``freq_mhz`` relative to ``ref_freq_mhz`` for dispersion measure ``dm``.

    Positive for frequencies below the reference. Broadcasts ``dm`` against ``freq_mhz``.
    """
    f = np.asarray(freq_mhz, dtype=np.float64)
    return k_dm * np.asarray(dm, dtype=np.float64) * (f**-2 - float(ref_freq_mhz) ** -2)


def smearing_s(
    dm: ArrayLike, chan_width_mhz: float, freq_mhz: ArrayLike, k_dm: float = DM_CONSTANT
) -> NDArray[np.float64]:
    """Intra-channel dispersion smearing (s) of a channel ``chan_width_mhz`` wide centred at ``freq_mhz``.

    The exact difference of delays across the channel's edges (not the first-order 8.3 us formula),
    so that it stays right for wide channels at low frequency.
    """
    f = np.asarray(freq_mhz, dtype=np.float64)
    half = abs(chan_width_mhz) / 2
    return k_dm * np.asarray(dm, dtype=np.float64) * ((f - half) ** -2 - (f + half) ** -2)
