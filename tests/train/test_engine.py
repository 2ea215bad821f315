"""The engine on a small CPU task: config layer, data order, checkpoints, loop, determinism, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cudalab.runs.config import from_dict, load_toml, parse_overrides, save_toml, to_dict, update
from cudalab.runs.rundir import RunDir, read_metrics
from cudalab.train.checkpoint import CheckpointDir, load, step_name
from cudalab.train.config import TrainConfig
from cudalab.train.data import EpochSampler
from cudalab.train.optim import lr_lambda
from cudalab.train.precision import resolve_precision
from cudalab.train.trainer import train_run
from tests.train.toy import Regression

QUIET = Console(quiet=True)
BASE = TrainConfig(
    max_epochs=3,
    lr=0.01,
    checkpoint_every=2,
    keep_last=2,
    progress=False,
    tensorboard=False,
    log_every=2,
    deterministic=True,
)


def train(
    tmp: Path,
    cfg: TrainConfig = BASE,
    task: Regression | None = None,
    name: str = "run",
    resume: str = "auto",
) -> dict[str, torch.Tensor]:
    result = train_run(
        task or Regression(),
        cfg,
        RunDir(tmp / "toy" / name),
        resume=resume,  # type: ignore[arg-type]
        environment={"test": True},
        console=QUIET,
    )
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# -- config ------------------------------------------------------------------------------------------


def test_overrides_are_typed_and_validated() -> None:
    cfg = update(BASE, parse_overrides(["lr=0.5", "deterministic=false", "precision=bf16", "max_steps=7"]))
    assert (cfg.lr, cfg.deterministic, cfg.precision, cfg.max_steps) == (0.5, False, "bf16", 7)
    with pytest.raises(ValueError, match="unknown config key 'lrr'"):
        update(BASE, {"lrr": 1})
    with pytest.raises(ValueError, match="precision must be one of"):
        update(BASE, {"precision": "fp8"})
    with pytest.raises(ValueError, match="max_epochs must be an integer"):
        update(BASE, {"max_epochs": "2.5"})
    with pytest.raises(ValueError, match="must be >= 1"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_overrides(["lr"])


def test_config_round_trips_through_toml(tmp_path: Path) -> None:
    cfg = replace(BASE, lr=3e-4, schedule="cosine", early_stop_metric="val_mse")
    save_toml(cfg, tmp_path / "c.toml", header="a header")
    assert from_dict(TrainConfig, load_toml(tmp_path / "c.toml")) == cfg
    assert to_dict(cfg)["schedule"] == "cosine"
    (tmp_path / "bad.toml").write_text("lr = ")
    with pytest.raises(ValueError, match=r"bad\.toml: not valid TOML"):
        load_toml(tmp_path / "bad.toml")


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = lr_lambda(replace(BASE, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1), total_steps=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(14) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)


def test_precision_on_cpu_is_fp32_unless_asked() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).autocast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


# -- data order --------------------------------------------------------------------------------------


def test_ranks_and_micro_batches_partition_each_global_batch() -> None:
    single = list(EpochSampler(100, 20, seed=3).epoch(5))
    split = [
        list(EpochSampler(100, 20, rank=r, world_size=2, grad_accum=2, seed=3).epoch(5)) for r in range(2)
    ]
    assert len(single) == 5 and all(len(s) == 10 for s in split)
    for step, batch in enumerate(single):
        parts = [split[r][step * 2 + a] for a in range(2) for r in range(2)]
        assert torch.equal(torch.sort(torch.cat(parts)).values, torch.sort(batch).values)
    assert torch.equal(torch.sort(torch.cat(single)).values, torch.arange(100))
    assert not torch.equal(torch.cat(single), torch.cat(list(EpochSampler(100, 20, seed=3).epoch(6))))
    resumed = list(EpochSampler(100, 20, seed=3).epoch(5, start=3))
    assert all(torch.equal(a, b) for a, b in zip(resumed, single[3:], strict=True))


def test_sampler_pads_the_last_batch_by_wrapping() -> None:
    s = EpochSampler(10, 4, drop_last=False, shuffle=False)
    assert s.steps_per_epoch == 3
    assert torch.cat(list(s.epoch(0))).tolist() == [*range(10), 0, 1]
    with pytest.raises(ValueError, match="multiple of world size"):
        EpochSampler(10, 5, world_size=2)


# -- checkpoints ---------------------------------------------------------------------------------------


def test_checkpoints_keep_the_last_k_and_skip_torn_files(tmp_path: Path) -> None:
    ck = CheckpointDir(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        ck.save({"step": step, "epoch": 0, "batch": step, "model": {"w": torch.full((3,), float(step))}})
    assert [s for s, _ in ck.steps()] == [2, 3]
    # a newer file that is not a checkpoint (a copy cut short), and a writer's leftover temp file
    good = (tmp_path / step_name(3)).read_bytes()
    (tmp_path / step_name(4)).write_bytes(good[: len(good) // 2])
    (tmp_path / f".{step_name(5)}.abc.tmp").write_bytes(b"partial")
    loaded, skipped = ck.newest_valid()
    assert loaded is not None and loaded.step == 3
    assert len(skipped) == 1 and "step-000000004.pt: not a readable checkpoint" in skipped[0]
    assert [p.name for p in ck.sweep_temporaries()] == [f".{step_name(5)}.abc.tmp"]
    with pytest.raises(ValueError, match="not a cudalab checkpoint"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load(tmp_path / "other.pt")


# -- the loop --------------------------------------------------------------------------------------------


def test_run_directory_holds_config_manifest_metrics_checkpoints_summary(tmp_path: Path) -> None:
    cfg = replace(BASE, early_stop_metric="val_mse", early_stop_mode="min", tensorboard=True)
    train(tmp_path, cfg)
    run = RunDir(tmp_path / "toy" / "run")
    assert from_dict(TrainConfig, load_toml(run.path / "config.toml")) == cfg
    m = run.manifest()
    assert m is not None and m["status"] == "finished" and m["seed"] == 0 and m["ended_at"]
    assert m["precision"]["name"] == "fp32" and m["environment"] == {"test": True}
    records = read_metrics(run.metrics_path)
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]  # 3 epochs x 8 steps, logged every 2
    assert sum("eval/val_mse" in r for r in records) == 3  # once per epoch
    assert [s for s, _ in CheckpointDir(run.checkpoints).steps()] == [22, 24]
    assert (run.checkpoints / "best.pt").is_file()
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    summary = run.summary()
    assert summary is not None and summary["steps"] == 24 and summary["best"]["metric"] == "val_mse"
    # it learned: the error is well below that of predicting zero (the targets' mean square)
    assert summary["final"]["val_mse"] < 0.5 * Regression().y_val.square().mean().item()


def test_two_runs_with_one_seed_are_bitwise_identical(tmp_path: Path) -> None:
    a = train(tmp_path, name="a")
    b = train(tmp_path, name="b")
    assert_bitwise_equal(a, b)
    c = train(tmp_path, replace(BASE, seed=1), name="c")
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_a_crash_and_resume_ends_bitwise_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(tmp_path, name="ref")
    with pytest.raises(KeyboardInterrupt):  # dies in step 11, after the step-10 checkpoint
        train(tmp_path, task=Regression(crash_at_step=11), name="crashed")
    run = RunDir(tmp_path / "toy" / "crashed")
    assert not run.finished and [s for s, _ in CheckpointDir(run.checkpoints).steps()] == [8, 10]
    resumed = train(tmp_path, name="crashed")
    assert_bitwise_equal(reference, resumed)
    m = run.manifest()
    assert m is not None and len(m["resumptions"]) == 1
    train_steps = [r["step"] for r in read_metrics(run.metrics_path) if "train/loss" in r]
    assert train_steps == sorted(set(train_steps))  # nothing logged twice across the crash


def test_resume_never_refuses_a_run_with_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, task=Regression(crash_at_step=5), name="x")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(tmp_path, name="x", resume="never")


def test_gradient_accumulation_matches_the_full_batch(tmp_path: Path) -> None:
    cfg = replace(BASE, deterministic=False)
    full = train(tmp_path, cfg, Regression(dropout=0.0), name="full")
    accum = train(tmp_path, replace(cfg, grad_accum=4), Regression(dropout=0.0, grad_accum=4), name="acc")
    for k in full:
        torch.testing.assert_close(full[k], accum[k], rtol=1e-5, atol=1e-6)


def test_early_stopping_stops_and_keeps_the_best(tmp_path: Path) -> None:
    # SGD at lr 0.2 overshoots: epoch 1 ends finite, then the loss diverges (NaN never counts as
    # better), so the best stays at step 8 and a patience of 3 evaluations ends the run after epoch 4
    cfg = replace(
        BASE,
        max_epochs=50,
        lr=0.2,
        optimizer="sgd",
        early_stop_metric="val_mse",
        early_stop_mode="min",
        patience=3,
    )
    train(tmp_path, cfg, Regression(dropout=0.0))
    summary = RunDir(tmp_path / "toy" / "run").summary()
    assert summary is not None and summary["stopped_early"]
    assert (summary["epochs"], summary["best"]["step"]) == (4, 8)
    best = load(tmp_path / "toy" / "run" / "checkpoints" / "best.pt")
    assert best["step"] == summary["best"]["step"]


# -- torchrun ------------------------------------------------------------------------------------------


def test_two_gloo_processes_under_torchrun_equal_one_process(tmp_path: Path) -> None:
    cfg = replace(BASE, deterministic=False)
    single = train(tmp_path, cfg, Regression(dropout=0.0), name="single")
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(Path(__file__).with_name("ddp_worker.py")),
            str(tmp_path / "runs"),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out)
    for k in single:
        torch.testing.assert_close(single[k], ddp[k], rtol=1e-5, atol=1e-6)
    manifest = json.loads((tmp_path / "runs" / "toy" / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2


def test_a_tie_in_the_early_stop_metric_goes_to_the_tiebreak() -> None:
    from cudalab.train.state import better as _better

    cfg = replace(BASE, early_stop_metric="acc", tiebreak_metric="loss", tiebreak_mode="min")
    best = {"acc": 0.8, "loss": 0.5}
    assert _better({"acc": 0.8, "loss": 0.4}, best, cfg)
    assert not _better({"acc": 0.8, "loss": 0.6}, best, cfg)
    assert _better({"acc": 0.81, "loss": 9.0}, best, cfg)
    assert not _better({"acc": 0.8, "loss": 0.4}, best, replace(cfg, tiebreak_metric=""))
    assert _better({"acc": 0.1, "loss": 1.0}, {}, cfg) and not _better(
        {"acc": float("nan"), "loss": 1.0}, {}, cfg
    )


# -- on the GPU (device machine) -------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_precision_is_bf16_from_ampere_and_training_matches_the_cpu(tmp_path: Path) -> None:
    cap = torch.cuda.get_device_capability()
    plan = resolve_precision("auto", torch.device("cuda", 0))
    assert plan.name == ("bf16" if cap >= (8, 0) else "fp16") and plan.grad_scaler == (cap < (8, 0))
    cpu = train(tmp_path, replace(BASE, device="cpu"), Regression(dropout=0.0), name="cpu")
    gpu = train(tmp_path, replace(BASE, device="cuda", precision="fp32"), Regression(dropout=0.0), name="gpu")
    for k in cpu:  # fp32 on both: equal up to reduction order (TF32 is off by default for matmul)
        torch.testing.assert_close(cpu[k], gpu[k].cpu(), rtol=1e-4, atol=1e-5)
    amp = train(tmp_path, replace(BASE, device="cuda", precision="auto"), Regression(dropout=0.0), name="amp")
    for k in cpu:  # autocast: close to fp32 at bf16/fp16 precision
        torch.testing.assert_close(cpu[k], amp[k].float().cpu(), rtol=0.05, atol=0.02)


def test_seed_worker_makes_dataloader_workers_reproducible() -> None:
    """Two loaders built alike draw the same NumPy numbers in their workers; another seed differs."""
    import numpy as np
    from torch.utils.data import DataLoader, Dataset

    from cudalab.train.rng import generator, seed_worker

    class Draws(Dataset[float]):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> float:
            return float(np.random.random())

    def draws(seed: int) -> list[float]:
        loader = DataLoader(
            Draws(), batch_size=2, num_workers=2, worker_init_fn=seed_worker, generator=generator(seed)
        )
        return torch.cat(list(loader)).tolist()

    a, b = draws(1), draws(1)
    assert a == b and len(set(a)) == 8
    assert draws(2) != a


# -- the run's identity, and resume that cannot lie ------------------------------------------------------


def test_a_named_run_is_refused_to_another_config_but_not_to_a_cosmetic_change(tmp_path: Path) -> None:
    from cudalab.runs.rundir import choose_run

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, task=Regression(crash_at_step=5), name="x")
    run = RunDir(tmp_path / "toy" / "x")
    # the same run id with another learning rate: refused, naming the difference
    with pytest.raises(ValueError, match=r"another config \(lr: 0\.01 -> 0\.05\)"):
        choose_run(tmp_path, "toy", replace(BASE, lr=0.05), "x", "auto")
    with pytest.raises(ValueError, match="another config"):
        train(tmp_path, replace(BASE, lr=0.05), name="x")  # the trainer checks too, for Python callers
    # display settings are not the run's identity: a resume may change them
    assert choose_run(tmp_path, "toy", replace(BASE, progress=True, log_every=3), "x", "auto") == run
    config_before = (run.path / "config.toml").read_text()
    reference = train(tmp_path, name="ref")
    assert_bitwise_equal(reference, train(tmp_path, replace(BASE, keep_last=5), name="x"))
    assert (run.path / "config.toml").read_text() == config_before  # never rewritten by a resume
    for bad in ("../y", "/abs", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(ValueError, match="a run id is a name"):
            choose_run(tmp_path, "toy", BASE, bad, "auto")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        choose_run(tmp_path / "file", "toy", BASE, None, "auto")


def test_a_restart_without_a_usable_checkpoint_logs_every_step_once(tmp_path: Path) -> None:
    """Killed before its first checkpoint (or with only torn ones): the log restarts from step 0."""
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, replace(BASE, checkpoint_every=100), task=Regression(crash_at_step=7), name="x")
    run = RunDir(tmp_path / "toy" / "x")
    assert read_metrics(run.metrics_path) and not CheckpointDir(run.checkpoints).steps()
    train(tmp_path, replace(BASE, checkpoint_every=100), name="x")
    reference = train(tmp_path, replace(BASE, checkpoint_every=100), name="ref")
    del reference

    def records(name: str) -> list[dict[str, object]]:
        return [
            {k: v for k, v in r.items() if k != "time_s"}
            for r in read_metrics(tmp_path / "toy" / name / "metrics.jsonl")
        ]

    assert records("x") == records("ref")


def test_the_logged_loss_after_a_resume_equals_the_uninterrupted_runs(tmp_path: Path) -> None:
    """Checkpoints every 3 steps, log lines every 2: the first line after a resume averages micro-
    batches from both sides of the crash."""
    cfg = replace(BASE, checkpoint_every=3, log_every=2)
    train(tmp_path, cfg, name="ref")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, cfg, task=Regression(crash_at_step=11), name="x")
    train(tmp_path, cfg, name="x")

    def losses(name: str) -> list[tuple[object, object]]:
        return [
            (r["step"], r["train/loss"])
            for r in read_metrics(tmp_path / "toy" / name / "metrics.jsonl")
            if "train/loss" in r
        ]

    assert losses("x") == losses("ref")


def test_a_failed_run_says_so_and_stays_resumable(tmp_path: Path) -> None:
    class Broken(Regression):
        def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
            raise RuntimeError("evaluation exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        train(tmp_path, task=Broken(), name="x")
    run = RunDir(tmp_path / "toy" / "x")
    m = run.manifest()
    assert m is not None and m["status"] == "failed" and "evaluation exploded" in m["error"]
    assert run.status() == "failed"
    train(tmp_path, name="x")  # fixed: the same command continues it
    assert run.status() == "finished" and (run.manifest() or {})["error"] is None


def test_configs_refuse_non_finite_numbers_folders_and_unknown_keys(tmp_path: Path) -> None:
    from cudalab.runs.config import resolve

    for value in ("inf", "nan", "-inf", "1e999"):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            resolve(BASE, overrides=[f"lr={value}"])
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(lr=float("nan"))
    (tmp_path / "c.toml").write_text("lr = nan\n")
    with pytest.raises(ValueError, match=r"c\.toml: lr must be a finite number"):
        resolve(BASE, config_file=tmp_path / "c.toml")
    with pytest.raises(ValueError, match="is a folder, not a config file"):
        resolve(BASE, config_file=tmp_path)
    with pytest.raises(ValueError, match="must be a single value"):
        resolve(BASE, config_file=_toml(tmp_path, "lr = [1, 2]\n"))
    with pytest.raises(ValueError, match="conflicts with another override"):
        resolve(BASE, overrides=["lr.x=1", "lr=2"])


def _toml(tmp: Path, text: str) -> Path:
    p = tmp / "x.toml"
    p.write_text(text)
    return p
