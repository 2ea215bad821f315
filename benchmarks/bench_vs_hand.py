"""`cudalab bench` against the same figures measured by hand in the same run.

The hand method is the one the device notes used (KINDS.md): mean of ten timed runs after three
warm-ups, wall clock around a synchronize. `cudalab bench` uses CUDA events and a median; the two
should agree within 10 % (issue 2). On a CPU-only machine the CPU figures are compared instead.

    python benchmarks/bench_vs_hand.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from cudalab.env.bench import bench_cpu, bench_gpu, full_config, quick_config


def by_hand(fn: Callable[[], object], sync: Callable[[], None], warmup: int = 3, runs: int = 10) -> float:
    """Mean seconds per call: ``warmup`` untimed calls, then ``runs`` calls timed together."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(runs):
        fn()
    sync()
    return (time.perf_counter() - t0) / runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, also on a CPU)")
    args = ap.parse_args()
    cfg = quick_config() if args.quick else full_config()
    pairs: list[tuple[str, float, float, str]] = []
    if torch.cuda.is_available():
        ours = {f["name"]: f for f in bench_gpu(cfg)["figures"]}
        n = cfg.matmul_n
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        s = by_hand(lambda: a @ b, torch.cuda.synchronize)
        pairs.append(("matmul bf16", ours["matmul bf16"]["value"], 2 * n**3 / s / 1e12, "TFLOP/s"))
        src = torch.rand(cfg.copy_bytes // 4, device="cuda")
        dst = torch.empty_like(src)
        s = by_hand(lambda: dst.copy_(src), torch.cuda.synchronize)
        pairs.append(("device copy", ours["device copy"]["value"], 2 * cfg.copy_bytes / s / 1e9, "GB/s"))
        host = torch.rand(cfg.host_bytes // 4).pin_memory()
        dev = torch.empty(cfg.host_bytes // 4, device="cuda")
        s = by_hand(lambda: dev.copy_(host, non_blocking=True), torch.cuda.synchronize)
        pairs.append(
            ("host->device pinned", ours["host->device pinned"]["value"], cfg.host_bytes / s / 1e9, "GB/s")
        )
        device = torch.cuda.get_device_name(0)
    else:
        ours = {f["name"]: f for f in bench_cpu(cfg)["figures"]}
        n = cfg.cpu_matmul_n
        a, b = torch.randn(n, n), torch.randn(n, n)
        s = by_hand(lambda: a @ b, lambda: None)
        pairs.append(("CPU matmul fp32", ours["CPU matmul fp32"]["value"], 2 * n**3 / s / 1e9, "GFLOP/s"))
        device = "cpu"
    for name, measured, reference, unit in pairs:
        print(
            json.dumps(
                {
                    "benchmark": "bench_vs_hand",
                    "device": device,
                    "figure": name,
                    "unit": unit,
                    "cudalab_bench": round(measured, 2),
                    "by_hand": round(reference, 2),
                    "ratio": round(measured / reference, 3),
                }
            )
        )
    print(f"\n{'figure':<22} {'cudalab bench':>14} {'by hand':>12} {'ratio':>7}")
    for name, measured, reference, unit in pairs:
        print(
            f"{name:<22} {measured:>9.1f} {unit:<4} {reference:>7.1f} {unit:<4} {measured / reference:>7.3f}"
        )


if __name__ == "__main__":
    main()
