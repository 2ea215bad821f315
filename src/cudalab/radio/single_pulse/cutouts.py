"""Candidate cutouts in FETCH's HDF5 layout, so the field's classifiers read them as they are.

Per candidate (as ``your``'s ``Candidate.save_h5`` writes them and FETCH reads them):

- ``data_freq_time``: the data dedispersed at the candidate's DM, shape ``(256 time, 256 frequency)``;
- ``data_dm_time``: the frequency-summed series at 256 DMs from 0 to 2 x DM, shape ``(256 dm, 256 time)``;

both decimated in time by ``max(1, width // 2)`` so that the pulse spans a few of the 256 samples
(the DM-time image is dedispersed from the decimated data, its delays rounded to the decimation),
each normalised as ``your_candmaker`` writes them (minus its median, over its standard deviation), and
the candidate's parameters and the file's header as attributes (``tcand``, ``dm``, ``snr``, ``width``,
``fch1``, ``foff``, ``nchans``, ``tsamp``, and the SIGPROC keys ``your`` copies: ``telescope_id``,
``src_raj``, ``src_dej``, ``nifs``, ``data_type``, ``rawdatafile``, ``tstart_utc``, ...).

Only real data are shown. A candidate near the file's start or end has part of its window outside the
file (a DM-time row at twice its DM reads up to its sweep past the candidate); those pixels are set
to the image's median (0 once normalised: no signal, neither noise nor a ramp) and marked: the
datasets ``valid_freq_time`` and ``valid_dm_time`` hold the fraction of each pixel that is data, and
the attribute ``valid_fraction`` the share of each image that is. ``masked_freq`` holds the fraction of
each frequency column that RFI cleaning masked.

A dedispersed time series has no spectrum: its candidates get a :class:`SeriesCutout` (the series
around the pulse, for the report's profile plot) and no h5.
"""

from __future__ import annotations

