"""``cudalab train vision`` through the engine on real CIFAR-10 JPEGs: it learns, writes its pictures
and model, resumes bit-identically after SIGKILL, and refuses bad input in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cudalab.cli import main
from cudalab.errors import ExitCode
from tests.killing import kill_when

REPO = Path(__file__).resolve().parents[2]


def _metrics(seed: Path) -> list[dict]:
    return [json.loads(line) for line in (seed / "metrics.jsonl").read_text().splitlines()]


def test_the_fast_recipe_learns_and_leaves_its_pictures_model_and_curves(trained: Path) -> None:
    seed = trained / "seed-0"
    records = _metrics(seed)
    evals = [r["eval/val_acc"] for r in records if "eval/val_acc" in r]
    assert len(evals) == 8
    # 200 validation images, 10 classes: chance is 10 % (+-2.1 % for one std); 8 epochs on 500 images
    # reach about 30 %
    assert max(evals) > 0.2
    train = [r for r in records if "train/loss" in r]
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert all(r["train/images_per_s"] > 0 for r in train)  # images per second, logged
    card = json.loads((seed / "model.json").read_text())
    assert card["arch"] == "fastnet" and card["image_size"] == 32 and card["tta_flip"]
    assert len(card["classes"]) == 10 and card["val_acc"] == pytest.approx(max(evals), abs=1e-6)
    confusion = json.loads((seed / "confusion.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 200
    assert confusion["accuracy"] == pytest.approx(max(evals), abs=1e-6)  # the best checkpoint's
    for png in ("confusion.png", "misclassified.png"):
        assert (seed / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(seed / "tb"), size_guidance={"images": 0}).Reload()
    assert {"eval/confusion_matrix", "eval/misclassified"} <= set(events.Tags()["images"])
    assert {"train/loss", "train/lr", "train/images_per_s", "eval/val_acc"} <= set(events.Tags()["scalars"])
    state = torch.load(seed / "model.pt", weights_only=True)
    assert "backbone.whiten.weight" in state and state["mean"].shape == (1, 3, 1, 1)


def test_resnet18_from_files_by_workers_trains_a_step(tiny: Path, tmp_path: Path) -> None:
    """The other input path (DataLoader workers, v2 transforms) and the default network."""
    argv = ["train", "vision", "--data", str(tiny), "--runs", str(tmp_path), "--run-id", "r", "--device", "cpu",
            "--no-progress", "--image-size", "16", "--set", "data.decode=workers", "--set", "data.workers=2",
            "--set", "data.train_images=64", "--set", "data.val_images=40", "--set", "data.batch_size=32",
            "--set", "train.max_steps=2", "--set", "train.warmup_steps=0"]  # fmt: skip
    assert main(argv) == ExitCode.OK
    records = _metrics(tmp_path / "vision" / "r" / "seed-0")
    assert [r["step"] for r in records if "eval/val_acc" in r] == [2]
    assert json.loads((tmp_path / "vision" / "r" / "seed-0" / "model.json").read_text())["arch"] == "resnet18"


def test_a_run_killed_with_sigkill_resumes_to_the_bit_identical_model(tiny: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # ResNet-18 (BatchNorm statistics, SGD momentum, the crops' RNG) at 16 px on 128 images: 12 steps
    base = [sys.executable, "-m", "cudalab", "train", "vision", "--data", str(tiny), "--runs", str(tmp_path),
            "--device", "cpu", "--no-progress", "--image-size", "16", "--epochs", "6",
            "--set", "data.train_images=128", "--set", "data.val_images=60", "--set", "data.batch_size=64",
            "--set", "train.warmup_steps=2", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1"]  # fmt: skip
    whole = subprocess.run([*base, "--run-id", "whole"], env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    argv = [*base, "--run-id", "killed"]
    kill_when(argv, env, tmp_path / "vision" / "killed" / "seed-0" / "checkpoints" / "step-000000006.pt")
    assert not (tmp_path / "vision" / "killed" / "seed-0" / "model.pt").exists()  # it died mid-run
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed" in again.stderr
    a = torch.load(tmp_path / "vision" / "whole" / "seed-0" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "vision" / "killed" / "seed-0" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def timeless(seed: Path) -> list[dict]:
        drop = ("time_s", "train/images_per_s")
        return [{k: v for k, v in r.items() if k not in drop} for r in _metrics(seed)]

    assert timeless(tmp_path / "vision" / "killed" / "seed-0") == timeless(
        tmp_path / "vision" / "whole" / "seed-0"
    )


def test_bad_input_is_one_line_and_exit_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.pt").write_bytes(b"junk")
    cases = [
        (["--data", str(tmp_path / "none")], "no such folder"),
        (["--data", str(tiny / "train" / "cat")], "two or more classes"),
        (["--data", str(tiny), "--weights", str(tmp_path / "missing.pt")], "--weights"),
        (
            ["--data", str(tiny), "--weights", str(tmp_path / "junk.pt")],
            "junk.pt: not a readable PyTorch weights file",
        ),
        (["--data", str(tiny), "--set", "data.batch_size=0"], "data.batch_size"),
    ]
    for extra, fault in cases:
        rc = main(["train", "vision", *extra, "--runs", str(tmp_path / "runs"), "--device", "cpu", "--no-progress",
                   "--set", "data.train_images=40", "--set", "train.max_steps=1"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == ExitCode.USAGE and fault in err and "Traceback" not in err, (extra, err[-1500:])
