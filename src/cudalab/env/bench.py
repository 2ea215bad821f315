"""``cudalab bench``: what this GPU (or CPU) delivers, beside its datasheet peak.

Method (the same for every figure): random inputs (never zeros: zero operands let a GPU skip
switching and overstate throughput), warm-up runs first, then each repeat timed on its own with CUDA
events on the GPU (wall clock on the CPU), and the median reported, so that one preempted repeat
neither flatters nor spoils the figure.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from cudalab.env.peaks import GpuPeak, lookup, pcie_gbps


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure.

    Attributes
    ----------
    name
        What was measured (``"matmul bf16"``).
    value
        The median measured rate, in ``unit``.
    unit
        ``"TFLOP/s"``, ``"GFLOP/s"`` or ``"GB/s"`` (1e9 bytes/s).
    peak
        The datasheet (or link) peak in the same unit, or None when unknown.
    detail
        Size and method, so the figure can be reproduced.
    """

    name: str
    value: float
    unit: str
    peak: float | None
    detail: str

    @property
    def percent(self) -> float | None:
        """Measured as a percentage of peak, or None when the peak is unknown."""
        return None if not self.peak else 100.0 * self.value / self.peak


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes and repeats; :func:`quick_config` and :func:`full_config` are the presets.

    Attributes
    ----------
    matmul_n
        Square matmul size n (2 n^3 FLOPs); 8192 fills an H100's 132 SMs with 128x128 tiles 32 times over.
    copy_bytes
        Bytes per device-to-device copy.
    host_bytes
        Bytes per host<->device copy.
    allreduce_bytes
        Bytes per GPU in the NCCL all-reduce.
    warmup, repeats
        Untimed and timed runs per figure.
    cpu_matmul_n, cpu_copy_bytes
        The CPU figures' sizes.
    """

    matmul_n: int = 8192
    copy_bytes: int = 1 << 30
    host_bytes: int = 1 << 28
    allreduce_bytes: int = 1 << 28
    warmup: int = 3
    repeats: int = 20
    cpu_matmul_n: int = 2048
    cpu_copy_bytes: int = 1 << 28

    def __post_init__(self) -> None:
        if self.matmul_n < 64 or self.cpu_matmul_n < 64:
            raise ValueError("matmul sizes must be >= 64")
        if min(self.copy_bytes, self.host_bytes, self.allreduce_bytes, self.cpu_copy_bytes) < 1 << 20:
            raise ValueError("copy sizes must be >= 1 MiB")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")


def full_config() -> BenchConfig:
    """Sizes that fill a data-centre GPU; about 20 s on an H100."""
    return BenchConfig()


def quick_config() -> BenchConfig:
    """A few seconds on a GPU or a small CPU."""
    return BenchConfig(
        matmul_n=4096,
        copy_bytes=1 << 28,
        host_bytes=1 << 26,
        allreduce_bytes=1 << 26,
        warmup=2,
        repeats=5,
        cpu_matmul_n=1024,
        cpu_copy_bytes=1 << 26,
    )


def _median_gpu_seconds(torch: Any, fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()  # elapsed_time needs both events complete
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _median_wall_seconds(
    fn: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]
) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _set_tf32(torch: Any, enabled: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 prefers fp32_precision; allow_tf32 still works
        torch.backends.cuda.matmul.allow_tf32 = enabled


def bench_gpu(
    cfg: BenchConfig, device: int = 0, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Measure matmul, device copy, host copies and (with >= 2 GPUs) NCCL all-reduce on ``device``."""
    import torch

    say = progress or (lambda _msg: None)
    dev = torch.device("cuda", device)
    props = torch.cuda.get_device_properties(dev)
    peak: GpuPeak | None = lookup(props.name)
    link = _pcie_link(device)
    figures: list[Figure] = []
    gen = torch.Generator(device=dev).manual_seed(0)
    n = cfg.matmul_n

    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype_name, dtype, tf32 in (
            ("fp32", torch.float32, False),
            ("tf32", torch.float32, True),
            ("bf16", torch.bfloat16, False),
            ("fp16", torch.float16, False),
        ):
            if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                continue
            say(f"matmul {dtype_name} {n}^3")
            _set_tf32(torch, tf32)
            a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
            b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
            out = torch.empty(n, n, device=dev, dtype=dtype)
            s = _median_gpu_seconds(torch, partial(torch.mm, a, b, out=out), cfg.warmup, cfg.repeats)
            figures.append(
                Figure(
                    f"matmul {dtype_name}",
                    2 * n**3 / s / 1e12,
                    "TFLOP/s",
                    peak.matmul_tflops(dtype_name) if peak else None,
                    f"{n}x{n}x{n}, median of {cfg.repeats}",
                )
            )
            del a, b, out
    finally:
        _set_tf32(torch, old_tf32)

    say("device copy")
    numel = cfg.copy_bytes // 4
    src = torch.rand(numel, device=dev, generator=gen)
    dst = torch.empty_like(src)
    s = _median_gpu_seconds(torch, lambda: dst.copy_(src), cfg.warmup, cfg.repeats)
    figures.append(
        Figure(
            "device copy",
            2 * cfg.copy_bytes / s / 1e9,
            "GB/s",
            peak.mem_gbps if peak else None,
            f"{cfg.copy_bytes >> 20} MiB, bytes read + written",
        )
    )

    host_numel = cfg.host_bytes // 4
    gpu_buf = torch.rand(host_numel, device=dev, generator=gen)
    link_peak = pcie_gbps(*link) if link else None
    link_txt = f"PCIe Gen{link[0]} x{link[1]}" if link else "link unknown"
    for pinned in (True, False):
        kind = "pinned" if pinned else "pageable"
        host = torch.rand(host_numel).pin_memory() if pinned else torch.rand(host_numel)
        say(f"host copies ({kind})")
        for direction, fn in (
            ("host->device", lambda host=host: gpu_buf.copy_(host, non_blocking=True)),
            ("device->host", lambda host=host: host.copy_(gpu_buf, non_blocking=True)),
        ):
            s = _median_gpu_seconds(torch, fn, cfg.warmup, cfg.repeats)
            figures.append(
                Figure(
                    f"{direction} {kind}",
                    cfg.host_bytes / s / 1e9,
                    "GB/s",
                    link_peak,
                    f"{cfg.host_bytes >> 20} MiB, {link_txt}",
                )
            )

    n_gpu = torch.cuda.device_count()
    if n_gpu >= 2:
        say(f"NCCL all-reduce over {n_gpu} GPUs")
        figures.append(_bench_allreduce(torch, cfg, n_gpu, peak))
    return {
        "device": {
            "kind": "cuda",
            "index": device,
            "name": props.name,
            "compute_capability": [props.major, props.minor],
            "multiprocessors": props.multi_processor_count,
            "memory_total_bytes": int(props.total_memory),
            "peak_model": peak.model if peak else None,
            "gpus": n_gpu,
        },
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "figures": [asdict(f) | {"percent": f.percent} for f in figures],
    }


