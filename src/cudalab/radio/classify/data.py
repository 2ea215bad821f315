"""FETCH h5 cutouts as the classifier's input: two planes of ``size x size`` with time on the last axis.

A FETCH file holds ``data_freq_time`` (time x frequency, as ``your``'s ``Candidate.save_h5`` and our
:func:`~cudalab.radio.single_pulse.cutouts.write_fetch_h5` write it; a file whose dimension labels say
frequency x time is read that way round) and ``data_dm_time`` (DM x time), of any size (256 x 256 as
``your_candmaker`` resizes them, or the native size when it does not). Both are resampled to ``size``
pixels a side (block means where the size divides, as the cutouts are decimated), and each is
normalised again (minus its median, over the noise's robust standard deviation: :func:`normalise`),
so that a pixel reads as signal-to-noise whatever the file's scaling and whatever bright interference
shares the window: ``your_candmaker`` writes normalised float32 or raw data, we write float32 or
float16. The models compress what lies far above the noise themselves
(:func:`~cudalab.radio.classify.models.stretch`), after the augmentations, which need linear units.

The stacked input is ``(2, size, size)``: plane 0 is frequency x time (highest frequency first, as the
files hold it), plane 1 is DM x time (DM 0 first); both share the time axis, the candidate in the
middle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cudalab.radio.rfi import MAD_TO_STD
from cudalab.radio.single_pulse.cutouts import resize_axis

#: The classifier's default input size (pixels a side of each plane).
INPUT_SIZE = 64


@dataclass(frozen=True, slots=True)
class CutoutFile:
    """One FETCH file as read: its two images (frequency x time, DM x time) and its attributes."""

    path: Path
    freq_time: NDArray[np.float32]
    dm_time: NDArray[np.float32]
    attrs: dict[str, Any]


def _label(dim: Any) -> str:
    label = dim.label
    return label.decode() if isinstance(label, bytes) else str(label)


def read_cutout(path: str | Path) -> CutoutFile:
    """Read one FETCH h5 file; ``ValueError`` naming the fault when it is not one."""
    import h5py

    p = Path(path)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        reason = "no such file" if not p.exists() else "not an HDF5 file"
        raise ValueError(f"{p}: {reason} ({exc.__class__.__name__})") from None
    with f:
        for name in ("data_freq_time", "data_dm_time"):
            if name not in f:
                raise ValueError(f"{p}: no {name} dataset (not a FETCH candidate file)")
            if f[name].ndim != 2 or min(f[name].shape) < 2:
                raise ValueError(f"{p}: {name} has shape {f[name].shape}, not a 2-D image")
        ft_ds, dt_ds = f["data_freq_time"], f["data_dm_time"]
        ft = np.asarray(ft_ds[...], dtype=np.float32)
        dt = np.asarray(dt_ds[...], dtype=np.float32)
        if _label(ft_ds.dims[0]) == "frequency":  # written frequency x time
            ft = ft.T
        if _label(dt_ds.dims[0]) == "time":
            dt = dt.T
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    for name, image in (("data_freq_time", ft), ("data_dm_time", dt)):
        if not np.isfinite(image).all():
            raise ValueError(f"{p}: {name} holds NaN or infinite values")
    return CutoutFile(path=p, freq_time=np.ascontiguousarray(ft.T), dm_time=dt, attrs=attrs)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def normalise(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """Minus the median, over the noise's robust standard deviation: 1.4826 x the median absolute
    deviation (the standard deviation where over half the pixels share one value; 1 where the image
    is flat).

    Robust, not the plain standard deviation (FETCH's and ``your_candmaker``'s): a bright
    interference in the window (a broadband impulse of S/N 1000 beside a burst) would set the scale
    and flatten the burst to a tenth of a unit; the robust scale keeps the noise at one unit whatever
    else the image holds."""
    med = float(np.median(image))
    scale = MAD_TO_STD * float(np.median(np.abs(image - med)))
    if not scale > 0:
        scale = float(image.std())
    return ((image - med) / (scale if scale > 0 else 1.0)).astype(np.float32)


def planes(freq_time: NDArray[Any], dm_time: NDArray[Any], size: int = INPUT_SIZE) -> NDArray[np.float32]:
    """Frequency x time and DM x time resampled to ``size`` a side and normalised: ``(2, size, size)``."""
    out = np.empty((2, size, size), dtype=np.float32)
    for i, image in enumerate((freq_time, dm_time)):
        resized = resize_axis(resize_axis(image, size, axis=0), size, axis=1)
        out[i] = normalise(resized)
    return out


def load_planes(path: str | Path, size: int = INPUT_SIZE) -> NDArray[np.float32]:
    """:func:`planes` of one file."""
    c = read_cutout(path)
    return planes(c.freq_time, c.dm_time, size)


def geometry_of(
    attrs: dict[str, Any], size: int = INPUT_SIZE
) -> tuple[float, float, float, float, float, float]:
    """What the augmentations need of a file (:class:`~cudalab.radio.classify.augment.Geometry`):
    ``(f_top, f_bottom, time pixels per unit DM across the band at ``size``, DM, DM-time range)``,
    from FETCH's attributes (``fch1``, ``foff``, ``nchans``, ``tsamp``, ``time_decimation_factor``,
    ``dm``, ``dm_time_range``; ``your``'s files lack the last two: 1 and 0 to 2 x DM)."""
    from cudalab.radio.constants import DM_CONSTANT
    from cudalab.radio.single_pulse.cutouts import SIZE

    fch1, foff, nchans = (
        float(attrs.get("fch1", 1500.0)),
        float(attrs.get("foff", -1.0)),
        int(attrs.get("nchans", 1)),
    )
    ends = (fch1, fch1 + foff * (nchans - 1))
    f_top, f_bottom = max(ends), max(min(ends), 1e-3)
    dm = float(attrs.get("dm", 0.0))
    pixel_s = float(attrs.get("tsamp", 1e-3)) * float(attrs.get("time_decimation_factor", 1)) * SIZE / size
    px_per_dm = DM_CONSTANT * (f_bottom**-2 - f_top**-2) / pixel_s
    lo, hi = attrs.get("dm_time_range", (0.0, 2.0 * dm))
    return f_top, f_bottom, px_per_dm, dm, float(lo), float(hi)
