"""Functional smoke tests on a usable GPU: does it compute correctly, with every library torch needs?

Each test checks its GPU result against a float64 CPU reference computed from the same random inputs,
so a GPU that returns garbage (bad memory, a broken cuBLAS or cuDNN) fails here rather than in
hour 3 of a training run. Run only when ``torch.cuda.is_available()``; about 0.3 s after CUDA init.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from cudalab.env.facts import Probe

#: Relative error bounds (max |gpu - ref| / max |ref|). Full-precision FP32 GEMM/conv with K ~ 1e3
#: accumulates ~sqrt(K) * 6e-8 ~ 2e-6; bf16 has an 8-bit mantissa (eps 7.8e-3), fp16 10 bits (9.8e-4),
#: and autocast accumulates in fp32, so the result error is ~eps of the inputs' rounding.
FP32_RTOL = 1e-4
BF16_RTOL = 2e-2
FP16_RTOL = 4e-3


@contextlib.contextmanager
def _full_fp32(torch: Any) -> Iterator[None]:
    """Disable TF32 for matmul and cuDNN while checking against float64 (restored afterwards)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 prefers fp32_precision; allow_tf32 still works
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _rel_err(got: Any, ref: Any) -> float:
    got64 = got.double().cpu()
    return float((got64 - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _run(name: str, fn: Callable[[], tuple[bool, str]], torch: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
        torch.cuda.synchronize()  # the time must include the GPU work, not just its launch
    except Exception as exc:
        ok, detail = False, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return {"name": name, "ok": ok, "detail": detail, "elapsed_s": time.perf_counter() - t0}


def run_smoke(seed: int = 0) -> Probe:
    """Run the smoke tests on every visible GPU and return them as the ``smoke`` probe."""
    t_all = time.perf_counter()
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_dev = torch.cuda.device_count()
    tests: list[dict[str, Any]] = []

    def matmul() -> tuple[bool, str]:
        a = torch.randn(1024, 1024, generator=gen, dtype=torch.float64)
        b = torch.randn(1024, 1024, generator=gen, dtype=torch.float64)
        ref = a @ b
        worst = 0.0
        with _full_fp32(torch):
            for d in range(n_dev):
                dev = torch.device("cuda", d)
                worst = max(worst, _rel_err(a.float().to(dev) @ b.float().to(dev), ref))
        return worst < FP32_RTOL, f"fp32 1024^3 on {n_dev} GPU(s) vs float64 CPU: rel err {worst:.1e}"

    def conv() -> tuple[bool, str]:
        x = torch.randn(8, 32, 64, 64, generator=gen, dtype=torch.float64)
        w = torch.randn(64, 32, 3, 3, generator=gen, dtype=torch.float64)
        ref = torch.nn.functional.conv2d(x, w, padding=1)
        with _full_fp32(torch):
            got = torch.nn.functional.conv2d(x.float().cuda(), w.float().cuda(), padding=1)
        err = _rel_err(got, ref)
        return (
            err < FP32_RTOL,
            f"cuDNN {torch.backends.cudnn.version()} conv2d vs float64 CPU: rel err {err:.1e}",
        )

    def autocast() -> tuple[bool, str]:
        a = torch.randn(512, 512, generator=gen, dtype=torch.float64)
        b = torch.randn(512, 512, generator=gen, dtype=torch.float64)
        ref = a @ b
        parts, ok = [], True
        dtypes = [(torch.float16, FP16_RTOL)]
        if torch.cuda.is_bf16_supported():
            dtypes.insert(0, (torch.bfloat16, BF16_RTOL))
        for dtype, rtol in dtypes:
            with torch.autocast("cuda", dtype=dtype):
                out = a.float().cuda() @ b.float().cuda()
            err = _rel_err(out, ref)
            ok = ok and out.dtype == dtype and err < rtol
            parts.append(f"{str(dtype).removeprefix('torch.')} rel err {err:.1e}")
        return ok, "autocast matmul: " + ", ".join(parts)

    def nccl() -> tuple[bool, str]:
        from torch.cuda import nccl as tnccl

        tensors = [torch.full((1 << 20,), float(d + 1), device=f"cuda:{d}") for d in range(n_dev)]
        if not tnccl.is_available(tensors):
            raise RuntimeError("torch was built without NCCL")
        tnccl.all_reduce(tensors)
        want = n_dev * (n_dev + 1) / 2
        ok = all(bool((t == want).all()) for t in tensors)
        return ok, f"NCCL {'.'.join(map(str, tnccl.version()))} all-reduce over {n_dev} GPU(s): sum {want:g}"

    for name, fn in (("matmul", matmul), ("conv", conv), ("autocast", autocast), ("nccl", nccl)):
        tests.append(_run(name, fn, torch))
    ok = all(t["ok"] for t in tests)
    failed = [t["name"] for t in tests if not t["ok"]]
    return Probe(
        name="smoke",
        ok=ok,
        value={"tests": tests},
        source="torch on every visible GPU vs float64 CPU references",
        error=None if ok else f"failed: {', '.join(failed)}",
        elapsed_s=time.perf_counter() - t_all,
    )
