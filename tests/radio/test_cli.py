"""``cudalab radio ...`` in-process: exit codes, outputs, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab.cli import main
from cudalab.errors import ExitCode


def test_info(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["radio", "info", str(shared_data / "radio" / "parkes_4bit.sf"), "--json"]) == ExitCode.OK
    info = json.loads(capsys.readouterr().out)
    assert info["nchans"] == 416 and info["format"] == "psrfits" and info["extra"]["pol_type"] == "AABBCRCI"


def test_simulate_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fil = tmp_path / "obs.fil"
    rc = main(
        [
            "radio",
            "simulate",
            str(fil),
            "--preset",
            "noise",
            "--bursts",
            "3",
            "--nchans",
            "64",
            "--duration",
            "3",
            "--dm-max",
            "300",
            "--snr-min",
            "15",
            "--seed",
            "5",
        ]
    )
    assert rc == ExitCode.OK
    truth = json.loads(fil.with_suffix(".truth.json").read_text())
    assert len(truth["pulses"]) == 3 and "wrote" in capsys.readouterr().out
    out = tmp_path / "search"
    rc = main(
        [
            "radio",
            "search",
            str(fil),
            "--out",
            str(out),
            "--dm-max",
            "400",
            "--device",
            "cpu",
            "--cutouts",
            "2",
            "--truth",
            str(fil.with_suffix(".truth.json")),
        ]
    )
    assert rc == ExitCode.OK
    printed = capsys.readouterr().out
    assert "report:" in printed and printed.count("burst DM") >= 3
    assert (out / "report.html").is_file() and len(list((out / "cands").glob("*.h5"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["radio", "search", "/nonexistent.fil", "--out", "x"], "/nonexistent.fil: no such file"),
        (
            ["radio", "search", "{data}/radio/empty.fits", "--out", "{tmp}/o"],
            "empty.fits: the SUBINT table has no rows",
        ),
        (
            [
                "radio",
                "search",
                "{data}/radio/small.fil",
                "--out",
                "{tmp}/o",
                "--dm-min",
                "5",
                "--dm-max",
                "1",
            ],
            "dm_min <= dm_max",
        ),
        (
            ["radio", "search", "{data}/radio/small.fil", "--out", "{tmp}/o", "--device", "tpu"],
            "'tpu' is not one of 'auto', 'cpu', 'cuda'",
        ),
        (
            ["radio", "search", "{data}/radio/small.fil", "--out", "{tmp}/o", "--kernel", "fdmt"],
            "kernel must be one of auto, torch, triton",
        ),
        (["radio", "simulate", "{tmp}/x.fil", "--preset", "bogus"], "--preset must be demo or noise"),
        (["radio", "info", "{data}/README.md"], "neither SIGPROC"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(data=shared_data, tmp=tmp_path) for a in args]
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("cudalab: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # no partial output


@pytest.mark.parametrize(
    ("option", "code", "message"),
    [
        (["--device", "cuda"], ExitCode.PROBLEM, "no usable CUDA GPU"),  # as `cudalab bench --device cuda`
        (["--kernel", "triton"], ExitCode.USAGE, "triton kernel cannot run here"),
    ],
)
def test_asking_for_the_gpu_without_one(
    option: list[str],
    code: ExitCode,
    message: str,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    argv = [
        "radio",
        "search",
        str(shared_data / "radio" / "small.fil"),
        "--out",
        str(tmp_path / "o"),
        *option,
    ]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_simulating_the_demo_with_other_channel_counts_keeps_its_rfi_in_the_band(tmp_path: Path) -> None:
    """It crashed with 64 channels: the demo's carrier sat at channels 100-103 whatever the count."""
    for nchans in (64, 16, 2048):
        fil = tmp_path / f"d{nchans}.fil"
        assert (
            main(["radio", "simulate", str(fil), "--nchans", str(nchans), "--duration", "2"]) == ExitCode.OK
        )
        truth = json.loads(fil.with_suffix(".truth.json").read_text())
        assert truth["header"]["nchans"] == nchans
        assert truth["header"]["fmin_mhz"] == pytest.approx(1500 - 300 + 300 / nchans, rel=1e-6)
        for r in truth["rfi"]:
            assert 0 <= r["channels"][0] < r["channels"][1] <= nchans, r
