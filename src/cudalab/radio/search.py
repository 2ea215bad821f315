"""Single-pulse search of dedispersed time series: baseline, robust RMS, boxcars, giants, clustering.

For each DM trial the slowly varying baseline is removed with a running median, the noise measured as
1.4826 x MAD, and the series convolved with boxcars of widths 1, 2, 4, ... samples; every contiguous
run above the threshold in one (trial, width) is a *giant*, represented by its peak. One burst makes
giants at many neighbouring trials and widths (its DM-time "bow-tie"); friends-of-friends clustering
in time, DM trial and width merges them into one candidate, represented by its brightest giant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.rfi import MAD_TO_STD


def running_median(y: torch.Tensor, window: int) -> torch.Tensor:
    """Approximate running median over ``window`` samples along the last axis, cheaply.

    The series is cut into chunks of ``window // 8`` samples whose medians are taken; a running median
    of 9 chunk medians (spanning ~``window``) is interpolated back linearly. Medians of medians keep the
    robustness that matters here (a pulse narrower than a chunk barely moves it).
    Shape: ``(rows, n)`` -> same.
    """
    rows, n = y.shape
    if n == 0:
        return y.clone()
    if window >= n or n < 32:
        return y.median(dim=1, keepdim=True).values.expand(rows, n).clone()
    chunk = max(1, window // 8)
    nchunks = -(-n // chunk)
    pad = nchunks * chunk - n
    # Pad the ragged last chunk with NaN, not copies of the last sample: nanmedian then takes the median
    # of the real samples only (a replicated last value would become that chunk's "median").
    padded = torch.nn.functional.pad(y, (0, pad), value=float("nan")) if pad else y
    meds = padded.reshape(rows, nchunks, chunk).nanmedian(dim=2).values  # (rows, nchunks)
    k = min(9, nchunks if nchunks % 2 else nchunks - 1)
    if k >= 3:
        meds = torch.nn.functional.pad(meds[:, None], (k // 2, k // 2), mode="replicate")[:, 0]
        meds = meds.unfold(1, k, 1).median(dim=2).values
    centres = (torch.arange(nchunks, device=y.device, dtype=torch.float32) + 0.5) * chunk - 0.5
    t = torch.arange(n, device=y.device, dtype=torch.float32)
    pos = torch.clamp(torch.searchsorted(centres, t) - 1, 0, max(nchunks - 2, 0))
    if nchunks == 1:
        return meds[:, :1].expand(rows, n).clone()
    x0, x1 = centres[pos], centres[pos + 1]
    frac = ((t - x0) / (x1 - x0)).clamp(0, 1)
    return meds[:, pos] * (1 - frac) + meds[:, pos + 1] * frac


def normalise(series: torch.Tensor, baseline_samples: int) -> torch.Tensor:
    """Baseline-subtracted series in units of its robust noise (1.4826 x MAD per trial)."""
    y = series - running_median(series, baseline_samples)
    rms = (y - y.median(dim=1, keepdim=True).values).abs().median(dim=1, keepdim=True).values * MAD_TO_STD
    return y / rms.clamp_min(1e-12)


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
        Boxcar widths in scrunched samples.
    first_sample
        Native sample of column 0 (the block's start).
    valid
        Only boxcars starting before this column are kept (later ones belong to the next block).
    """
    _rows, n = z.shape
    csum = torch.nn.functional.pad(
        torch.cumsum(z.double(), dim=1), (1, 0)
    )  # float64: no drift over long rows
    parts = []
    for w in widths:
        if w > n:
            break
        snr = ((csum[:, w:] - csum[:, :-w]) / np.sqrt(w)).float()  # (rows, n - w + 1): boxcar starting at t
        snr = snr[:, : max(0, min(valid, snr.shape[1]))]
        hits = torch.nonzero(snr >= threshold)  # the only data that leaves the device: sparse
        if hits.numel() == 0:
            continue
        r, t = hits[:, 0].cpu().numpy(), hits[:, 1].cpu().numpy()
        vals = snr[hits[:, 0], hits[:, 1]].cpu().numpy()
        # Runs: consecutive columns in the same row (nonzero returns row-major, sorted).
        new_run = np.ones(len(r), dtype=bool)
        new_run[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1] + 1)
        run_id = np.cumsum(new_run) - 1
        order = np.lexsort((-vals, run_id))
        first = order[np.r_[True, run_id[order][1:] != run_id[order][:-1]]]
        parts.append(
            Giants(
                snr=vals[first].astype(np.float32),
                sample=(first_sample + (t[first] * scrunch + (w * scrunch) // 2)).astype(np.int64),
                width=np.full(len(first), w * scrunch, dtype=np.int64),
                dm_index=dm_index[r[first]].astype(np.int64),
            )
        )
    return Giants.concat(parts)


@dataclass(frozen=True, slots=True)
class Clusters:
    """Friends-of-friends groups of giants.

    Attributes
    ----------
    best
        Index (into the giants) of each cluster's brightest member.
    members
        Giants per cluster.
    dm_index_min, dm_index_max, begin, end
        The cluster's extent in trial index and in native samples.
    label
        Cluster of each giant.
    """

    best: NDArray[np.int64]
    members: NDArray[np.int64]
    dm_index_min: NDArray[np.int64]
    dm_index_max: NDArray[np.int64]
    begin: NDArray[np.int64]
    end: NDArray[np.int64]
    label: NDArray[np.int64]


def cluster_giants(
    giants: Giants, *, time_tol: float = 3.0, dm_tol: int = 20, width_tol: int = 3
) -> Clusters:
    """Friends-of-friends: two giants are friends when their times differ by at most ``time_tol`` times
    the wider boxcar, their trials by at most ``dm_tol``, and their widths by at most ``width_tol``
    factors of two (heimdall's three separations); clusters are the connected groups.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(giants)
    if n == 0:
        z = np.zeros(0, np.int64)
        return Clusters(z, z, z, z, z, z, z)
    logw = np.log2(giants.width).astype(np.float64)
    wmax = float(giants.width.max())
    # KD-tree prefilter in Chebyshev distance with the loosest time scale, then the exact test per pair.
    pts = np.column_stack(
        [giants.sample / (time_tol * wmax), giants.dm_index / max(dm_tol, 1e-9), logw / max(width_tol, 1e-9)]
    )
    pairs = cKDTree(pts).query_pairs(r=1.0, p=np.inf, output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        ok = np.abs(giants.sample[i] - giants.sample[j]) <= time_tol * np.maximum(
            giants.width[i], giants.width[j]
        )
        i, j = i[ok], j[ok]
    else:
        i = j = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    ncl, label = connected_components(graph, directed=False)
    label = label.astype(np.int64)
    order = np.lexsort((-giants.snr, label))
    starts = np.r_[0, np.flatnonzero(np.diff(label[order])) + 1]
    best = order[starts]
    members = np.bincount(label, minlength=ncl)
    half = giants.width // 2
    begin = np.full(ncl, np.iinfo(np.int64).max)
    end = np.full(ncl, np.iinfo(np.int64).min)
    np.minimum.at(begin, label, giants.sample - half)
    np.maximum.at(end, label, giants.sample + half)
    dmin = np.full(ncl, np.iinfo(np.int64).max)
    dmax = np.full(ncl, np.iinfo(np.int64).min)
    np.minimum.at(dmin, label, giants.dm_index)
    np.maximum.at(dmax, label, giants.dm_index)
    return Clusters(
        best, members, dmin, dmax, begin, end, label
    )  # best[k]: cluster k's brightest (order sorts by label)
