"""A user's own task through the engine: the example in examples/, by the CLI, by Python, killed and
resumed, under torchrun, in a batch log; and the mistakes a user makes naming it."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cudalab.cli import main
from cudalab.runs.rundir import RunDir, read_metrics
from cudalab.train import fit
from cudalab.train.checkpoint import CheckpointDir
from examples.spirals import SpiralConfig, make_task

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "spirals.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


def _cli(runs: Path, run_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cudalab", "train", "custom", str(EXAMPLE),
        "--runs", str(runs), "--run-id", run_id, "--deterministic", "--no-progress",
        "--epochs", "12", "--set", "train.checkpoint_every=10", "--set", "train.tensorboard=false",
        *extra,
    ]  # fmt: skip


def _metrics(run: Path) -> list[dict[str, object]]:
    """Every record of the seed's metrics log, wall-clock times left out."""
    return [
        {k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(run / "seed-0" / "metrics.jsonl")
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    loaded, skipped = CheckpointDir(run / "seed-0" / "checkpoints").newest_valid()
    assert loaded is not None and not skipped
    return loaded.state["model"]


def test_the_example_trains_through_the_cli_and_learns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "custom",
        f"{EXAMPLE}:make_task",
        "--runs",
        str(tmp_path),
        "--run-id",
        "cli",
        "--no-progress",
    ]
    assert main([*args, "--set", "train.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "val_acc" in out and "run:" in out
    run = RunDir(tmp_path / "custom" / "cli")
    summary = run.summary()
    assert summary is not None and summary["val_acc_mean"] > 0.95  # chance: 1/3
    manifest = run.manifest()
    assert manifest is not None and manifest["kind"] == "custom" and manifest["status"] == "finished"
    assert manifest["subject"].endswith("spirals.py:make_task")
    assert summary["headline"]["metric"] == "val_acc"
    # --print-config shows every key --set can change, as TOML that --config reads back
    assert main(["train", "custom", str(EXAMPLE), "--print-config", "--set", "hidden=32"]) == 0
    printed = capsys.readouterr().out
    assert "hidden = 32" in printed and "[train]" in printed
    (tmp_path / "c.toml").write_text(printed)
    assert (
        main(["train", "custom", str(EXAMPLE), "--config", str(tmp_path / "c.toml"), "--print-config"]) == 0
    )
    assert capsys.readouterr().out == printed


def test_the_python_entry_trains_and_a_second_call_starts_a_new_run(tmp_path: Path) -> None:
    cfg = SpiralConfig(
        points=300, train=replace(SpiralConfig().train, max_epochs=3, progress=False, tensorboard=False)
    )
    quiet = Console(quiet=True)
    first = fit(make_task, cfg, runs=tmp_path, console=quiet)
    assert first.run.finished and first.summary["n_seeds"] == 1
    assert first.last is not None and isinstance(first.last.model, torch.nn.Module)
    again = fit(make_task, cfg, runs=tmp_path, console=quiet)  # a finished run is never reopened
    assert again.run.path != first.run.path
    # a bare TrainConfig takes the factory's config defaults for the rest
    bare = fit(make_task, replace(cfg.train, max_epochs=1), runs=tmp_path, run_id="bare", console=quiet)
    assert bare.summary["seeds"][0]["epochs"] == 1
    with pytest.raises(ValueError, match="train: TrainConfig"):
        fit(make_task, {"hidden": 3}, runs=tmp_path, console=quiet)


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    ref = subprocess.run(_cli(tmp_path, "ref"), env=ENV, capture_output=True, text=True, check=False)
    assert ref.returncode == 0, ref.stderr[-2000:]
    rnd = random.Random()
    ck = CheckpointDir(tmp_path / "custom" / "killed" / "seed-0" / "checkpoints")
    kills = 0
    for _ in range(2):
        proc = subprocess.Popen(
            _cli(tmp_path, "killed"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        before = max((s for s, _ in ck.steps()), default=0)
        deadline = time.monotonic() + 120  # until this process has checkpointed, then a random moment
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and max((s for s, _ in ck.steps()), default=0) <= before
        ):
            time.sleep(0.01)
        time.sleep(rnd.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    resumed = subprocess.run(_cli(tmp_path, "killed"), env=ENV, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "custom" / "ref"), _weights(tmp_path / "custom" / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the metrics log equals the uninterrupted run's, record for record: the same steps once each,
    # the same logged losses (the loss accumulated since the last log line travels in the checkpoint)
    assert _metrics(tmp_path / "custom" / "killed") == _metrics(tmp_path / "custom" / "ref")


def test_two_gloo_processes_under_torchrun(tmp_path: Path) -> None:
    """torchrun with 2 CPU ranks: the global batch is split, so it equals one process (no dropout)."""
    flags = [
        "--device",
        "cpu",
        "--set",
        "dropout=0",
        "--epochs",
        "2",
        "--no-progress",
        "--set",
        "train.tensorboard=false",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "cudalab", "train", "custom", str(EXAMPLE), "--runs", str(tmp_path), "--run-id", "one", *flags],
        env=ENV, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "cudalab", "train", "custom", str(EXAMPLE), "--runs", str(tmp_path), "--run-id", "two", *flags,
        ],
        env=ENV, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    manifest = RunDir(tmp_path / "custom" / "two" / "seed-0").manifest()
    assert manifest is not None and manifest["world_size"] == 2
    a, b = _weights(tmp_path / "custom" / "one"), _weights(tmp_path / "custom" / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_a_batch_job_logs_a_plain_line_per_interval(tmp_path: Path) -> None:
    """stdout and stderr to a file, as under Slurm: one line per log interval, never a bar."""
    log = tmp_path / "job.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "cudalab", "train", "custom", str(EXAMPLE), "--runs", str(tmp_path),
             "--epochs", "2", "--set", "train.log_every=25", "--set", "train.tensorboard=false"],
            env=ENV, stdout=fh, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    assert proc.returncode == 0
    text = log.read_text()
    steps = re.findall(
        r"^step (\d+)/(\d+) epoch \d+ loss [0-9.e+-]+ lr [0-9.e+-]+ [0-9.]+ steps/s, [0-9,]+ examples/s",
        text,
        re.M,
    )
    total = int(steps[-1][1])
    assert [int(s) for s, _ in steps] == [*range(25, total + 1, 25), *([total] if total % 25 else [])]
    assert re.search(r"^eval step \d+: val_acc [0-9.]+ val_loss [0-9.]+$", text, re.M)
    assert "\x1b[" not in text and "\r" not in text  # no terminal codes, no redrawn bar


def test_mistakes_naming_the_task_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_syntax = tmp_path / "broken.py"
    bad_syntax.write_text("def make_task(:\n")
    untyped = tmp_path / "untyped.py"
    untyped.write_text("def make_task(cfg: int):\n    return None\n")
    not_a_task = tmp_path / "notask.py"
    not_a_task.write_text("def make_task():\n    return object()\n")
    cases = [
        ([str(tmp_path / "nope.py")], "nope.py: no such file"),
        ([f"{EXAMPLE}:missing"], "defines no missing"),
        ([str(bad_syntax)], "broken.py:1:"),
        ([str(untyped)], "must be a dataclass"),
        ([str(not_a_task), "--runs", str(tmp_path / "r")], "lacks setup"),
        ([str(EXAMPLE), "--set", "hidden=wide"], "hidden must be an integer"),
        ([str(EXAMPLE), "--set", "train.lr=inf"], "train.lr must be a finite number"),
        ([str(EXAMPLE), "--run-id", "../escape", "--runs", str(tmp_path / "r")], "a run id is a name"),
    ]
    for args, message in cases:
        assert main(["train", "custom", *args]) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err.strip().splitlines()[-1], (args, err)
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "escape").exists()
