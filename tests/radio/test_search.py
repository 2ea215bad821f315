"""Baseline, boxcars, giants and clustering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cudalab.radio.rfi import MAD_TO_STD, STATS_SAMPLES
from cudalab.radio.single_pulse.cluster import cap_giants, cluster_giants, friend_pairs
from cudalab.radio.single_pulse.search import (
    Giants,
    find_giants,
    fit_baseline,
    normalise,
    run_peaks,
    running_median,
)


def test_running_median_follows_a_slope_and_ignores_a_pulse() -> None:
    t = torch.arange(20000, dtype=torch.float32)
    y = (0.001 * t + torch.randn(20000, generator=torch.Generator().manual_seed(0)))[None]
    y[0, 10000:10020] += 50
    base = running_median(y, 2000)
    # each knot is a median of ~250 unit-noise samples (sigma ~0.08); the max over the row sits near 3 sigma
    assert (base - 0.001 * t).abs()[0, 500:-500].max() < 0.3
    assert (base[0, 10000:10020] - 10.0).abs().max() < 0.3


def test_running_median_tail_is_not_one_sample() -> None:
    """Regression: a ragged last chunk padded with copies of the last sample made a noisy baseline there."""
    y = torch.randn(3, 10_050, generator=torch.Generator().manual_seed(4))
    y[:, -1] = 8.0  # an outlier at the very end
    base = running_median(y, 2000)
    assert base[:, -200:].abs().max() < 0.3


def test_normalise_gives_unit_noise() -> None:
    y = 5 + 3 * torch.randn(4, 50000, generator=torch.Generator().manual_seed(1))
    z = normalise(y, 4000)
    assert z.median().abs() < 0.05 and (z.std(dim=1) - 1).abs().max() < 0.03


def test_noise_from_a_strided_subset_is_the_whole_rows() -> None:
    """Long rows take their median and MAD from STATS_SAMPLES evenly spaced samples: the noise level
    agrees with the whole row's to well within its own statistical error (~0.5 % at 2^16 samples)."""
    n = 4 * STATS_SAMPLES + 123
    g = torch.Generator().manual_seed(5)
    y = 7 + torch.linspace(0, 4, n) + torch.tensor([[0.5], [2.0], [3.0]]) * torch.randn(3, n, generator=g)
    b = fit_baseline(y, 20_000)
    resid = y - b.at(torch.arange(n))
    full = (resid - resid.median(dim=1, keepdim=True).values).abs().median(dim=1).values * MAD_TO_STD
    assert ((1 / b.inv_rms) / full - 1).abs().max() < 0.02
    assert ((1 / b.inv_rms) / torch.tensor([0.5, 2.0, 3.0]) - 1).abs().max() < 0.03
    torch.testing.assert_close(b.at(torch.arange(n)), running_median(y, 20_000))


def test_a_short_row_has_one_knot_its_median() -> None:
    y = torch.tensor([[1.0, 9.0, 2.0, 3.0, 100.0]])
    b = fit_baseline(y, 1000)
    assert b.knots.shape == (1, 1) and float(b.knots[0, 0]) == 3.0
    assert torch.equal(b.at(torch.arange(5)), torch.full((1, 5), 3.0))


def test_run_peaks_take_each_runs_brightest_whatever_the_order() -> None:
    """Runs are consecutive columns of one row and width; ties go to the earliest column."""
    row = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0])
    t = np.array([10, 11, 12, 14, 15, 11, 12, 11, 12])
    k = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])
    snr = np.array([6.0, 8.0, 7.0, 6.5, 6.5, 9.0, 6.0, 7.0, 7.5], dtype=np.float32)
    want = [1, 3, 5, 8]  # (w0, row 0) 10-12 and 14-15 (tie: 14); (w0, row 1); (w1, row 0)
    assert run_peaks(row, t, k, snr).tolist() == want
    perm = np.random.default_rng(0).permutation(len(row))
    assert perm[run_peaks(row[perm], t[perm], k[perm], snr[perm])].tolist() == want
    assert run_peaks(row[:0], t[:0], k[:0], snr[:0]).size == 0


