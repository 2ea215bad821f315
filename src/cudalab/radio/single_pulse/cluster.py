"""Friends-of-friends clustering: the giants of one burst (its DM-time bow-tie) become one candidate.

Two giants are friends when they are close in time (relative to the wider boxcar), in DM trial and
in boxcar width (heimdall's three separations); a cluster is a connected group, represented by its
brightest member.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cudalab.radio.single_pulse.search import Giants


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
