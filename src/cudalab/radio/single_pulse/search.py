"""Single-pulse search of dedispersed time series: baseline, robust RMS, boxcars, giants, clustering.

For each DM trial the slowly varying baseline is removed with a running median, the noise measured as
a clipped standard deviation, and the series convolved with boxcars of widths 1, 2, 4, ... samples; every contiguous
run above the threshold in one (trial, width) is a *giant*, represented by its peak. One burst makes
giants at many neighbouring trials and widths (its DM-time "bow-tie"); friends-of-friends clustering
in time, DM trial and width merges them into one candidate, represented by its brightest giant.

Two paths give the same giants (:func:`search_series`): the torch reference, which materialises the
normalised series and one S/N array per width, and on a GPU one fused Triton kernel that reads the
series once and returns only the samples above threshold (:func:`cudalab.radio.kernels.launch.boxcar_hits_triton`).
The peaks of runs are taken on the host from that compact list, the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.rfi import robust_location_scale, stats_step

Hits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(row, t, width index, snr)``: every boxcar above threshold, one entry per hit, in any order."""


def boxcar_widths(max_width_s: float, tsamp_s: float) -> list[int]:
    """Boxcar widths in native samples: 1, 2, 3, 4, 6, 8, 12, ... (powers of two and three times them,
    steps of about sqrt(2)) up to ``max_width_s`` (at least one sample).

    A boxcar of width W on a Gaussian pulse of FWHM F recovers 94 % of the matched filter's S/N at
    W ~ 1.2 F and falls off either side; with widths a factor 2 apart (heimdall's) a pulse between two
    of them loses up to ~8 % more, with factors of sqrt(2) about 2 %. Measured on the injection
    benchmark: recovered over ideal S/N, see benchmarks/RESULTS.md.
    """
    top = max(1.0, max_width_s / tsamp_s)
    out = []
    k = 0
    while 2**k <= top:
        out.append(2**k)
        if 3 * 2 ** (k - 1) <= top and k >= 1:
            out.append(3 * 2 ** (k - 1))
        k += 1
    return sorted(set(out))


@dataclass(frozen=True)
class Baseline:
    """A running-median baseline and a robust noise level per row, kept as knots, not as a series.

    The baseline at sample ``t`` interpolates linearly between knots ``k`` placed at
    ``(k + 0.5) * chunk - 0.5`` (held flat beyond the first and last); :meth:`at` evaluates it where it
    is needed, so the fused GPU search never writes the baseline or the normalised series to memory.

    Attributes
    ----------
    knots
        ``(rows, nknots)`` float32: the baseline at the knots.
    chunk
        Samples between knots.
    inv_rms
        ``(rows,)`` float32: 1 / the robust noise of the baseline-subtracted row.
    """

    knots: torch.Tensor
    chunk: int
    inv_rms: torch.Tensor

    def at(self, t: torch.Tensor) -> torch.Tensor:
        """The baseline at samples ``t`` (1-d, integer): shape ``(rows, len(t))``."""
        return _interpolate(self.knots, self.chunk, t)


def _interpolate(knots: torch.Tensor, chunk: int, t: torch.Tensor) -> torch.Tensor:
    """Knots ``(rows, nknots)`` spaced ``chunk`` apart (:class:`Baseline`), linearly at samples ``t``."""
    nk = knots.shape[1]
    u = (t.to(torch.float32) + 0.5) / chunk - 0.5
    pos = u.floor().clamp(0, max(nk - 2, 0))
    frac = (u - pos).clamp(0, 1)
    p = pos.long()
    return knots[:, p] * (1 - frac) + knots[:, (p + 1).clamp_max(nk - 1)] * frac


#: Baseline knots are medians of the means of this many pieces of each chunk (:func:`_knots`).
PIECES_PER_CHUNK = 16