import math
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
#: The DM-time image of a candidate near DM 0 reaches at least the DM that sweeps it over this many
#: of its widths (twice a DM near 0 would show nothing of a bow-tie).
FLOOR_WIDTHS = 4


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
        is flipped to descending when needed), normalised; pixels outside the file at the median.
    dm_time
        Shape ``(256, 256)``: DM (0 to 2 x DM) x time, normalised likewise.
    dms
        The 256 DMs of ``dm_time``.
    time_decimation
        Native samples per cutout sample.
    valid_freq_time, valid_dm_time
        The fraction of each pixel made of data in the file (1 everywhere but near its edges).
    masked_freq
        Shape ``(256,)``, in ``freq_time``'s frequency order: the fraction of each column's channels
        that the RFI cleaning masked (their data are 0).
    """

    freq_time: NDArray[np.float32]
    dm_time: NDArray[np.float32]
    dms: NDArray[np.float64]
    time_decimation: int
    valid_freq_time: NDArray[np.float32]
    valid_dm_time: NDArray[np.float32]
    masked_freq: NDArray[np.float32]

    @property
    def valid_fraction(self) -> float:
        """The share of the pixels of both images that are data (1.0 unless the window left the file)."""
        return float((self.valid_freq_time.mean() + self.valid_dm_time.mean()) / 2)


def normalise_image(image: NDArray[np.float32], valid: NDArray[np.float32]) -> NDArray[np.float32]:
    """``your_candmaker``'s normalisation (minus the median, over the standard deviation), of the pixels
    that are data; the others are set to the median (0). An image without data or spread stays 0."""
    real = valid > 0.999  # whole pixels of data (a mean of ones may round below 1)
    out = np.zeros_like(image, dtype=np.float32)
    if real.sum() < 2:
        return out
    values = image[real]
    std = float(values.std())
    out[real] = (values - np.median(values)) / (std if std > 0 else 1.0)
    return out


def make_cutout(
    obs: Observation,
    cand: Candidate,
    *,
    k_dm: float,
    rfi: RfiConfig,
    device: torch.device,
    ndm: int = SIZE,
) -> Cutout:
    """Dedisperse the data around ``cand`` at its DM and at ``ndm`` DMs from 0 to twice it, from the
    data in the file only (see the module)."""
    h = obs.header
    td = max(1, cand.width_samples // 2)
    span = SIZE * td
    # 0 to twice the DM (FETCH's range); for a DM near 0, at least to the DM that sweeps the pulse over
    # FLOOR_WIDTHS of its widths, so that a dispersed pulse's bow-tie and an undispersed one's column show
    sweep_per_dm = k_dm * (h.fmin_mhz**-2 - h.fmax_mhz**-2)
    floor = FLOOR_WIDTHS * cand.width_s / sweep_per_dm if sweep_per_dm > 0 else 0.0
    dms = np.linspace(0.0, max(2.0 * cand.dm, floor), ndm)
    delays = np.rint(
        dispersion_delay_s(dms[:, None], h.freqs_mhz[None, :], h.fmax_mhz, k_dm) / h.tsamp_s
    ).astype(np.int64)
    start = cand.sample - span // 2
    need = span + int(delays.max())
    lo, hi = max(0, start), min(h.nsamples, start + need)  # the part of the window in the file
    # The search's channel masks, without zero-DM or the impulse mask (the cutout shows the data,
    # impulses included), on the data alone: samples outside the file stay 0, each channel's median
    # once cleaned.
    shown = replace(rfi, zero_dm=False, impulse_threshold=0.0)
    cleaned = clean_block(torch.from_numpy(obs.read(lo, hi - lo)).to(device), shown, tsamp_s=h.tsamp_s)
    real, mask = cleaned.data, cleaned.mask
    # Both images are made from the data block-averaged by the decimation (the delays rounded to it,
    # half a pixel at most): the same pixels to within that rounding, ``td`` times less work than at
    # native resolution (a 40 ms pulse on 1536 channels of 82 us took 5 s a cutout there).
    nd = -(-need // td) + 1  # one spare pixel: a delay rounded up may reach it
    x = torch.zeros(h.nchans, nd * td, dtype=torch.float32, device=device)
    x[:, lo - start : hi - start] = real
    x = x.reshape(h.nchans, nd, td).mean(dim=2)
    inside = np.zeros(nd * td, dtype=np.float32)
    inside[lo - start : hi - start] = 1.0
    inside = inside.reshape(nd, td).mean(axis=1)  # the fraction of each pixel that is data
    # freq-time at the candidate's DM: each channel shifted by its delay.
    d_c = np.rint(dispersion_delay_s(cand.dm, h.freqs_mhz, h.fmax_mhz, k_dm) / h.tsamp_s / td).astype(
        np.int64
    )
    cols = d_c[:, None] + np.arange(SIZE)[None, :]
    ft = torch.gather(x, 1, torch.from_numpy(cols).to(device)).cpu().numpy()  # (chan, SIZE)
    ft_valid = inside[cols]
    masked = mask.cpu().numpy().astype(np.float32)
    if h.ascending:  # FETCH expects the highest frequency first
        ft, ft_valid, masked = ft[::-1], ft_valid[::-1], masked[::-1]
    shape = lambda a: resize_axis(a, SIZE, axis=0).T  # noqa: E731  (time, freq)
    ft, ft_valid = shape(ft), shape(ft_valid)
    # DM-time: an output is data when every channel's sample is (the top channel's at t, the lowest's
    # at t + the row's largest delay)
    dd = np.rint(delays / td).astype(np.int64)
    t = np.arange(SIZE)
    dmt_valid = (inside[t][None, :] * inside[t[None, :] + dd.max(axis=1)[:, None]]).astype(np.float32)
    dmt = dedisperse(x, torch.from_numpy(dd).to(device), SIZE, weights=(~mask).float()).cpu().numpy()
    return Cutout(
        freq_time=np.ascontiguousarray(normalise_image(ft, ft_valid)),
        dm_time=normalise_image(dmt, dmt_valid),
        dms=dms,
        time_decimation=td,
        valid_freq_time=np.ascontiguousarray(ft_valid),
        valid_dm_time=dmt_valid,
        masked_freq=resize_axis(masked, SIZE, axis=0),
    )


@dataclass(frozen=True, slots=True)
class SeriesCutout:
    """A time series around one candidate: ``SIZE`` samples of ``time_decimation`` native samples each,
    centred on the candidate, normalised over its data (minus the median, over the standard deviation);
    ``valid`` is the fraction of each that is data in the file (the rest is 0)."""

    series: NDArray[np.float32]
    valid: NDArray[np.float32]
    time_decimation: int


def make_series_cutout(obs: Observation, cand: Candidate, *, decimate: int | None = None) -> SeriesCutout:
    """The one-channel file's samples around ``cand``, block-averaged by ``decimate`` (by default half
    the candidate's width, as :func:`make_cutout` decimates)."""
    h = obs.header
    td = decimate or max(1, cand.width_samples // 2)
    span = SIZE * td
    start = cand.sample - span // 2
    lo, hi = max(0, start), min(h.nsamples, start + span)
    x = np.zeros(span, dtype=np.float32)
    inside = np.zeros(span, dtype=np.float32)
    data = np.asarray(obs.read(lo, hi - lo), dtype=np.float32).mean(axis=0)
    finite = np.isfinite(data)  # a NaN or infinite sample is not data either
    x[lo - start : hi - start] = np.where(finite, data, 0.0)
    inside[lo - start : hi - start] = finite
    series = x.reshape(SIZE, td).sum(axis=1) / np.maximum(inside.reshape(SIZE, td).sum(axis=1), 1)
    valid = inside.reshape(SIZE, td).mean(axis=1)
    return SeriesCutout(series=normalise_image(series, valid), valid=valid, time_decimation=td)


#: SIGPROC header keys ``your`` copies into a candidate's attributes, when the file has them.
SIGPROC_ATTRS = (
    "telescope_id",
    "machine_id",
    "src_raj",
    "src_dej",
    "az_start",
    "za_start",
    "nifs",
    "rawdatafile",
    "ibeam",
    "nbeams",
)


def utc_of(mjd: float) -> str:
    """An MJD as ISO UTC (``tstart_utc``, as ``your`` writes it)."""
    from datetime import UTC, datetime, timedelta

    return (datetime(1858, 11, 17, tzinfo=UTC) + timedelta(days=mjd)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def write_fetch_h5(
    path: Path,
    cutout: Cutout,
    cand: Candidate,
    header: Header,
    cand_id: str,
    *,
    label: int = -1,
    compact: bool = False,
) -> Path:
    """Write one candidate in FETCH's layout, atomically.

    ``label`` is FETCH's training label (1 astrophysical, 0 not, -1 unknown). ``compact`` (the
    classifier's training sets: thousands of files) stores the images as float16 with LZF compression,
    as ``your`` compresses them, and leaves out the ``valid_*`` images where every pixel is data
    (readers take a missing one as all ones).
    """
    import h5py

    image: dict[str, Any] = {"dtype": np.float16, "compression": "lzf"} if compact else {}

    with atomic_open(path) as fh, h5py.File(fh, "w") as f:
        attrs: dict[str, Any] = {
            "cand_id": cand_id,
            "tcand": cand.time_s,
            "dm": cand.dm,
            "snr": cand.snr,
            "width": cand.width_samples,
            "label": int(label),
            "dm_opt": -1.0,
            "snr_opt": -1.0,
            "fch1": header.fch1_mhz,
            "foff": header.foff_mhz,
            "channel_bandwidth": header.foff_mhz,
            "nchans": header.nchans,
            "tsamp": header.tsamp_s,
            "native_tsamp": header.tsamp_s,
            "nspectra": header.nsamples,
            "tstart": header.tstart_mjd,
            "tstart_utc": utc_of(header.tstart_mjd),
            "nbits": header.nbits,
            "npol": header.npol_stored,
            "data_type": header.data_type,
            "source_name": header.source_name,
            "filename": header.path,
            "filelist": [header.path],
            "basename": Path(header.path).stem,
            "format": header.format,
            "fref_mhz": header.fmax_mhz,
            "time_decimation_factor": cutout.time_decimation,
            "frequency_decimation_factor": max(1, header.nchans // SIZE),
            "dm_time_range": (float(cutout.dms[0]), float(cutout.dms[-1])),
            "valid_fraction": cutout.valid_fraction,
        }
        attrs |= {k: header.extra[k] for k in SIGPROC_ATTRS if k in header.extra}
        if not math.isnan(cand.prob):  # classified: the probability, as FETCH's results report it
            attrs["prob"] = cand.prob
        for k, v in attrs.items():
            f.attrs[k] = v
        ft = f.create_dataset("data_freq_time", data=cutout.freq_time, **image)
        ft.dims[0].label = "time"
        ft.dims[1].label = "frequency"
        dt = f.create_dataset("data_dm_time", data=cutout.dm_time, **image)
        dt.dims[0].label = "dm"
        dt.dims[1].label = "time"
        for name, valid in (
            ("valid_freq_time", cutout.valid_freq_time),
            ("valid_dm_time", cutout.valid_dm_time),
        ):
            if not (compact and bool((valid >= 1.0).all())):
                f.create_dataset(name, data=valid, **image)
        f.create_dataset("masked_freq", data=cutout.masked_freq)
    return path