def test_boxcar_finds_a_pulse_at_its_width_and_place() -> None:
    z = torch.randn(3, 6000, generator=torch.Generator().manual_seed(2))
    z[1, 3000:3016] += 3.0  # 16-sample pulse: boxcar S/N 3 * sqrt(16) = 12 at width 16
    g = find_giants(
        z,
        np.array([10, 11, 12]),
        threshold=7.0,
        widths=[1, 2, 4, 8, 16, 32],
        scrunch=1,
        first_sample=100,
        valid=6000,
    )
    best = int(np.argmax(g.snr))
    assert g.dm_index[best] == 11 and g.width[best] == 16
    assert abs(g.sample[best] - (100 + 3008)) <= 2 and 10.5 < g.snr[best] < 13.5
    assert (g.dm_index == 11).all()  # nothing from pure noise at 7 sigma in 18k samples x 6 widths


def test_scrunched_giants_report_native_samples_and_widths() -> None:
    z = torch.zeros(1, 1000)
    z[0, 400:402] = 10.0
    g = find_giants(z, np.array([0]), threshold=5, widths=[2], scrunch=4, first_sample=8000, valid=1000)
    assert g.width.tolist() == [8] and g.sample.tolist() == [8000 + 400 * 4 + 4]


def test_valid_limits_the_block_to_its_own_samples() -> None:
    z = torch.zeros(1, 1000)
    z[0, 950] = 10.0
    g = find_giants(z, np.array([0]), threshold=5, widths=[1], scrunch=1, first_sample=0, valid=900)
    assert len(g) == 0


def test_clustering_merges_a_bow_tie_and_separates_distinct_pulses() -> None:
    # One burst seen at 15 neighbouring trials (bow-tie), another far away in time, a third far in DM.
    dm_idx = np.r_[np.arange(100, 115), [107, 400]]
    sample = np.r_[10_000 + 2 * (dm_idx[:15] - 107), [50_000, 10_000]]
    snr = np.r_[12 - 0.5 * np.abs(dm_idx[:15] - 107), [9.0, 8.0]].astype(np.float32)
    g = Giants(
        snr=snr,
        sample=sample.astype(np.int64),
        width=np.full(17, 8, np.int64),
        dm_index=dm_idx.astype(np.int64),
    )
    cl = cluster_giants(g, time_tol=3, dm_tol=20)
    assert len(cl.best) == 3
    biggest = int(np.argmax(cl.members))
    assert cl.members[biggest] == 15 and g.dm_index[cl.best[biggest]] == 107
    assert cl.dm_index_min[biggest] == 100 and cl.dm_index_max[biggest] == 114


def test_clustering_empty() -> None:
    assert len(cluster_giants(Giants.empty()).best) == 0


