"""The environment fingerprint: packages, git state, recorded variables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cudalab.env.fingerprint import fingerprint, git_state, installed_packages, packages_hash


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True, capture_output=True
    )


def test_git_state_tracks_commit_and_dirtiness(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None
    _git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("lr = 1e-3\n")
    _git(tmp_path, "add", "train.py")
    _git(tmp_path, "commit", "-qm", "x")
    clean = git_state(tmp_path)
    assert (
        clean is not None
        and len(clean["commit"]) == 40
        and clean["dirty"] is False
        and clean["untracked"] == 0
    )
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_state(tmp_path)["untracked"] == 1 and git_state(tmp_path)["dirty"] is False  # type: ignore[index]
    (tmp_path / "train.py").write_text("lr = 3e-4\n")
    assert git_state(tmp_path)["dirty"] is True  # type: ignore[index]


def test_package_list_and_hash() -> None:
    pkgs = installed_packages()
    assert pkgs == sorted(pkgs, key=lambda p: p.split("==")[0].lower().replace("_", "-"))
    assert any(p.lower().startswith("torch==") for p in pkgs)
    assert packages_hash(pkgs) == packages_hash(list(pkgs))
    assert packages_hash(pkgs) != packages_hash([*pkgs[:-1], pkgs[-1] + ".post1"])


def test_fingerprint_records_only_relevant_environment(tmp_path: Path) -> None:
    fp = fingerprint(
        tmp_path,
        packages=False,
        argv=["train", "--lr", "3e-4"],
        environ={"CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO", "HOME": "/root", "AWS_SECRET": "x"},
    )
    assert fp["env"] == {"CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO"}
    assert fp["command"] == ["train", "--lr", "3e-4"]
    assert fp["git"] is None
    import torch

    assert fp["torch"]["version"] == torch.__version__
    assert fp["torch"]["cudnn"] == (torch.backends.cudnn.version() if torch.version.cuda else None)


@pytest.mark.parametrize("packages", [True, False])
def test_fingerprint_package_switch(packages: bool, tmp_path: Path) -> None:
    fp = fingerprint(tmp_path, packages=packages)
    assert ("packages" in fp) is packages and len(fp["packages_sha256"]) == 64


def test_pinned_drift_names_what_a_user_installed_over_the_pinned_stack(tmp_path: Path) -> None:
    from cudalab.env.fingerprint import pinned_drift

    pins = tmp_path / "constraints.txt"
    pins.write_text("# the image's pins\nnumpy==2.3.1\nrich==14.0.0\ntorch==2.11.0\n")
    installed = [
        "cudalab==0.1.0",
        "numpy==2.4.0",
        "nvidia-cublas==13.0.0.19",
        "requests==2.34.2",
        "torch==2.11.0",
    ]
    d = pinned_drift(installed, pins)
    assert d == {"file": str(pins), "changed": ["numpy 2.3.1 -> 2.4.0"], "added": ["requests==2.34.2"],
                 "removed": ["rich==14.0.0"]}  # fmt: skip
    assert pinned_drift(installed, None) is None
    assert pinned_drift(installed, tmp_path / "none.txt")["error"]  # type: ignore[index]
    fp = fingerprint(environ={"CUDALAB_PINNED": str(pins)}, packages=False)
    assert fp["pinned"]["file"] == str(pins) and "changed" in fp["pinned"]
