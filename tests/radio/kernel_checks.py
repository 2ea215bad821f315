"""The Triton kernels (dedispersion, the fused boxcar search) against the torch references, on fresh
random data.

Shared by the CPU suite (run in a subprocess under ``TRITON_INTERPRET=1``, which Triton reads when the
kernel is first built) and the ``gpu`` tests (compiled, on CUDA). ``python kernel_checks.py DEVICE``
runs every check and prints one line per check.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cudalab.radio.dedispersion.direct import dedisperse, dedisperse_numpy
from cudalab.radio.dedispersion.plan import make_plan
from cudalab.radio.dedispersion.subband import dedisperse_subband, plan_subbands
from cudalab.radio.io.header import Header
from cudalab.radio.kernels import triton_set
from cudalab.radio.kernels.launch import boxcar_hits_triton, dedisperse_triton
from cudalab.radio.single_pulse.candidates import Candidate
from cudalab.radio.single_pulse.search import boxcar_hits, fit_baseline, normalise


def _integer_block(rng: np.random.Generator, nchans: int, ntime: int) -> torch.Tensor:
    # 8-bit samples: every float32 sum of up to 2^16 of them is exact, so results compare bit for bit
    return torch.from_numpy(rng.integers(0, 256, size=(nchans, ntime)).astype(np.float32))


def _delays(rng: np.random.Generator, ndm: int, nchans: int, top: int) -> torch.Tensor:
    return torch.from_numpy(np.sort(rng.integers(0, top, size=(ndm, nchans)), axis=1)[:, ::-1].copy())


def check_direct_exact(device: str, seed: int) -> None:
    """Ragged tiles (ndm and nout not multiples of a tile), int64 and int32 trial-minor delays."""
    rng = np.random.default_rng(seed)
    nchans, ndm, nout = 67, 45, 777
    data = _integer_block(rng, nchans, nout + 300)
    delays = _delays(rng, ndm, nchans, 300)
    want = dedisperse(data, delays, nout)
    assert torch.equal(dedisperse_triton(data.to(device), delays.to(device), nout).cpu(), want)
    trial_minor = delays.to(torch.int32).T.contiguous().T.to(device)
    assert torch.equal(dedisperse_triton(data.to(device), trial_minor, nout).cpu(), want)
    np.testing.assert_array_equal(want.numpy(), dedisperse_numpy(data.numpy(), delays.numpy(), nout))


def check_masked_channels_exact(device: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    nchans, ndm, nout = 40, 19, 400
    data = _integer_block(rng, nchans, nout + 90)
    delays = _delays(rng, ndm, nchans, 90)
    w = torch.ones(nchans)
    w[rng.choice(nchans, 9, replace=False)] = 0
    got = dedisperse_triton(data.to(device), delays.to(device), nout, weights=w.to(device)).cpu()
    assert torch.equal(got, dedisperse(data, delays, nout, weights=w))
    none = dedisperse_triton(data.to(device), delays.to(device), nout, weights=torch.zeros(nchans).to(device))
    assert not none.cpu().any()


def check_scaled_float_within_rounding(device: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    nchans, ndm, nout = 50, 33, 517
    data = torch.randn(nchans, nout + 64, generator=g)
    delays = torch.randint(0, 64, (ndm, nchans), generator=g)
    w = torch.rand(nchans, generator=g) * 2
    w[::7] = 0
    got = dedisperse_triton(data.to(device), delays.to(device), nout, weights=w.to(device)).cpu()
    want = dedisperse_numpy((data * w[:, None]).numpy().astype(np.float64), delays.numpy(), nout)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)


def check_sources_and_out(device: str, seed: int) -> None:
    """Stage 2's form: a source row per trial, written into a strided view of a larger output."""
    g = torch.Generator().manual_seed(seed)
    nsrc, nchans, ndm, nout = 4, 24, 30, 300
    x = torch.randn(nsrc, nchans, nout + 40, generator=g)
    delays = torch.randint(0, 40, (ndm, nchans), generator=g)
    src = torch.randint(0, nsrc, (ndm,), generator=g)
    big = torch.full((ndm + 5, 2, nout + 8), 7.0, device=device)
    got = dedisperse_triton(
        x.to(device), delays.to(device), nout, sources=src.to(device), out=big[2 : ndm + 2, 1, 3 : nout + 3]
    )
    assert got.data_ptr() == big[2, 1, 3].data_ptr()
    want = torch.stack([dedisperse(x[s], delays[i : i + 1], nout)[0] for i, s in enumerate(src.tolist())])
    torch.testing.assert_close(big[2 : ndm + 2, 1, 3 : nout + 3].cpu(), want, rtol=1e-6, atol=1e-5)
    assert (big[:2] == 7).all() and (big[:, 0] == 7).all(), "wrote outside its view"


