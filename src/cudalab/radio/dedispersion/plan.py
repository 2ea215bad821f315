"""The dedispersion plan: the DM trials, each trial's channel delays, and its time-scrunch factor.

DM grid: heimdall's (dedisp's ``generate_dm_list``, an algorithm of L. Levin): each next trial is the
largest DM whose smearing, added in quadrature to the sampling time, the intrinsic pulse width, the
intra-channel smearing and the DM-step smearing, stays within ``tolerance`` (1.25) of the smearing at
the previous trial.

Time scrunching: at high DM a pulse is smeared over many samples inside each channel, so summing
adjacent samples loses nothing while halving the work per factor 2. A trial is scrunched by the
largest power of two ``s`` whose extra smearing, ``s * tsamp`` in quadrature, widens its effective
pulse by at most ``scrunch_tolerance`` (1.15): ``s * tsamp <= w_eff * sqrt(tol^2 - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s, smearing_s
from cudalab.radio.io.header import Header

#: heimdall's smearing coefficient: t = 8.3 us * DM * (df / MHz) / (f / GHz)^3.
_SMEAR_US = 8.3


def dm_trials(
    dm_min: float,
    dm_max: float,
    tsamp_s: float,
    fch1_mhz: float,
    foff_mhz: float,
    nchans: int,
    *,
    pulse_width_us: float = 40.0,
    tolerance: float = 1.25,
) -> NDArray[np.float64]:
    """DM trials from ``dm_min`` to at least ``dm_max`` on heimdall's tolerance grid (pc cm^-3).

    Parameters
    ----------
    tsamp_s, fch1_mhz, foff_mhz, nchans
        The observation's sampling and band (as in its header; ``foff`` may be negative).
    pulse_width_us
        Intrinsic pulse width assumed (heimdall's default 40 us).
    tolerance
        Allowed growth of the effective width from one trial to the next (heimdall's default 1.25).
    """
    if not 0 <= dm_min <= dm_max:
        raise ValueError(f"need 0 <= dm_min <= dm_max, not {dm_min}, {dm_max}")
    if tolerance <= 1:
        raise ValueError(f"tolerance must be > 1, not {tolerance}")
    dt = tsamp_s * 1e6
    df = abs(foff_mhz)
    f_centre_ghz = (fch1_mhz + (nchans / 2 - 0.5) * foff_mhz) * 1e-3
    tol2 = tolerance * tolerance
    a = _SMEAR_US * df / f_centre_ghz**3
    a2 = a * a
    b2 = a2 * nchans * nchans / 16.0
    c = (dt * dt + pulse_width_us * pulse_width_us) * (tol2 - 1.0)
    dms = [float(dm_min)]
    while dms[-1] < dm_max:
        prev = dms[-1]
        k = c + tol2 * a2 * prev * prev
        nxt = (b2 * prev + math.sqrt(-a2 * b2 * prev * prev + (a2 + b2) * k)) / (a2 + b2)
        dms.append(nxt)
    return np.asarray(dms, dtype=np.float64)


@dataclass(frozen=True)
class DedispersionPlan:
    """Everything the dedisperser needs, derived once from the header and the DM range.

    Attributes
    ----------
    dms
        DM trials, pc cm^-3.  Shape: ``(ndm,)``.
    delays
        Delay of each channel at each trial, in native samples, relative to the highest channel.
        Shape: ``(ndm, nchans)``.
    scrunch
        Time-scrunch factor of each trial (a power of two).  Shape: ``(ndm,)``.
    effective_width_s
        Expected smeared width of an intrinsically narrow pulse at each trial, seconds.
    tsamp_s, fref_mhz, k_dm
        Native sampling time, reference frequency (the top channel's centre), dispersion constant.
    """

    dms: NDArray[np.float64]
    delays: NDArray[np.int64]
    scrunch: NDArray[np.int64]
    effective_width_s: NDArray[np.float64]
    tsamp_s: float
    fref_mhz: float
    k_dm: float

    @property
    def max_delay(self) -> int:
        """Largest delay in native samples: the overlap consecutive blocks need."""
        return int(self.delays.max()) if self.delays.size else 0

    def groups(self) -> list[tuple[int, NDArray[np.int64]]]:
        """(scrunch factor, indices of the trials using it), smallest factor first."""
        return [(int(s), np.flatnonzero(self.scrunch == s)) for s in np.unique(self.scrunch)]

    def delays_scrunched(self, factor: int, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """Delays of trials ``idx`` in units of ``factor``-scrunched samples."""
        return np.rint(self.delays[idx] / factor).astype(np.int64)

    def summary(self) -> dict[str, object]:
        return {
            "ndm": len(self.dms),
            "dm_min": float(self.dms[0]),
            "dm_max": float(self.dms[-1]),
            "max_delay_samples": self.max_delay,
            "max_delay_s": self.max_delay * self.tsamp_s,
            "scrunch_factors": {str(s): len(i) for s, i in self.groups()},
            "fref_mhz": self.fref_mhz,
            "k_dm": self.k_dm,
        }


def make_plan(
    header: Header,
    dm_min: float,
    dm_max: float,
    *,
    tolerance: float = 1.25,
    pulse_width_us: float = 40.0,
    scrunch: bool = True,
    scrunch_tolerance: float = 1.15,
    max_scrunch: int = 16,
    k_dm: float = DM_CONSTANT,
) -> DedispersionPlan:
    """The plan for searching ``header``'s data over DMs ``dm_min`` to ``dm_max``."""
    if scrunch_tolerance <= 1:
        raise ValueError(f"scrunch_tolerance must be > 1, not {scrunch_tolerance}")
    if max_scrunch < 1 or max_scrunch & (max_scrunch - 1):
        raise ValueError(f"max_scrunch must be a power of two >= 1, not {max_scrunch}")
    dms = dm_trials(
        dm_min,
        dm_max,
        header.tsamp_s,
        header.fch1_mhz,
        header.foff_mhz,
        header.nchans,
        pulse_width_us=pulse_width_us,
        tolerance=tolerance,
    )
    freqs = header.freqs_mhz
    fref = header.fmax_mhz
    delays = np.rint(dispersion_delay_s(dms[:, None], freqs[None, :], fref, k_dm) / header.tsamp_s).astype(
        np.int64
    )
    f_centre = 0.5 * (header.fmax_mhz + header.fmin_mhz)
    smear = smearing_s(dms, header.foff_mhz, f_centre, k_dm)
    w_eff = np.sqrt(header.tsamp_s**2 + (pulse_width_us * 1e-6) ** 2 + smear**2)
    if scrunch:
        allowed = w_eff * math.sqrt(scrunch_tolerance**2 - 1) / header.tsamp_s
        factors = np.exp2(np.floor(np.log2(np.maximum(allowed, 1.0)))).astype(np.int64)
        factors = np.minimum(factors, max_scrunch)
        factors = np.maximum.accumulate(factors)  # never fall back to a finer resolution at higher DM
    else:
        factors = np.ones_like(dms, dtype=np.int64)
    return DedispersionPlan(
        dms=dms,
        delays=delays,
        scrunch=factors,
        effective_width_s=w_eff,
        tsamp_s=header.tsamp_s,
        fref_mhz=fref,
        k_dm=k_dm,
    )


def single_trial_plan(header: Header, dm: float, k_dm: float = DM_CONSTANT) -> DedispersionPlan:
    """The plan of a series already dedispersed (at ``dm``): one trial, no delays, no scrunching."""
    return DedispersionPlan(
        dms=np.array([float(dm)]),
        delays=np.zeros((1, header.nchans), dtype=np.int64),
        scrunch=np.ones(1, dtype=np.int64),
        effective_width_s=np.array([header.tsamp_s]),
        tsamp_s=header.tsamp_s,
        fref_mhz=header.fmax_mhz,
        k_dm=k_dm,
    )
