"""The CLI in-process: exit codes, JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab import __version__
from cudalab.cli import main
from cudalab.env.probe import collect, gpu_evidence
from cudalab.errors import ExitCode
from tests.env.fixtures.build import HERE as FIXTURES


def _cpu_only() -> bool:
    return not gpu_evidence(collect(import_torch=False).probes)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"cudalab {__version__}"
    assert main([]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "doctor" in out and "bench" in out and "env" in out


def test_unknown_option_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--bogus"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("cudalab: error:") and "--bogus" in err and err.count("\n") == 1


def test_doctor_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    if not _cpu_only():
        pytest.skip("GPU machine: covered by the gpu tests")
    assert main(["doctor"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "CPU only" in out and "Traceback" not in out


def test_doctor_require_gpu_on_a_cpu_machine_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not _cpu_only():
        pytest.skip("GPU machine")
    assert main(["doctor", "--require-gpu"]) == ExitCode.PROBLEM
    assert "--require-gpu: no usable GPU (cpu-only)" in capsys.readouterr().out


def test_doctor_json_and_saved_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "sub" / "report.json"
    rc = main(["doctor", "--json", "--no-import-torch", "-o", str(out_file)])
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out_file.read_text())
    assert printed["facts"]["probes"].keys() == saved["facts"]["probes"].keys()
    assert printed["verdict"]["state"] in ("ready", "cpu-only", "unusable", "unchecked")
    assert rc == (ExitCode.PROBLEM if printed["verdict"]["state"] == "unusable" else ExitCode.OK)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["report.json"]  # no temp file left


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("h100_healthy", ExitCode.OK),
        ("shm_small", ExitCode.OK),
        ("driver_too_old", ExitCode.PROBLEM),
        ("cudnn_shadowed", ExitCode.PROBLEM),
        ("cpu_only_machine", ExitCode.OK),
    ],
)
def test_doctor_facts_exit_codes(fixture: str, code: ExitCode, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--facts", str(FIXTURES / f"{fixture}.json")]) == code
    # rich wraps the title to the terminal width wherever the path falls: compare without whitespace.
    flat = "".join(capsys.readouterr().out.split())
    assert "factsfrom" + "".join(str(FIXTURES / fixture).split()) in flat


def test_doctor_facts_require_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--require-gpu", "--facts", str(FIXTURES / "h100_healthy.json")]) == ExitCode.OK
    assert (
        main(["doctor", "--require-gpu", "--facts", str(FIXTURES / "cpu_only_machine.json")])
        == ExitCode.PROBLEM
    )


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        # the driver cannot run this image's CUDA: the banner names the image variant it can run
        ("driver_too_old", ["needs driver >= 580.65.06", "Fix:", "image: cudalab:"]),
        # the container was started without its GPUs
        ("container_no_gpus", ["without /dev/nvidia* device nodes", "docker run --gpus all"]),
    ],
)
def test_doctor_banner_frames_cause_and_fix(
    fixture: str, expected: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDALAB_IMAGE", "cudalab:9.9.9-torch2.14-cu130")
    main(["doctor", "--banner", "--facts", str(FIXTURES / f"{fixture}.json")])
    out = capsys.readouterr().out
    assert "cudalab doctor in cudalab:9.9.9-torch2.14-cu130" in out
    squeezed = "".join(out.replace("│", "").split())  # the panel wraps text wherever the width falls
    for text in expected:
        assert "".join(text.split()) in squeezed, text


def test_doctor_banner_is_one_line_when_ready(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--banner", "--facts", str(FIXTURES / "h100_healthy.json")]) == ExitCode.OK
    out = capsys.readouterr().out.strip()
    assert out.startswith("cudalab doctor: GPU ready") and "\n" not in out


def test_doctor_facts_json_names_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", "--facts", str(FIXTURES / "fabric_manager.json")]) == ExitCode.PROBLEM
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == {
        "state": "unusable",
        "gpus": 0,
        "cause": "fabric-manager",
        "headline": data["verdict"]["headline"],
    }
    assert data["findings"][0]["check"] == "platform"


@pytest.mark.parametrize("content", [None, "{broken", '{"probes": []}'])
def test_doctor_bad_facts_file(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "facts.json"
    if content is not None:
        path.write_text(content)
    assert main(["doctor", "--facts", str(path)]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith(f"cudalab: error: {path}:") and captured.err.count("\n") == 1
    assert captured.out == ""


def test_bench_quick_on_cpu_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cpu", "--json", "-o", str(out_file)]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(out_file.read_text())
    names = [f["name"] for f in data["figures"]]
    assert names == ["CPU matmul fp32", "CPU memory copy"]
    for f in data["figures"]:
        assert f["value"] > 0 and f["peak"] is None and f["percent"] is None  # no guessed CPU peak


def test_bench_table_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--device", "cpu"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "CPU matmul fp32" in out and "unknown" in out


def test_bench_bad_device_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--device", "tpu"]) == ExitCode.USAGE
    assert "tpu" in capsys.readouterr().err


def test_bench_cuda_without_gpu_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine")
    assert main(["bench", "--device", "cuda"]) == ExitCode.PROBLEM
    err = capsys.readouterr().err
    assert "no usable CUDA GPU" in err and "cudalab doctor" in err and err.count("\n") == 1


def test_env_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--no-packages"]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert {"torch", "driver", "gpus", "python", "git", "packages_sha256", "container", "command"} <= set(
        data
    )
    assert "packages" not in data
    out_file = tmp_path / "env.json"
    assert main(["env", "-o", str(out_file)]) == ExitCode.OK
    full = json.loads(out_file.read_text())
    assert full["packages_sha256"] == data["packages_sha256"]
    assert any(p.startswith("torch==") for p in full["packages"])


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "cudalab", "--version"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0 and r.stdout.startswith("cudalab ")


def test_starting_the_cli_imports_no_heavy_module() -> None:
    """Every `cudalab` start (the doctor's included) pays for what cli.py imports: no torch, no lab service."""
    import subprocess
    import sys

    heavy = [
        "torch",
        "cudalab.lab.prepare",
        "cudalab.lab.supervise",
        "cudalab.lab.process",
        "jupyter_server",
        "torch_geometric",
        "astropy",
    ]
    code = f"import sys, cudalab.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
