"""Clustering: the giants of one burst (its DM-time bow-tie) become one candidate, two bursts two.

Two giants are friends when they are close in time (relative to the wider boxcar), in DM trial and
in boxcar width (heimdall's three separations). heimdall's clusters are the connected groups of
friends (friends-of-friends), and a chain of friends can join anything: a bright burst 0.15 s from
an interference's track in DM-time was joined to it through the faint tails of both and reported at
the interference's DM and time. Here the friends graph is cut by topological persistence (ToMATo,
Chazal et al. 2013, with S/N as the density): giants are taken brightest first; one whose friends are
all fainter starts a cluster (a peak), any other joins the cluster of its brightest friend, and
where it also touches other clusters, those whose peak rises less than a prominence above it (a
noise bump on one bow-tie) merge into it. Two peaks joined only through a saddle well below both stay
two candidates. Each cluster is represented by its brightest member, its peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


#: A peak stays its own cluster when it rises above the saddle joining it to a brighter one by at
#: least this many sigma, and by PROMINENCE_FRACTION of its own S/N: the S/N of one pulse's giants
#: scatter by about 1 sigma across neighbouring trials and widths, so its bow-tie has no bump of 3.
PROMINENCE_SIGMA = 3.0
PROMINENCE_FRACTION = 0.25


def cluster_giants(
    giants: Giants,
    *,
    time_tol: float = 3.0,
    dm_tol: int = 20,
    width_tol: int = 3,
    prominence: float = PROMINENCE_SIGMA,
    prominence_fraction: float = PROMINENCE_FRACTION,
) -> Clusters:
    """Cluster giants: friends (heimdall's separations: times within ``time_tol`` times the wider
    boxcar, trials within ``dm_tol``, widths less than ``width_tol`` factors of two apart), grouped by
    persistence (see the module): a peak whose rise above its saddle with a brighter cluster is at
    least ``max(prominence, prominence_fraction x its S/N)`` stays a cluster of its own.
    ``prominence=inf`` gives friends-of-friends (every connected group one cluster).
    """
    from scipy.sparse import coo_matrix

    n = len(giants)
    if n == 0:
        z = np.zeros(0, np.int64)
        return Clusters(z, z, z, z, z, z, z)
    i, j = friend_pairs(giants, time_tol=time_tol, dm_tol=dm_tol, width_tol=width_tol)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    label = _persistence_labels(
        (graph + graph.T).tocsr(), giants.snr.astype(np.float64), prominence, prominence_fraction
    )
    ncl = int(label.max()) + 1
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


@dataclass(frozen=True, slots=True)
class Capped:
    """Giants left after :func:`cap_giants`, and what was set aside."""

    giants: Giants
    dropped: int
    """Giants set aside."""
    floor_snr: float
    """The brightest giant set aside (0 when none): below it, a busy block's pulses may be missed."""


