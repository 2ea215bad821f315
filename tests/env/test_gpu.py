"""On a real GPU (device machine): the doctor is green, the smoke tests pass, bench is sane."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def test_doctor_on_a_usable_gpu_is_all_green() -> None:
    from cudalab.env.doctor import run_doctor

    report = run_doctor()
    bad = [(f.check, f.evidence) for f in report.findings if f.status == "fail"]
    assert not bad
    assert report.verdict.state == "ready" and report.verdict.gpus >= 1
    assert {"smoke-matmul", "smoke-conv", "smoke-autocast", "smoke-nccl"} <= {
        f.check for f in report.findings
    }


def test_smoke_catches_a_wrong_reference() -> None:
    """The smoke comparison is not vacuous: a perturbed GPU result exceeds the bound."""
    import torch

    from cudalab.env.smoke import FP32_RTOL, _rel_err

    a = torch.randn(256, 256, dtype=torch.float64)
    ref = a @ a
    got = (a.float().cuda() @ a.float().cuda()).double()
    assert _rel_err(got, ref) < FP32_RTOL
    got[0, 0] += 1e-2 * ref.abs().max().item()
    assert _rel_err(got, ref) > FP32_RTOL


def test_bench_quick_figures_are_physical() -> None:
    from cudalab.env.bench import bench_gpu, quick_config

    result = bench_gpu(quick_config())
    figs = {f["name"]: f for f in result["figures"]}
    assert {"matmul fp32", "matmul tf32", "matmul fp16", "device copy", "host->device pinned"} <= set(figs)
    for f in figs.values():
        assert f["value"] > 0
        if f["percent"] is not None:
            assert f["percent"] < 115, f  # never above the datasheet by more than clock/measurement slack
    assert figs["matmul fp16"]["value"] > figs["matmul fp32"]["value"]
    assert figs["host->device pinned"]["value"] > 0.5 * figs["host->device pageable"]["value"]


def test_fingerprint_records_the_gpu_and_loaded_libraries() -> None:
    import torch

    from cudalab.env.fingerprint import fingerprint

    fp = fingerprint(packages=False)
    assert fp["torch"]["cuda_available"] is True
    assert fp["torch"]["cudnn"] == torch.backends.cudnn.version()
    assert fp["driver"]["version"] and fp["gpus"] and fp["gpus"][0]["name"] == torch.cuda.get_device_name(0)
