"""Candidate cutouts in FETCH's HDF5 layout, so the field's classifiers read them as they are.

Per candidate (as ``your``'s ``Candidate.save_h5`` writes them and FETCH reads them):

- ``data_freq_time``: the data dedispersed at the candidate's DM, shape ``(256 time, 256 frequency)``;
- ``data_dm_time``: the frequency-summed series at 256 DMs from 0 to 2 x DM, shape ``(256 dm, 256 time)``;

both decimated in time by ``max(1, width // 2)`` so that the pulse spans a few of the 256 samples, and
the candidate's parameters and the file's header as attributes (``tcand``, ``dm``, ``snr``, ``width``,
``fch1``, ``foff``, ``nchans``, ``tsamp``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab._io import atomic_open
from cudalab.radio.constants import dispersion_delay_s
from cudalab.radio.dedispersion.direct import dedisperse
from cudalab.radio.io.header import Header
from cudalab.radio.io.observation import Observation
from cudalab.radio.rfi import RfiConfig, clean_block
from cudalab.radio.single_pulse.candidates import Candidate

#: FETCH's input size.
SIZE = 256


def resize_axis(a: NDArray[Any], n: int, axis: int) -> NDArray[np.float32]:
    """Resample ``a`` to ``n`` points along ``axis``: block means when it divides evenly, else linear."""
    a = np.moveaxis(np.asarray(a, dtype=np.float32), axis, -1)
    m = a.shape[-1]
    if m == n:
        out = a
    elif m > n and m % n == 0:
        out = a.reshape(*a.shape[:-1], n, m // n).mean(axis=-1)
    else:
        x_new = (np.arange(n) + 0.5) * m / n - 0.5
        idx = np.clip(np.floor(x_new).astype(int), 0, m - 1)
        nxt = np.clip(idx + 1, 0, m - 1)
        frac = np.clip(x_new - idx, 0, 1).astype(np.float32)
        out = a[..., idx] * (1 - frac) + a[..., nxt] * frac
    return np.moveaxis(out, -1, axis).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Cutout:
    """The two images of one candidate and its decimation.

    Attributes
    ----------
    freq_time
        Shape ``(256, 256)``: time x frequency (highest frequency first, as the file's channel order
        is flipped to descending when needed).
    dm_time
        Shape ``(256, 256)``: DM (0 to 2 x DM) x time.
    dms
        The 256 DMs of ``dm_time``.
    time_decimation
        Native samples per cutout sample.
    """

    freq_time: NDArray[np.float32]
    dm_time: NDArray[np.float32]
    dms: NDArray[np.float64]
    time_decimation: int


def make_cutout(
    obs: Observation,
    cand: Candidate,
    *,
    k_dm: float,
    rfi: RfiConfig,
    device: torch.device,
    ndm: int = SIZE,
) -> Cutout:
    """Dedisperse the data around ``cand`` at its DM and at ``ndm`` DMs from 0 to twice it."""
    h = obs.header
    td = max(1, cand.width_samples // 2)
    span = SIZE * td
    dms = np.linspace(0.0, 2.0 * cand.dm, ndm)
    delays = np.rint(
        dispersion_delay_s(dms[:, None], h.freqs_mhz[None, :], h.fmax_mhz, k_dm) / h.tsamp_s
    ).astype(np.int64)
    data = obs.read_padded(cand.sample - span // 2, span + int(delays.max()))
    # The search's masking, without zero-DM: the cutout shows the data, impulses included.
    x, mask, _ = clean_block(torch.from_numpy(data).to(device), replace(rfi, zero_dm=False))
    # freq-time at the candidate's DM: each channel shifted by its delay.
    d_c = np.rint(dispersion_delay_s(cand.dm, h.freqs_mhz, h.fmax_mhz, k_dm) / h.tsamp_s).astype(np.int64)
    idx = torch.from_numpy(d_c[:, None] + np.arange(span)[None, :]).to(device)
    ft = torch.gather(x, 1, idx).cpu().numpy()  # (chan, span)
    if h.ascending:
        ft = ft[::-1]  # FETCH expects the highest frequency first
    ft = resize_axis(resize_axis(ft, SIZE, axis=1), SIZE, axis=0).T  # (time, freq)
    weights = (~mask).float()
    dmt = dedisperse(x, torch.from_numpy(delays).to(device), span, weights=weights).cpu().numpy()
    dmt = resize_axis(dmt, SIZE, axis=1)  # (dm, time)
    return Cutout(freq_time=np.ascontiguousarray(ft), dm_time=dmt, dms=dms, time_decimation=td)


def write_fetch_h5(path: Path, cutout: Cutout, cand: Candidate, header: Header, cand_id: str) -> Path:
    """Write one candidate in FETCH's layout, atomically."""
    import h5py

    with atomic_open(path) as fh, h5py.File(fh, "w") as f:
        attrs = {
            "cand_id": cand_id,
            "tcand": cand.time_s,
            "dm": cand.dm,
            "snr": cand.snr,
            "width": cand.width_samples,
            "label": -1,
            "dm_opt": -1.0,
            "snr_opt": -1.0,
            "fch1": header.fch1_mhz,
            "foff": header.foff_mhz,
            "nchans": header.nchans,
            "tsamp": header.tsamp_s,
            "tstart": header.tstart_mjd,
            "nbits": header.nbits,
            "source_name": header.source_name,
            "filename": header.path,
            "basename": Path(header.path).stem,
            "fref_mhz": header.fmax_mhz,
            "time_decimation_factor": cutout.time_decimation,
            "dm_time_range": (float(cutout.dms[0]), float(cutout.dms[-1])),
        }
        for k, v in attrs.items():
            f.attrs[k] = v
        ft = f.create_dataset("data_freq_time", data=cutout.freq_time)
        ft.dims[0].label = "time"
        ft.dims[1].label = "frequency"
        dt = f.create_dataset("data_dm_time", data=cutout.dm_time)
        dt.dims[0].label = "dm"
        dt.dims[1].label = "time"
    return path
