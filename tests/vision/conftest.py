"""The tiny CIFAR-10 JPEG subset, unpacked once, and one short fast-recipe run trained on it."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from cudalab.cli import main
from cudalab.errors import ExitCode

# the fast recipe on 500 training images: 2 steps of 250 per epoch, 8 epochs, evaluated every epoch
FAST = ["--recipe", "fast", "--device", "cpu", "--no-progress", "--epochs", "8", "--set", "data.batch_size=250",
        "--set", "data.train_images=500", "--set", "train.warmup_steps=4"]  # fmt: skip


@pytest.fixture(scope="session")
def tiny(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cifar10_tiny/{train,test}/<class>/*.jpg``: 100 + 20 real images per class."""
    out = tmp_path_factory.mktemp("cifar10-tiny")
    with tarfile.open(shared_data / "vision" / "cifar10-tiny.tgz") as tar:
        tar.extractall(out, filter="data")
    return out / "cifar10_tiny"


@pytest.fixture(scope="session")
def trained(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished fast-recipe run (its folder) on the tiny set."""
    runs = tmp_path_factory.mktemp("vision-runs")
    assert (
        main(["train", "vision", "--data", str(tiny), "--runs", str(runs), "--run-id", "fast", *FAST])
        == ExitCode.OK
    )
    return runs / "vision" / "fast"
