"""The real probes, run on this machine (CI has no GPU; the device machine has one)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from cudalab.env import probe as pr
from cudalab.env.facts import Facts

STACK_ORDER = [
    "os",
    "container",
    "pci",
    "driver",
    "device_nodes",
    "libcuda",
    "nvml",
    "visible_devices",
    "shm",
    "compilers",
    "nvidia_wheels",
    "ld_library_path",
    "torch",
]


def _gpu_here() -> bool:
    return pr.gpu_evidence(pr.collect(import_torch=False).probes)


def test_collect_runs_every_probe_in_stack_order_and_says_how() -> None:
    facts = pr.collect(import_torch=False)
    assert list(facts.probes) == STACK_ORDER
    for p in facts:
        assert p.source, p.name
        assert p.elapsed_s >= 0
        assert p.ok or p.error, f"{p.name} failed without saying why"
    assert facts.value("os", "kernel") == platform.release()
    assert facts.meta["collect_s"] < 5


def test_facts_survive_json_round_trip() -> None:
    facts = pr.collect(import_torch=False)
    again = Facts.from_dict(facts.to_dict())
    assert again.probes == facts.probes


def test_cpu_machine_is_diagnosed_without_importing_torch() -> None:
    if _gpu_here():
        pytest.skip("this machine shows signs of an NVIDIA GPU")
    facts = pr.collect()
    assert facts.meta["torch_imported"] is False
    torch_p = facts.probe("torch")
    assert torch_p is not None and torch_p.get("imported") is False
    import torch

    assert torch_p.get("version") == torch.__version__
    assert torch_p.get("cuda") == torch.version.cuda
    assert not facts.probe("driver").ok  # type: ignore[union-attr]
    assert facts.error("libcuda")


def test_torch_import_reports_what_torch_really_loaded() -> None:
    import torch

    p = pr.probe_torch_import()
    assert p.ok and p.get("imported") is True
    assert p.get("version") == torch.__version__
    assert p.get("cuda_available") == torch.cuda.is_available()
    if torch.version.cuda is not None:
        assert p.get("arch_list") == torch.cuda.get_arch_list()
        assert p.get("cudnn") == torch.backends.cudnn.version()
        loaded = p.get("loaded_libs")
        assert any("libcudnn" in path for path in loaded["cudnn"])  # the file actually mapped in
        if not torch.cuda.is_available():
            assert p.get("cuda_error")  # torch's own reason is kept


def test_visible_devices_come_from_the_given_environment() -> None:
    p = pr.probe_visible_devices({"CUDA_VISIBLE_DEVICES": "1,0", "NVIDIA_VISIBLE_DEVICES": "all"})
    assert p.value["CUDA_VISIBLE_DEVICES"] == "1,0" and p.value["CUDA_DEVICE_ORDER"] is None


def test_ld_library_path_lists_cuda_libraries_per_entry(tmp_path: Path) -> None:
    lib = tmp_path / "cuda-12.2" / "lib64"
    lib.mkdir(parents=True)
    for name in ("libcudnn.so.9", "libnccl.so.2", "libcudart.so.12", "libfoo.so"):
        (lib / name).touch()
    p = pr.probe_ld_library_path({"LD_LIBRARY_PATH": f"{lib}::/does/not/exist"})
    first, missing = p.value["entries"]
    assert first["cuda_libs"] == {
        "cudart": ["libcudart.so.12"],
        "cudnn": ["libcudnn.so.9"],
        "nccl": ["libnccl.so.2"],
    }
    assert missing == {"dir": "/does/not/exist", "exists": False, "cuda_libs": {}}


@pytest.mark.parametrize(
    ("name", "version", "major"),
    [
        ("nvidia-cudnn-cu12", "9.1.0.70", 12),
        ("nvidia-nccl-cu13", "2.27.7", 13),
        ("nvidia-cublas", "13.1.1.3", 13),
        ("nvidia-cufft", "12.0.0.61", None),
        ("nvidia-cuda-runtime-cu11", "11.8.89", 11),
    ],
)
def test_wheel_cuda_major(name: str, version: str, major: int | None) -> None:
    assert pr.wheel_cuda_major(name, version) == major


def test_installed_nvidia_wheels_agree_with_torch_build() -> None:
    import torch

    p = pr.probe_nvidia_wheels()
    if torch.version.cuda is None or not p.value["wheels"]:
        pytest.skip("no CUDA wheels installed")
    assert p.value["cuda_majors"] == [int(torch.version.cuda.split(".")[0])]


def test_a_failing_probe_becomes_a_fact_not_an_exception() -> None:
    def boom() -> tuple[bool, object, str | None]:
        raise PermissionError("denied")

    p = pr._timed("x", "test", boom)
    assert not p.ok and p.error == "PermissionError: denied"


def test_the_compiler_probe_honours_cc_and_finds_none_on_an_empty_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # shutil.which searches the process's PATH
    empty = pr.probe_compilers({})
    assert empty.ok and empty.value["cc"] is None and empty.value["cxx"] is None
    cc = tmp_path / "mycc"
    cc.write_text("#!/bin/sh\n")
    cc.chmod(0o755)
    assert pr.probe_compilers({"CC": "mycc"}).value["cc"] == str(cc)
    assert pr.probe_compilers({"CC": str(cc)}).value["cc"] == str(cc)