def cap_giants(giants: Giants, *, block: int, limit: int) -> Capped:
    """At most ``limit`` giants, the brightest, in each block of ``block`` native samples.

    A block full of interference can hold hundreds of thousands of giants, each the friend of hundreds
    of others: clustering them all takes minutes and tens of GB. Capping per block (rather than over the
    file) keeps one busy second from pushing out the faint pulses of the others; heimdall's
    ``-max_giant_rate`` drops a whole block instead. ``limit <= 0``: no cap.
    """
    n = len(giants)
    if limit <= 0 or n <= limit:
        return Capped(giants, 0, 0.0)
    b = giants.sample // max(block, 1)
    order = np.lexsort((-giants.snr, b))
    bo = b[order]
    starts = np.r_[0, np.flatnonzero(np.diff(bo)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    keep = np.sort(order[rank < limit])
    if len(keep) == n:
        return Capped(giants, 0, 0.0)
    out = np.ones(n, bool)
    out[keep] = False
    kept = Giants(giants.snr[keep], giants.sample[keep], giants.width[keep], giants.dm_index[keep])
    return Capped(kept, int(out.sum()), float(giants.snr[out].max()))


def friend_pairs(
    giants: Giants, *, time_tol: float, dm_tol: int, width_tol: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every pair of friends ``(i, j)``, ``i < j``: times within ``time_tol`` times the wider boxcar,
    trials within ``dm_tol``, widths less than ``width_tol`` factors of two apart (a ratio under
    ``2**width_tol``). The tests are exact, in integers: a single tree over scaled floats had let
    ``|dDM| = dm_tol`` and a width ratio of exactly ``2**width_tol`` through for some pairs and not
    others, by rounding.

    The pairs are sought per pair of boxcar widths, each in a KD-tree whose time axis is scaled by
    that pair's wider boxcar. (One tree at the widest boxcar's scale offered every giant within 1,536
    samples of a 1-sample one as a candidate pair: on an RFI-rich Apertif background, 212,000 giants
    made billions, and the search was killed for memory. Even exact, they are 100 million pairs
    there, taking 16 GB to cluster: hence :func:`cap_giants`.)
    """
    from scipy.spatial import cKDTree

    widths, level = np.unique(giants.width, return_inverse=True)
    members = [np.flatnonzero(level == k) for k in range(len(widths))]
    dm_scale = max(dm_tol, 1e-9)
    out_i: list[NDArray[np.int64]] = []
    out_j: list[NDArray[np.int64]] = []
    for b in range(len(widths)):
        for a in range(b + 1):  # widths[a] <= widths[b]
            if widths[b] >= widths[a] * 2**width_tol:
                continue
            reach = time_tol * float(widths[b])

            def points(idx: NDArray[np.int64], reach: float = reach) -> NDArray[np.float64]:
                return np.column_stack([giants.sample[idx] / reach, giants.dm_index[idx] / dm_scale])

            tb = cKDTree(points(members[b]))
            r = 1.0 + 1e-9  # inclusive, then the exact integer test below
            if a == b:
                pairs = tb.query_pairs(r=r, p=np.inf, output_type="ndarray")
                pi, pj = pairs[:, 0], pairs[:, 1]
            else:
                found = cKDTree(points(members[a])).sparse_distance_matrix(
                    tb, r, p=np.inf, output_type="ndarray"
                )
                pi, pj = found["i"], found["j"]
            gi, gj = members[a][pi], members[b][pj]
            ok = (np.abs(giants.sample[gi] - giants.sample[gj]) <= reach) & (
                np.abs(giants.dm_index[gi] - giants.dm_index[gj]) <= dm_tol
            )
            gi, gj = gi[ok], gj[ok]
            out_i.append(np.minimum(gi, gj))
            out_j.append(np.maximum(gi, gj))
    if not out_i:
        z = np.zeros(0, np.int64)
        return z, z
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _persistence_labels(
    graph: Any, snr: NDArray[np.float64], prominence: float, fraction: float
) -> NDArray[np.int64]:
    """Cluster labels 0..k-1 of the nodes of a symmetric CSR ``graph`` by persistence (the module's
    rule). Union-find over the nodes, brightest first; a cluster's root is its peak."""
    n = len(snr)
    rank = np.empty(n, dtype=np.int64)
    order = np.argsort(-snr, kind="stable")
    rank[order] = np.arange(n)
    indptr, indices = graph.indptr.tolist(), graph.indices.tolist()
    rank_l, snr_l = rank.tolist(), snr.tolist()
    parent = list(range(n))

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    for v in order.tolist():
        rv, sv = rank_l[v], snr_l[v]
        brighter = [u for u in indices[indptr[v] : indptr[v + 1]] if rank_l[u] < rv]
        if not brighter:
            continue  # a peak: its own cluster, for now
        top = min(brighter, key=rank_l.__getitem__)  # the brightest friend
        home = find(top)
        parent[v] = home
        # the clusters it touches, highest peak first: a bump of a home merges into the eldest of
        # them, whatever order the graph lists the friends in
        # (each friend's root is its parent's: finding the few distinct parents is enough)
        for r0 in sorted({find(p) for p in {parent[u] for u in brighter}}, key=rank_l.__getitem__):
            r = find(r0)
            if r == home:
                continue
            lower, upper = (r, home) if rank_l[r] > rank_l[home] else (home, r)
            peak = snr_l[lower]
            if peak - sv < max(prominence, fraction * peak):  # a bump, not a peak: merge
                parent[lower] = upper
                home = find(v)
    roots = np.array([find(a) for a in range(n)], dtype=np.int64)
    _, label = np.unique(roots, return_inverse=True)
    return label.astype(np.int64)
