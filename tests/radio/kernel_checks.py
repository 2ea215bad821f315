"""The Triton dedispersion kernel against the torch reference, on fresh random data.

Shared by the CPU suite (run in a subprocess under ``TRITON_INTERPRET=1``, which Triton reads when the
kernel is first built) and the ``gpu`` tests (compiled, on CUDA). ``python kernel_checks.py DEVICE``
runs every check and prints one line per check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch

from cudalab.radio.dedisperse import dedisperse, dedisperse_numpy
from cudalab.radio.header import Header
from cudalab.radio.kernels import dedisperse_triton
from cudalab.radio.plan import make_plan
from cudalab.radio.subband import dedisperse_subband, plan_subbands


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
        data.to(device), plan, nout, weights=w.to(device), budget_bytes=1 << 20, kernel="triton"
    )
    assert torch.equal(got.cpu(), want)


CHECKS: dict[str, Callable[[str, int], None]] = {
    f.__name__: f
    for f in (
        check_direct_exact,
        check_masked_channels_exact,
        check_scaled_float_within_rounding,
        check_sources_and_out,
        check_subband_matches_reference,
    )
}


if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int(np.random.SeedSequence().entropy % 2**31)
    for name, check in CHECKS.items():
        check(dev, seed)
        print(f"ok {name} seed={seed}", flush=True)
