"""``cudalab train protein`` through the engine on a few hundred real sequences: per-interval
perplexity and tokens/s, held-out loss against the unigram baseline, a resumed run equal to an
uninterrupted one, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab.cli import main
from cudalab.errors import ExitCode
from cudalab.protein.data import read_fasta

ARGS = ["--shape", "tiny", "--device", "cpu", "--no-progress", "--set", "data.tokens_per_batch=4096",
        "--set", "data.max_len=256", "--set", "data.val_sequences=64", "--set", "train.eval_every=5",
        "--set", "train.checkpoint_every=5", "--set", "train.warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def proteomes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 sequences of each real proteome, as FASTA files of their own."""
    out = tmp_path_factory.mktemp("proteomes")
    for f in sorted((shared_data / "protein").glob("*.fasta")):
        recs = read_fasta(f)[:300]
        (out / f.name).write_text("".join(f">{r.description}\n{r.sequence}\n" for r in recs))
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "seed-0" / "metrics.jsonl").read_text().splitlines()]


def test_training_logs_perplexity_and_throughput_and_resumes_to_the_same_numbers(
    proteomes: Path, tmp_path: Path
) -> None:
    whole = ["train", "protein", "--data", str(proteomes), "--runs", str(tmp_path), *ARGS]
    assert main([*whole, "--run-id", "whole", "--set", "train.max_steps=10"]) == ExitCode.OK
    records = _metrics(tmp_path / "protein" / "whole")
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/val_loss" in r]
    assert len(evals) == 2 and all(r["train/tokens_per_s"] > 0 for r in train)
    for r in train:
        assert r["train/perplexity"] == pytest.approx(2.718281828 ** r["train/loss"], rel=1e-6)
    assert 15.0 < evals[-1]["eval/unigram_perplexity"] < 21.0
    assert evals[-1]["eval/val_loss"] < evals[0]["eval/val_loss"]  # it learns
    # the same run as if killed after its step-5 checkpoint, run again: it resumes there and ends with
    # the same numbers (times and rates aside)
    run = tmp_path / "protein" / "whole"
    (run / "summary.json").unlink()
    (run / "seed-0" / "summary.json").unlink()
    (run / "seed-0" / "checkpoints" / "step-000000010.pt").unlink()
    assert main([*whole, "--run-id", "whole", "--set", "train.max_steps=10"]) == ExitCode.OK

    def timeless(rs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time_s", "train/tokens_per_s")} for r in rs]

    assert timeless(_metrics(run)) == timeless(records)


def test_bad_data_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one.fasta").write_text(">a\nMKV\n")
    cases = [
        (["--data", str(tmp_path / "none")], "no such folder"),
        (["--data", str(tmp_path)], "needs two or more FASTA files"),
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.fasta").write_text(">a\nMKV\n")
    (tmp_path / "sub" / "b.fasta").write_text(">b\nMK9V\n")
    cases += [
        (["--data", str(tmp_path / "sub"), "--validate", "c.fasta"], "not among the FASTA files"),
        (["--data", str(tmp_path / "sub")], "b.fasta: line 2: '9' is not an amino-acid code"),
    ]
    for extra, fault in cases:
        rc = main(["train", "protein", *extra, "--runs", str(tmp_path / "runs"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == ExitCode.USAGE and fault in err and "Traceback" not in err, err


def test_two_gloo_processes_under_torchrun(proteomes: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cudalab",
         "train", "protein", "--data", str(proteomes), "--runs", str(tmp_path), "--run-id", "ddp", *ARGS,
         "--set", "train.max_steps=5"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "protein" / "ddp"
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    records = _metrics(run)
    train = [r for r in records if "train/loss" in r]
    assert train and all(r["train/tokens_per_s"] > 0 for r in train)
    (last,) = [r for r in records if "eval/val_loss" in r]
    assert 1.0 < last["eval/val_perplexity"] < 30.0  # 20 letters are about equally likely at the start


def test_a_run_killed_with_sigkill_resumes_to_the_bit_identical_model(
    proteomes: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import torch

    from tests.killing import kill_when

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    base = [sys.executable, "-m", "cudalab", "train", "protein", "--data", str(proteomes), "--runs", str(tmp_path),
            *ARGS, "--set", "train.max_steps=10", "--set", "train.checkpoint_every=2"]  # fmt: skip
    whole = subprocess.run([*base, "--run-id", "whole"], env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    argv = [*base, "--run-id", "killed"]
    kill_when(argv, env, tmp_path / "protein" / "killed" / "seed-0" / "checkpoints" / "step-000000004.pt")
    assert not (tmp_path / "protein" / "killed" / "summary.json").exists()  # it died mid-run
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resumed" in again.stderr, again.stderr[-2000:]

    def last_model(run: str) -> dict[str, torch.Tensor]:
        path = tmp_path / "protein" / run / "seed-0" / "checkpoints" / "step-000000010.pt"
        return torch.load(path, map_location="cpu", weights_only=False)["model"]

    a, b = last_model("whole"), last_model("killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def timeless(run: str) -> list[dict]:
        drop = ("time_s", "train/tokens_per_s", "train/mfu")
        return [{k: v for k, v in r.items() if k not in drop} for r in _metrics(tmp_path / "protein" / run)]

    assert timeless("killed") == timeless("whole")
