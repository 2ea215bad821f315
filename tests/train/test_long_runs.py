"""Long-run safety: a run is not resumed silently in a changed environment, and a SIGTERM (preemption)
leaves a checkpoint the same command resumes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab.cli import main
from cudalab.env.fingerprint import drift, fingerprint
from cudalab.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_drift_names_what_changed() -> None:
    env = fingerprint()
    assert drift(env, env) == []
    other = json.loads(json.dumps(env))
    other["torch"]["version"] = "2.0.0"
    other["torch"]["nccl"] = "2.18.1"
    other["packages"] = [
        p if not p.lower().startswith("numpy==") else "numpy==1.0.0" for p in other["packages"]
    ]
    other["packages_sha256"] = "x"
    changes = drift(other, env)
    assert f"torch 2.0.0 -> {env['torch']['version']}" in changes
    assert f"NCCL 2.18.1 -> {env['torch']['nccl']}" in changes
    assert any(c.startswith("packages: numpy 1.0.0 -> ") for c in changes)


def test_a_resume_in_a_changed_environment_stops_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "custom", str(REPO / "examples" / "spirals.py"), "--epochs", "2", "--runs", str(tmp_path),
            "--run-id", "r", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == ExitCode.OK
    run = tmp_path / "custom" / "r"
    # as if it had crashed, and had started under another torch
    for summary in (run / "summary.json", run / "seed-0" / "summary.json"):
        summary.unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["environment"]["torch"]["version"] = "2.0.0"
    (run / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(argv) == ExitCode.USAGE
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the config the command prints
    assert last_line.startswith("cudalab: error: ") and "Traceback" not in last_line
    assert (
        "environment changed" in last_line
        and "torch 2.0.0 -> " in last_line
        and "--allow-env-change" in last_line
    )
    assert not (run / "summary.json").exists()
    assert main([*argv, "--allow-env-change"]) == ExitCode.OK
    last = json.loads((run / "manifest.json").read_text())["resumptions"][-1]
    assert any(c.startswith("torch 2.0.0 -> ") for c in last["environment_changes"])


def test_sigterm_writes_a_checkpoint_and_the_same_command_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "cudalab", "train", "custom", str(REPO / "examples" / "spirals.py"), "--epochs",
            "30", "--runs", str(tmp_path), "--run-id", "p", "--device", "cpu", "--no-progress",
            "--set", "train.log_every=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "custom" / "p" / "seed-0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM: checkpoint of step" in err
    stopped = int(err.split("SIGTERM: checkpoint of step ")[1].split()[0])
    ckpts = sorted((tmp_path / "custom" / "p" / "seed-0" / "checkpoints").glob("step-*.pt"))
    assert ckpts and int(ckpts[-1].stem.split("-")[1]) == stopped
    manifest = json.loads((tmp_path / "custom" / "p" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "preempted" in manifest["error"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)  # the same command
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"step-{stopped:09d}.pt" in done.stderr  # resumed from it
    assert (tmp_path / "custom" / "p" / "summary.json").is_file()


def test_a_hung_rank_becomes_a_one_line_error_not_a_silent_stall(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDALAB_COLLECTIVE_TIMEOUT_S": "5"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cudalab",
         "train", "custom", str(Path(__file__).with_name("hang_task.py")), "--epochs", "5", "--runs", str(tmp_path),
         "--run-id", "h", "--device", "cpu", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and time.monotonic() - t0 < 200
    assert "cudalab: error: rank 0: a collective waited over 5 s for the other ranks" in proc.stderr, (
        proc.stderr[-3000:]
    )
    manifest = json.loads((tmp_path / "custom" / "h" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "rank 0: a collective" in manifest["error"]


def test_only_a_backends_timeout_is_called_a_hung_collective() -> None:
    from cudalab.train.distributed import DistInfo, as_collective_error

    two = DistInfo(rank=1, world_size=2)
    gloo = RuntimeError(
        "[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 5000ms for recv operation to complete"
    )
    assert "rank 1: a collective waited over" in str(as_collective_error(gloo, two))
    assert as_collective_error(RuntimeError("DataLoader worker timed out after 60 seconds"), two) is None
    assert as_collective_error(gloo, DistInfo()) is None  # one process has no collectives
    peer = RuntimeError("Connection closed by peer [127.0.0.1]:29500")
    assert "lost its connection to another rank" in str(as_collective_error(peer, two))