def check_subband_matches_reference(device: str, seed: int) -> None:
    """Both stages on the kernel equal both stages on the reference, on a real L-band delay plan."""
    h = Header(
        path="", format="sigproc", nbits=8, nchans=128, nsamples=1 << 16, tsamp_s=256e-6,
        fch1_mhz=1500.0, foff_mhz=-300.0 / 128,
    )  # fmt: skip
    delays = make_plan(h, 0.0, 300.0, scrunch=False).delays
    plan = plan_subbands(delays, 16, 1)
    rng = np.random.default_rng(seed)
    nout = 600
    data = _integer_block(rng, 128, nout + plan.max_delay + 3)
    w = torch.ones(128)
    w[[5, 6, 77]] = 0
    want = dedisperse_subband(data, plan, nout, weights=w, budget_bytes=1 << 20)
    got = dedisperse_subband(
        data.to(device), plan, nout, weights=w.to(device), budget_bytes=1 << 20, kernels=triton_set()
    )
    assert torch.equal(got.cpu(), want)


HitMap = dict[tuple[int, int, int], float]  # (row, column, width index) -> S/N


def _hit_map(hits: tuple[torch.Tensor, ...]) -> HitMap:
    row, t, k, snr = (h.cpu().numpy() for h in hits)
    return {(int(a), int(b), int(c)): float(d) for a, b, c, d in zip(row, t, k, snr, strict=True)}


def _assert_same_hits(got: HitMap, want: HitMap, threshold: float, atol: float = 1e-4) -> None:
    """Equal hit sets and S/N, but for hits within float32 rounding of the threshold (either side)."""
    near = {k for k, v in {**got, **want}.items() if abs(v - threshold) < atol}
    assert set(got) - near == set(want) - near, sorted(set(got) ^ set(want))[:10]
    worst = max((abs(got[k] - want[k]) for k in set(got) & set(want)), default=0.0)
    assert worst < atol, f"S/N differs by {worst}"