def _piece_means(y: torch.Tensor, piece: int) -> torch.Tensor:
    """Means of consecutive pieces of ``piece`` samples along the last axis; a ragged last piece is the
    mean of the samples it has. ``(rows, n)`` -> ``(rows, ceil(n / piece))``."""
    rows, n = y.shape
    if piece <= 1:
        return y
    pad = -n % piece
    padded = torch.nn.functional.pad(y, (0, pad), value=float("nan")) if pad else y
    return padded.reshape(rows, -1, piece).nanmean(dim=2)


def _knots(y: torch.Tensor, window: int) -> tuple[torch.Tensor, int]:
    """``(knots, chunk)`` of an approximate running median over ``window`` samples, cheaply.

    The row is cut into chunks of ``window // 8`` samples. Each chunk's level is the median of the
    means of its :data:`PIECES_PER_CHUNK` pieces, not the median of its samples: on data of few bits
    (a sum of 1- or 2-bit channels takes integer values) a median is an integer, off the true level
    by up to half a step (0.13 sigma on the PRESTO tutorial's series), and a boxcar of w samples turns
    such an offset into sqrt(w) times as much S/N (0.7 sigma at 32 samples); means of pieces are not
    quantised, and their median stays robust to a pulse narrower than a few pieces. A running median
    of 9 chunk levels (spanning ~``window``) smooths them. A ragged last chunk shorter than half a chunk
    is folded into the one before it: its own level, from a handful of samples, would otherwise set
    the baseline of the row's end (the edge padding repeats it), and a slow drift there read as a
    pulse. Short rows (``window >= n`` or under 32 samples) get one knot.
    """
    rows, n = y.shape
    if window >= n or n < 32:
        m = _piece_means(y, max(1, n // PIECES_PER_CHUNK))
        return m.nanmedian(dim=1, keepdim=True).values, max(n, 1)
    piece = max(1, window // 8 // PIECES_PER_CHUNK)
    per = max(1, window // 8 // piece)  # pieces per chunk
    chunk = piece * per
    m = _piece_means(y, piece)  # (rows, npieces)
    nchunks = -(-n // chunk)
    rest = n - (nchunks - 1) * chunk  # samples in the last chunk
    if nchunks > 1 and 2 * rest < chunk:  # fold a sliver into the chunk before it
        nchunks -= 1
        head = m[:, : (nchunks - 1) * per].reshape(rows, nchunks - 1, per).median(dim=2).values
        tail = m[:, (nchunks - 1) * per :].median(dim=1, keepdim=True).values
        meds = torch.cat([head, tail], dim=1)
    else:
        pad = nchunks * per - m.shape[1]
        # Pad the ragged last chunk with NaN, not copies of the last value: nanmedian then takes the
        # median of the real pieces only (a replicated last value would become that chunk's level).
        padded = torch.nn.functional.pad(m, (0, pad), value=float("nan")) if pad else m
        meds = padded.reshape(rows, nchunks, per).nanmedian(dim=2).values  # (rows, nchunks)
    k = min(9, nchunks if nchunks % 2 else nchunks - 1)
    if k >= 3:
        meds = torch.nn.functional.pad(meds[:, None], (k // 2, k // 2), mode="replicate")[:, 0]
        meds = meds.unfold(1, k, 1).median(dim=2).values
    return meds, chunk


def fit_baseline(series: torch.Tensor, window: int) -> Baseline:
    """The running-median baseline (window ``window`` samples) and robust noise of each row.

    The noise is the clipped standard deviation of the baseline-subtracted row
    (:func:`cudalab.radio.rfi.robust_location_scale`: the MAD's robustness without its quantisation),
    taken over at most :data:`cudalab.radio.rfi.STATS_SAMPLES` evenly spaced samples. Shape: ``(rows, n)``.
    """
    rows, n = series.shape
    if n == 0:
        ones = torch.ones(rows, dtype=torch.float32, device=series.device)
        return Baseline(torch.zeros(rows, 1, device=series.device), 1, ones)
    knots, chunk = _knots(series, window)
    step = stats_step(n)
    y = series[:, ::step] - _interpolate(knots, chunk, torch.arange(0, n, step, device=series.device))
    _, scale = robust_location_scale(y)
    return Baseline(knots, chunk, 1.0 / scale[:, 0])


def running_median(y: torch.Tensor, window: int) -> torch.Tensor:
    """Approximate running median over ``window`` samples along the last axis (:func:`_knots`,
    interpolated back linearly).  Shape: ``(rows, n)`` -> same."""
    if y.shape[1] == 0:
        return y.clone()
    knots, chunk = _knots(y, window)
    return _interpolate(knots, chunk, torch.arange(y.shape[1], device=y.device))


def normalise(series: torch.Tensor, baseline_samples: int) -> torch.Tensor:
    """Baseline-subtracted series in units of its robust noise (:func:`fit_baseline`)."""
    b = fit_baseline(series, baseline_samples)
    return (series - b.at(torch.arange(series.shape[1], device=series.device))) * b.inv_rms[:, None]


@dataclass(frozen=True, slots=True)
class Giants:
    """Peaks above threshold, one per contiguous run in a (trial, width).  All arrays share one length.

    Attributes
    ----------
    snr
        Boxcar S/N.
    sample
        Native sample of the boxcar's centre (arrival at the top channel).
    width
        Boxcar width in native samples.
    dm_index
        Index into the plan's DM trials.
    """

    snr: NDArray[np.float32]
    sample: NDArray[np.int64]
    width: NDArray[np.int64]
    dm_index: NDArray[np.int64]

    @staticmethod
    def empty() -> Giants:
        return Giants(
            np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        )

    @staticmethod
    def concat(parts: list[Giants]) -> Giants:
        if not parts:
            return Giants.empty()
        return Giants(
            np.concatenate([p.snr for p in parts]),
            np.concatenate([p.sample for p in parts]),
            np.concatenate([p.width for p in parts]),
            np.concatenate([p.dm_index for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.snr)


def boxcar_hits(z: torch.Tensor, *, threshold: float, widths: list[int], valid: int) -> Hits:
    """Every boxcar above ``threshold``: the torch reference of the fused GPU search.

    ``z``: normalised series ``(rows, n)``. A boxcar of width ``w`` starting at column ``t < valid``
    (and ending inside the row) has S/N ``sum(z[t : t + w]) / sqrt(w)``, summed in float64 (no drift
    over long rows). Returns ``(row, t, width index, snr)``, one entry per hit, on ``z``'s device.
    """
    _rows, n = z.shape
    csum = torch.nn.functional.pad(torch.cumsum(z.double(), dim=1), (1, 0))
    parts = []
    for k, w in enumerate(widths):
        if w > n:
            break
        snr = ((csum[:, w:] - csum[:, :-w]) / np.sqrt(w)).float()  # (rows, n - w + 1): boxcar starting at t
        snr = snr[:, : max(0, min(valid, snr.shape[1]))]
        hits = torch.nonzero(snr >= threshold)
        parts.append((hits[:, 0], hits[:, 1], torch.full_like(hits[:, 0], k), snr[hits[:, 0], hits[:, 1]]))
    if not parts:
        e = torch.zeros(0, dtype=torch.long, device=z.device)
        return e, e, e, torch.zeros(0, device=z.device)
    return tuple(torch.cat(c) for c in zip(*parts, strict=True))  # type: ignore[return-value]


def run_peaks(
    row: NDArray[np.integer[Any]],
    t: NDArray[np.integer[Any]],
    width_index: NDArray[np.integer[Any]],
    snr: NDArray[np.floating[Any]],
) -> NDArray[np.int64]:
    """Index of the brightest hit of every run (consecutive columns of one row and width), in the order
    (width, row, column) of the runs; a tie goes to the earliest column. The hits may come in any order.
    """
    if len(row) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((t, row, width_index))
    r, c, k = row[order], t[order], width_index[order]
    new_run = np.ones(len(r), dtype=bool)
    new_run[1:] = (k[1:] != k[:-1]) | (r[1:] != r[:-1]) | (c[1:] != c[:-1] + 1)
    run_id = np.cumsum(new_run) - 1
    best = np.lexsort((-snr[order], run_id))  # stable: equal S/N keep column order
    first = best[np.r_[True, run_id[best][1:] != run_id[best][:-1]]]
    return order[first].astype(np.int64)


def boxcar_hits_torch(
    series: torch.Tensor, baseline: Baseline, *, widths: list[int], threshold: float, valid: int
) -> Hits:
    """The torch reference of the boxcar kernel: the series normalised by ``baseline``
    (:func:`normalise`'s arithmetic), then :func:`boxcar_hits`."""
    t = torch.arange(series.shape[1], device=series.device)
    z = (series - baseline.at(t)) * baseline.inv_rms[:, None]
    return boxcar_hits(z, threshold=threshold, widths=widths, valid=valid)


def _giants(
    hits: Hits,
    dm_index: NDArray[np.int64],
    widths: list[int],
    scrunch: int,
    first_sample: int,
    begin: int = 0,
) -> Giants:
    """The peak of every run of hits, as giants in native samples (the only data leaving the device);
    hits of boxcars starting before column ``begin`` (another block's) are left out."""
    row, t, k, snr = (h.cpu().numpy() for h in hits)
    if begin > 0:
        keep = t >= begin
        row, t, k, snr = row[keep], t[keep], k[keep], snr[keep]
    peak = run_peaks(row, t, k, snr)
    w = np.asarray(widths, dtype=np.int64)[k[peak]]
    return Giants(
        snr=snr[peak].astype(np.float32),
        sample=(first_sample + t[peak].astype(np.int64) * scrunch + (w * scrunch) // 2).astype(np.int64),
        width=w * scrunch,
        dm_index=dm_index[row[peak]].astype(np.int64),
    )


def find_giants(
    z: torch.Tensor,
    dm_index: NDArray[np.int64],
    *,
    threshold: float,
    widths: list[int],
    scrunch: int,
    first_sample: int,
    valid: int,
) -> Giants:
    """Boxcar-filter normalised series and return the peak of every run above ``threshold``.

    Parameters
    ----------
    z
        Normalised series (``normalise``), shape ``(ntrials, n)``, at ``scrunch`` x the native resolution.
    dm_index
        Plan index of each row.
    widths
        Boxcar widths in scrunched samples, ascending.
    first_sample
        Native sample of column 0 (the block's start).
    valid
        Only boxcars starting before this column are kept (later ones belong to the next block).
    """
    hits = boxcar_hits(z, threshold=threshold, widths=widths, valid=valid)
    return _giants(hits, dm_index, widths, scrunch, first_sample)


def search_series(
    series: torch.Tensor,
    dm_index: NDArray[np.int64],
    *,
    baseline_samples: int,
    threshold: float,
    widths: list[int],
    scrunch: int,
    first_sample: int,
    valid: int,
    boxcar: Callable[..., Hits] = boxcar_hits_torch,
    begin: int = 0,
) -> Giants:
    """The single-pulse search of dedispersed series: baseline, noise, boxcars, giants.

    Fits the baseline (:func:`fit_baseline`) and hands it, with the raw series, to ``boxcar``: the
    torch reference, or the fused Triton kernel (:attr:`cudalab.radio.kernels.KernelSet.boxcar`),
    which normalises, filters every width and compacts the hits on the fly, reading the series once.
    Boxcars starting at columns ``begin`` to ``valid`` are kept (the earlier ones belong to another
    block: a block reaching back from the file's end). The other arguments are those of
    :func:`find_giants`.
    """
    b = fit_baseline(series, baseline_samples)
    hits = boxcar(series, b, widths=widths, threshold=threshold, valid=valid)
    return _giants(hits, dm_index, widths, scrunch, first_sample, begin)
