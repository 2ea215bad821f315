"""Datasheet peaks of common NVIDIA GPUs, so that every benchmark figure stands beside its limit.

Figures are NVIDIA's published dense (no structured sparsity) tensor and vector rates at boost clock,
and memory bandwidth, from each product's datasheet. An unknown GPU gets None (printed "unknown"),
never a guess: a wrong peak makes a good machine look broken, or a broken one look good.

The host link is not a product constant (a GPU can sit in a narrower or older slot), so its peak is
derived from the link NVML reports: PCIe per-lane rate (PCI-SIG base specifications, after line
coding: 8b/10b for Gen 1-2, 128b/130b for Gen 3-5, FLIT for Gen 6) times the width.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Usable GB/s per lane and direction for each PCIe generation.
PCIE_GBPS_PER_LANE: dict[int, float] = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


@dataclass(frozen=True, slots=True)
class GpuPeak:
    """Dense peak rates of one GPU model.

    Attributes
    ----------
    model
        The product, as its datasheet names it.
    fp32_tflops, tf32_tflops, bf16_tflops, fp16_tflops
        Peak TFLOP/s for FP32 (CUDA cores) and for TF32 / BF16 / FP16 tensor-core matmul with FP32
        accumulation; None where the GPU has no such unit.
    mem_gbps
        Peak device-memory bandwidth in GB/s (1e9 bytes/s).
    nvlink_gbps
        NVLink bandwidth per GPU and direction in GB/s, None where there is none.
    """

    model: str
    fp32_tflops: float | None
    tf32_tflops: float | None
    bf16_tflops: float | None
    fp16_tflops: float | None
    mem_gbps: float | None
    nvlink_gbps: float | None = None

    def matmul_tflops(self, dtype: str) -> float | None:
        """Peak for ``dtype`` in ``fp32``, ``tf32``, ``bf16``, ``fp16``."""
        return {
            "fp32": self.fp32_tflops,
            "tf32": self.tf32_tflops,
            "bf16": self.bf16_tflops,
            "fp16": self.fp16_tflops,
        }[dtype]


# Checked in order: the first entry all of whose name tokens occur in the GPU's name wins, so
# specific variants precede their family.
_TABLE: tuple[tuple[tuple[str, ...], GpuPeak], ...] = (
    (("h200", "nvl"), GpuPeak("H200 NVL", 60.0, 417.5, 835.5, 835.5, 4800.0, 450.0)),
    (("h200",), GpuPeak("H200 SXM", 67.0, 494.7, 989.4, 989.4, 4800.0, 450.0)),
    (("h100", "nvl"), GpuPeak("H100 NVL", 60.0, 417.5, 835.5, 835.5, 3900.0, 300.0)),
    (("h100", "pcie"), GpuPeak("H100 PCIe", 51.0, 378.0, 756.0, 756.0, 2000.0, 300.0)),
    (("h100",), GpuPeak("H100 SXM5", 67.0, 494.7, 989.4, 989.4, 3350.0, 450.0)),
    (("a100", "pcie", "80gb"), GpuPeak("A100 80GB PCIe", 19.5, 156.0, 312.0, 312.0, 1935.0, 300.0)),
    (("a100", "pcie"), GpuPeak("A100 40GB PCIe", 19.5, 156.0, 312.0, 312.0, 1555.0, 300.0)),
    (("a100", "80gb"), GpuPeak("A100 80GB SXM4", 19.5, 156.0, 312.0, 312.0, 2039.0, 300.0)),
    (("a100",), GpuPeak("A100 40GB SXM4", 19.5, 156.0, 312.0, 312.0, 1555.0, 300.0)),
    (("l40s",), GpuPeak("L40S", 91.6, 183.0, 362.05, 362.05, 864.0)),
    (("l4",), GpuPeak("L4", 30.3, 60.0, 121.0, 121.0, 300.0)),
    (("a10",), GpuPeak("A10", 31.2, 62.5, 125.0, 125.0, 600.0)),
    (("t4",), GpuPeak("T4", 8.1, None, None, 65.0, 320.0)),
    (("v100", "pcie"), GpuPeak("V100 PCIe", 14.0, None, None, 112.0, 900.0)),
    (("v100",), GpuPeak("V100 SXM2", 15.7, None, None, 125.0, 900.0, 150.0)),
    (("rtx", "4090"), GpuPeak("GeForce RTX 4090", 82.6, 82.6, 165.2, 165.2, 1008.0)),
    (("rtx", "3090"), GpuPeak("GeForce RTX 3090", 35.6, 35.6, 71.0, 71.0, 936.0)),
)


def lookup(name: str | None) -> GpuPeak | None:
    """The datasheet peaks for a GPU named as NVML/torch name it (``"NVIDIA H100 80GB HBM3"``), or None."""
    if not name:
        return None
    tokens = name.lower().replace("-", " ").split()
    for keys, peak in _TABLE:
        if all(k in tokens for k in keys):
            return peak
    return None


def pcie_gbps(generation: int | None, width: int | None) -> float | None:
    """Peak host-link bandwidth per direction, GB/s, for a PCIe link; None when unknown."""
    if not generation or not width or generation not in PCIE_GBPS_PER_LANE:
        return None
    return PCIE_GBPS_PER_LANE[generation] * width
