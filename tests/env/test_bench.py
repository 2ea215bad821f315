"""Peaks table and bench configuration (the GPU measurements are in test_gpu.py)."""

from __future__ import annotations

import pytest

from cudalab.env.bench import BenchConfig, Figure, full_config, quick_config
from cudalab.env.peaks import lookup, pcie_gbps


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM5"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM4"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM4"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
    ],
)
def test_peak_lookup(name: str, model: str) -> None:
    peak = lookup(name)
    assert peak is not None and peak.model == model


@pytest.mark.parametrize(
    "name", ["NVIDIA L40", "NVIDIA GH200 480GB", "NVIDIA B200", "", None, "Quadro K5000"]
)
def test_unknown_gpus_get_no_guess(name: str | None) -> None:
    assert lookup(name) is None


def test_h100_datasheet_figures_are_dense_not_sparse() -> None:
    peak = lookup("NVIDIA H100 80GB HBM3")
    assert peak is not None
    assert peak.matmul_tflops("bf16") == pytest.approx(989.4)  # 1979 is the 2:4-sparse figure
    assert peak.matmul_tflops("tf32") == pytest.approx(494.7)
    assert peak.mem_gbps == 3350.0
    t4 = lookup("Tesla T4")
    assert t4 is not None and t4.matmul_tflops("bf16") is None


def test_pcie_peak_from_link() -> None:
    assert pcie_gbps(5, 16) == pytest.approx(63.0, rel=1e-3)
    assert pcie_gbps(4, 16) == pytest.approx(31.5, rel=1e-3)
    assert pcie_gbps(None, 16) is None and pcie_gbps(9, 16) is None


def test_percent_of_peak() -> None:
    assert Figure("x", 780.0, "TFLOP/s", 989.4, "").percent == pytest.approx(78.8, abs=0.1)
    assert Figure("x", 1.0, "GB/s", None, "").percent is None


def test_configs_validate() -> None:
    assert quick_config().matmul_n < full_config().matmul_n
    with pytest.raises(ValueError, match="repeats"):
        BenchConfig(repeats=0)
    with pytest.raises(ValueError, match="1 MiB"):
        BenchConfig(copy_bytes=1024)