def check_boxcar_hits_match_reference(device: str, seed: int) -> None:
    """The fused kernel finds the reference's hits with its S/N: a sloping, offset baseline per row;
    pulses of many widths, one wider than a tile (the kernel sums it in pieces); hits past ``valid``
    and boxcars running off the row's end left out; more hits than room (the second launch)."""
    g = torch.Generator().manual_seed(seed)
    rows, n = 7, 12_000
    t = torch.arange(n, dtype=torch.float32)
    noise = 1 + 3 * torch.rand(rows, 1, generator=g)
    series = 50 * torch.rand(rows, 1, generator=g) + 3e-5 * t * torch.randn(rows, 1, generator=g)
    series = series + noise * torch.randn(rows, n, generator=g)
    for r, (start, width, height) in enumerate(
        [
            (100, 1, 9.0),
            (700, 5, 4.0),
            (1300, 37, 1.5),
            (2000, 300, 0.6),
            (5000, 1500, 0.8),
            (11_950, 40, 2.0),
        ]
    ):
        series[r, start : start + width] += height * noise[r]
    # powers of two and three times them; the last three more than the interpreter's 1024-sample tile
    widths = [1, 2, 3, 4, 6, 16, 48, 64, 256, 1024, 1536, 2048, 3072]
    b = fit_baseline(series, 8000)
    want = _hit_map(boxcar_hits(normalise(series, 8000), threshold=4.0, widths=widths, valid=11_900))
    dev = series.to(device)
    got = _hit_map(
        boxcar_hits_triton(
            dev, b.knots.to(device), b.chunk, b.inv_rms.to(device), widths=widths, threshold=4.0, valid=11_900,
            capacity=100,
        )
    )  # fmt: skip
    assert len(want) > 500 and any(k[2] == widths.index(2048) for k in want), "the check lost its wide pulse"
    _assert_same_hits(got, want, 4.0)
    # short rows: one knot (their median), widths past the row's length
    short = series[:, :20].contiguous()
    b = fit_baseline(short, 600)
    want = _hit_map(boxcar_hits(normalise(short, 600), threshold=1.5, widths=widths, valid=20))
    got = _hit_map(
        boxcar_hits_triton(
            short.to(device), b.knots.to(device), b.chunk, b.inv_rms.to(device), widths=widths, threshold=1.5,
            valid=20,
        )
    )  # fmt: skip
    assert want
    _assert_same_hits(got, want, 1.5)


def same_candidates(a: list[Candidate], b: list[Candidate], atol: float = 1e-3) -> None:
    """Two searches found the same candidates (place, trial, width) with the same S/N to ``atol``."""
    key = lambda cs: [(c.sample, c.dm_index, c.width_samples) for c in cs]  # noqa: E731
    assert key(a) == key(b), (key(a)[:5], key(b)[:5])
    np.testing.assert_allclose([c.snr for c in a], [c.snr for c in b], atol=atol)


def check_search_on_kernels_matches_reference(device: str, seed: int) -> None:
    """A whole search on the Triton kernels (dedispersion and the fused boxcars) finds what the torch
    reference finds, on a small simulated observation with bursts and RFI."""
    from cudalab.radio.pipeline.config import SearchConfig
    from cudalab.radio.pipeline.search import search_file
    from cudalab.radio.simulate import SimConfig, planned_header, random_bursts, simulate

    sim = SimConfig(
        nchans=32, tsamp_s=256e-6, fch1_mhz=1500.0, foff_mhz=-300.0 / 32, duration_s=2.0, seed=seed
    )
    bursts = random_bursts(3, np.random.default_rng(seed), header=planned_header(sim), dm_range=(30.0, 200.0),
                           width_range_s=(0.5e-3, 4e-3), snr_range=(12.0, 25.0), spacing_s=0.4)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.fil"
        simulate(replace(sim, bursts=tuple(bursts)), path)
        cfg = SearchConfig(dm_max=250.0, device=device, cutouts=0, refine=0, gulp=4096, baseline_s=0.5)  # type: ignore[arg-type]
        ref = search_file(path, replace(cfg, kernel="torch"))
        fast = search_file(path, replace(cfg, kernel="triton"))
    assert fast.kernel == "triton" and ref.kernel == "torch"
    # (random_bursts places as many of the 3 as fit 0.4 s apart in 2 s: two, for some seeds)
    assert len(bursts) >= 2 and len(ref.candidates) >= len(bursts), "the check found nothing to compare"
    assert ref.candidates[0].snr >= 10, "the check found nothing to compare"
    same_candidates(fast.candidates, ref.candidates)


CHECKS: dict[str, Callable[[str, int], None]] = {
    f.__name__: f
    for f in (
        check_direct_exact,
        check_masked_channels_exact,
        check_scaled_float_within_rounding,
        check_sources_and_out,
        check_subband_matches_reference,
        check_boxcar_hits_match_reference,
        check_search_on_kernels_matches_reference,
    )
}


if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int(np.random.SeedSequence().entropy % 2**31)
    for name, check in CHECKS.items():
        check(dev, seed)
        print(f"ok {name} seed={seed}", flush=True)