def _random_giants(n: int, seed: int, samples: int = 20_000, trials: int = 200) -> Giants:
    rng = np.random.default_rng(seed)
    return Giants(
        snr=rng.uniform(6, 20, n).astype(np.float32),
        sample=rng.integers(0, samples, n).astype(np.int64),
        width=(2 ** rng.integers(0, 10, n) * rng.choice([1, 3], n)).astype(np.int64),  # as searched
        dm_index=rng.integers(0, trials, n).astype(np.int64),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_friend_pairs_are_every_pair_within_the_three_separations(seed: int) -> None:
    g = _random_giants(2500, seed)
    i, j = friend_pairs(g, time_tol=3.0, dm_tol=20, width_tol=3)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(got) == len(i) and bool(np.all(i < j))
    a, b = np.triu_indices(len(g), 1)  # brute force, the definition written out
    ok = (
        (np.abs(g.sample[a] - g.sample[b]) <= 3.0 * np.maximum(g.width[a], g.width[b]))
        & (np.abs(g.dm_index[a] - g.dm_index[b]) <= 20)
        & (np.maximum(g.width[a], g.width[b]) < 8 * np.minimum(g.width[a], g.width[b]))
    )
    assert got == set(zip(a[ok].tolist(), b[ok].tolist(), strict=True)) and len(got) > 1000


def test_the_giant_cap_keeps_the_brightest_of_each_block_and_spares_quiet_blocks() -> None:
    busy = _random_giants(5000, 2, samples=10_000)  # block 0 and block 1: 2,500 giants each or so
    quiet = Giants(  # block 3: three faint giants
        snr=np.array([6.1, 6.2, 6.3], np.float32),
        sample=np.array([30_100, 30_200, 30_300], np.int64),
        width=np.ones(3, np.int64),
        dm_index=np.zeros(3, np.int64),
    )
    g = Giants.concat([busy, quiet])
    capped = cap_giants(g, block=5_000, limit=1_000)
    kept = capped.giants
    assert len(kept) == 2_003 and capped.dropped == len(g) - 2_003
    for blk in (0, 1):
        inside = g.sample // 5_000 == blk
        snr_kept = kept.snr[kept.sample // 5_000 == blk]
        assert len(snr_kept) == 1_000
        assert snr_kept.min() >= np.sort(g.snr[inside])[-1_000]  # the brightest thousand
    assert {6.1, 6.2, 6.3} <= {round(float(x), 1) for x in kept.snr[kept.sample >= 30_000]}
    assert capped.floor_snr == pytest.approx(
        max(np.sort(g.snr[g.sample // 5_000 == b])[-1_001] for b in (0, 1))
    )
    assert cap_giants(g, block=5_000, limit=0).dropped == 0  # off
    assert cap_giants(quiet, block=5_000, limit=3).giants is quiet


def _bow_tie(
    dm0: int, t0: int, peak: float, rng: np.random.Generator, widths: tuple[int, ...] = (4, 8, 16, 32)
) -> Giants:
    """One pulse's giants: S/N falls away from (dm0, t0) along a DM-time diagonal and away from the
    middle width, with 1-sigma scatter, down to the threshold of 6."""
    rows = []
    mid = np.log2(widths[len(widths) // 2])
    for w in widths:
        for d in range(-40, 41):
            s = peak / np.sqrt(1 + (d / (4 * np.log2(2 * w))) ** 2) - 0.3 * abs(np.log2(w) - mid)
            s += rng.normal(0, 1)
            if s >= 6:
                rows.append((s, t0 - 6 * d, w, dm0 + d))
    a = np.array(rows)
    return Giants(
        a[:, 0].astype(np.float32),
        a[:, 1].astype(np.int64),
        a[:, 2].astype(np.int64),
        a[:, 3].astype(np.int64),
    )


def test_clustering_keeps_a_bow_tie_whole_through_its_noise() -> None:
    for seed in range(10):
        g = _bow_tie(300, 50_000, 30.0, np.random.default_rng(seed))
        cl = cluster_giants(g)
        assert len(cl.best) == 1, seed


@pytest.mark.parametrize(
    ("offset", "track_snr"),
    [
        (100, (15.0, 20.0)),
        (300, (15.0, 20.0)),
        (1000, (15.0, 20.0)),
        (1000, (35.0, 45.0)),
        (1300, (35.0, 45.0)),
    ],
)
def test_clustering_does_not_chain_a_burst_into_an_interference_track(
    offset: int, track_snr: tuple[float, float]
) -> None:
    # An interference track: a giant of width 32 at every trial along a line in DM-time (what an
    # undispersed narrowband impulse makes when dedispersed), fainter or brighter than a burst of S/N
    # 30 (widths 2-16) placed ``offset`` samples beside it, whose bow-tie's wide giants touch the track.
    # Friends-of-friends joins them into one cluster, represented by the track when it is the brighter;
    # with persistence the burst is the peak of a cluster of its own whatever the track's brightness,
    # and no track giant joins it. (A burst whose own brightest giant is a friend of brighter
    # interference giants, or touches them at nearly its own S/N (offsets under ~900 here), joins them: what removes such interference is
    # the time-frequency mask, tested end to end in test_rfi.py.)
    rng = np.random.default_rng(offset)
    track_dm = np.arange(0, 600)
    track = Giants(
        rng.uniform(*track_snr, 600).astype(np.float32),
        (40_000 + 20 * track_dm).astype(np.int64),
        np.full(600, 32, np.int64),
        track_dm.astype(np.int64),
    )
    burst = _bow_tie(300, 40_000 + 20 * 300 + offset, 30.0, rng, widths=(2, 4, 8, 16))
    g = Giants.concat([track, burst])
    burst_peak = len(track) + int(np.argmax(burst.snr))
    fof = cluster_giants(g, prominence=np.inf)
    assert len(fof.best) == 1  # the chain
    cl = cluster_giants(g)
    assert burst_peak in cl.best.tolist()
    if track_snr[0] > 30:  # a brighter track is a peak of its own too, and takes nothing of the burst
        assert len(cl.best) == 2
        assert (cl.label[: len(track)] != cl.label[burst_peak]).all()


def _graph(n: int, edges: list[tuple[int, int]], rng: np.random.Generator | None = None) -> object:
    """A symmetric CSR graph of ``edges``, each row's friends in random order when ``rng`` is given."""
    from scipy.sparse import csr_matrix

    rows: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        rows[a].append(b)
        rows[b].append(a)
    if rng is not None:
        for r in rows:
            rng.shuffle(r)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([u for r in rows for u in r], dtype=np.int64)
    g = csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, n))
    g.has_sorted_indices = False  # keep the rows' order as given
    return g


def test_persistence_merges_a_bump_into_the_eldest_cluster_whatever_the_friends_order() -> None:
    """Three clusters meet at one giant v (S/N 10) through one member each. Its brightest friend is in
    B (peak 13): a bump above v (prominence 4), so B merges; A (peak 20) and C (peak 16) rise far
    above v and stay apart. B goes to the eldest, A, whichever of A's and C's members the graph lists
    first (it went to whichever came first)."""
    from cudalab.radio.single_pulse.cluster import _persistence_labels

    #               A0    C0    B0    B1    C1    A1    v
    snr = np.array([20.0, 16.0, 13.0, 12.5, 11.5, 11.0, 10.0])
    a0, c0, b0, b1, c1, a1, v = range(7)
    tree = [(a0, a1), (b0, b1), (c0, c1)]
    for junction in ([(v, b1), (v, a1), (v, c1)], [(v, b1), (v, c1), (v, a1)]):
        label = _persistence_labels(_graph(7, tree + junction), snr, prominence=4.0, fraction=0.0)
        assert label[a0] == label[a1] == label[b0] == label[b1] == label[v] != label[c0] == label[c1], (
            junction
        )


@pytest.mark.parametrize("seed", range(4))
def test_persistence_labels_do_not_depend_on_the_order_friends_are_listed(seed: int) -> None:
    from cudalab.radio.single_pulse.cluster import _persistence_labels

    rng = np.random.default_rng(seed)
    n = 300
    pts = rng.uniform(0, 10, (n, 2))
    snr = (
        6
        + 14 * np.exp(-((pts - 3) ** 2).sum(1) / 4)
        + 10 * np.exp(-((pts - 7) ** 2).sum(1) / 2)
        + rng.normal(0, 1, n)
    )
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    edges = [(int(a), int(b)) for a, b in zip(*np.triu_indices(n, 1), strict=True) if d[a, b] < 1.0]
    ref = _persistence_labels(_graph(n, edges), snr, prominence=3.0, fraction=0.1)
    assert 2 <= ref.max() + 1 < n // 3  # the two hills, a few isolated giants: a real test
    for _ in range(5):
        got = _persistence_labels(_graph(n, edges, rng), snr, prominence=3.0, fraction=0.1)
        assert np.array_equal(got, ref)