def _bench_allreduce(torch: Any, cfg: BenchConfig, n_gpu: int, peak: GpuPeak | None) -> Figure:
    """NCCL all-reduce from one process over all GPUs (as nccl-tests' ``-g``), reported as bus bandwidth.

    busbw = algbw * 2 (n - 1) / n: each byte crosses the slowest link 2 (n - 1) / n times in a ring, so
    busbw is comparable with the link's peak whatever n (nccl-tests, doc/PERFORMANCE.md).
    """
    from torch.cuda import nccl

    numel = cfg.allreduce_bytes // 4
    tensors = [torch.rand(numel, device=f"cuda:{d}") for d in range(n_gpu)]

    def sync() -> None:
        for d in range(n_gpu):
            torch.cuda.synchronize(d)

    s = _median_wall_seconds(lambda: nccl.all_reduce(tensors), cfg.warmup, cfg.repeats, sync)
    algbw = cfg.allreduce_bytes / s / 1e9
    return Figure(
        f"NCCL all-reduce busbw ({n_gpu} GPUs)",
        algbw * 2 * (n_gpu - 1) / n_gpu,
        "GB/s",
        peak.nvlink_gbps if peak else None,
        f"{cfg.allreduce_bytes >> 20} MiB per GPU, busbw = algbw x 2(n-1)/n",
    )


def _pcie_link(device: int) -> tuple[int, int] | None:
    """(generation, width) of the GPU's maximum PCIe link, from NVML; None when NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(device)
            return int(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h)), int(
                pynvml.nvmlDeviceGetMaxPcieLinkWidth(h)
            )
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, or a GPU that does not report its link: the peak is then unknown
        return None


def bench_cpu(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """CPU figures: FP32 GEMM through torch (its BLAS) and memory bandwidth of a large copy."""
    import torch

    say = progress or (lambda _msg: None)
    gen = torch.Generator().manual_seed(0)
    n = cfg.cpu_matmul_n
    say(f"CPU matmul fp32 {n}^3")
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    s = _median_wall_seconds(lambda: torch.mm(a, b, out=out), 1, cfg.repeats, lambda: None)
    figures = [
        Figure(
            "CPU matmul fp32",
            2 * n**3 / s / 1e9,
            "GFLOP/s",
            None,
            f"{n}x{n}x{n}, {torch.get_num_threads()} threads",
        )
    ]
    say("CPU memory copy")
    numel = cfg.cpu_copy_bytes // 4
    src = torch.rand(numel, generator=gen)
    dst = torch.empty_like(src)
    s = _median_wall_seconds(lambda: dst.copy_(src), 1, cfg.repeats, lambda: None)
    figures.append(
        Figure(
            "CPU memory copy",
            2 * cfg.cpu_copy_bytes / s / 1e9,
            "GB/s",
            None,
            f"{cfg.cpu_copy_bytes >> 20} MiB, read + write",
        )
    )
    return {
        "device": {"kind": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "figures": [asdict(f) | {"percent": f.percent} for f in figures],
    }


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    import platform
    import re
    from pathlib import Path

    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        m = None
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


def run_bench(
    cfg: BenchConfig, device: str = "auto", progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the GPU benchmark on a usable GPU (``device="auto"`` or ``"cuda"``), else the CPU one.

    Raises
    ------
    RuntimeError
        When ``device="cuda"`` but no GPU is usable.
    """

    from cudalab.env.device import resolve_device

    use_gpu = resolve_device(device)[0].type == "cuda"
    return bench_gpu(cfg, progress=progress) if use_gpu else bench_cpu(cfg, progress=progress)
