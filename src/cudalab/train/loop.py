"""The one training loop: every workload hands it a :class:`Task` and a :class:`TrainConfig`.

The loop owns device and precision, DDP, optimizer and schedule, gradient accumulation and
clipping, evaluation, early stopping, logging (metrics.jsonl, TensorBoard, a rich bar on rank 0)
and checkpoints with auto-resume. A task owns only its data and model and says how a batch
becomes a loss and how a model is evaluated.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from cudalab.env.device import resolve_device
from cudalab.train import distributed as dist
from cudalab.train import rng
from cudalab.train.checkpoint import CheckpointDir
from cudalab.train.config import TrainConfig, describe
from cudalab.train.distributed import DistInfo
from cudalab.train.precision import PrecisionPlan, resolve_precision
from cudalab.train.run import MetricsLog, RunDir


class Task(Protocol):
    """What a workload gives the engine.

    ``setup`` runs once per process before the model is built, with the device and this rank's place
    in the job. ``train_batches(epoch, start)`` yields this rank's micro-batches of ``epoch`` from
    micro-batch ``start`` on, the same ones for the same (seed, epoch) every time (see
    :class:`cudalab.train.data.EpochSampler`); ``micro_batches_per_epoch`` counts them.
    ``training_step`` returns the mean loss of one micro-batch; the engine runs it under autocast.
    ``evaluate`` runs on rank 0 with the plain module in eval mode under ``torch.no_grad``.
    """

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None: ...

    def build_model(self) -> nn.Module: ...

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]: ...

    def micro_batches_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]: ...

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...


@dataclass(slots=True)
class TrainState:
    """The loop's position and bookkeeping; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    """Next micro-batch of ``epoch`` to train on (the data position)."""
    best_value: float | None = None
    best_step: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "best_metrics": dict(self.best_metrics),
            "last_metrics": dict(self.last_metrics),
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "train_time_s": self.train_time_s,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for key, value in d.items():
            setattr(self, key, value)


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak LR at a step: linear warm-up, then constant, cosine or linear decay."""
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warm)
        t = min(1.0, (step - warm) / span)
        shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
        return floor + (1 - floor) * shape

    return f


def build_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


Resume = Literal["auto", "never"]
"""``auto``: continue from the newest valid checkpoint when there is one; ``never``: start at step 0
and refuse a run directory that holds checkpoints."""


@dataclass(slots=True)
class FitResult:
    """What :func:`fit` returns on every rank."""

    summary: dict[str, Any]
    model: nn.Module
    """The trained plain module (unwrapped from DDP and torch.compile)."""
    precision: PrecisionPlan


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (what checkpoints hold)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def _better(metrics: dict[str, float], best: dict[str, float], cfg: TrainConfig) -> bool:
    """Whether ``metrics`` beat the best evaluation so far: the early-stop metric, then the tie-break."""
    value, key = metrics[cfg.early_stop_metric], cfg.early_stop_metric
    if not best:
        return not math.isnan(value)
    if _improved(value, best[key], cfg.early_stop_mode):
        return True
    tie = cfg.tiebreak_metric
    return bool(tie) and value == best[key] and _improved(metrics[tie], best[tie], cfg.tiebreak_mode)


def fit(
    task: Task,
    cfg: TrainConfig,
    run: RunDir,
    *,
    resume: Resume = "auto",
    environment: dict[str, Any] | None = None,
    run_config: Any = None,
    console: Console | None = None,
    info: DistInfo | None = None,
) -> FitResult:
    """Train ``task`` as ``cfg`` says, in ``run``; resume from its checkpoints when allowed.

    Parameters
    ----------
    run_config
        The task's whole resolved config (saved as config.toml); ``cfg`` when None.
    environment
        The fingerprint for the manifest (rank 0); computed once by the caller so multi-seed
        sweeps do not probe the machine per seed.
    info
        This process's place in the job; joins torchrun's process group when None.
    """
    from cudalab.env.fingerprint import fingerprint

    con = console or Console(stderr=True)
    info = info or dist.init(cfg.device)
    main = info.is_main
    say: Callable[[str], None] = con.print if main else (lambda _msg: None)

    # -- decide once: device, precision, determinism ------------------------------------------------
    device, device_reason = resolve_device(cfg.device, info.local_rank)
    det_notes = rng.configure_determinism(cfg.deterministic)
    plan = resolve_precision(cfg.precision, device)
    rng.seed_everything(cfg.seed)
    say(
        f"[bold]device[/]     {device_reason}"
        + (f" x {info.world_size} ranks ({info.backend})" if info.distributed else "")
    )
    say(f"[bold]precision[/]  {plan.reason}")
    if det_notes:
        say(f"[bold]determinism[/] {'; '.join(det_notes)}")

    task.setup(device, info, cfg.seed)
    model = task.build_model().to(device)  # identical on every rank: all seeded alike
    if info.distributed:  # then each rank its own dropout stream (a resume restores them per rank)
        rng.seed_everything(cfg.seed + 7919 * info.rank)
    optimizer = build_optimizer(cfg, task.param_groups(model))
    micro_per_epoch = task.micro_batches_per_epoch()
    if micro_per_epoch < 1:
        raise ValueError("the task has no training batches")
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=plan.grad_scaler)
    state = TrainState()
    ckpts = CheckpointDir(run.checkpoints, cfg.keep_last)

    # -- resume -------------------------------------------------------------------------------------
    resumed_from: int | None = None
    if main:
        for stale in ckpts.sweep_temporaries():
            say(f"[yellow]removed a torn checkpoint write[/] {stale.name}")
    dist.barrier(info)
    loaded, skipped = ckpts.newest_valid(map_location="cpu")
    for why in skipped:
        say(f"[yellow]skipped[/] {why}")
    if loaded is not None and resume == "never":
        raise ValueError(f"{run.path}: already holds checkpoints; resume it or choose a new run id")
    if loaded is not None:
        ck = loaded.state
        _unwrap(model).load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        state.load_state_dict(ck["trainer"])
        states = ck["rng"]
        if len(states) == info.world_size:
            rng.restore(states[info.rank])
        else:
            say(
                f"[yellow]checkpoint from {len(states)} ranks, running on {info.world_size}: RNG streams reseeded[/]"
            )
            rng.seed_everything(cfg.seed + 1_000_003 * state.step + info.rank)
        resumed_from = state.step
        say(f"[bold]resumed[/]    {loaded.path.name} (step {state.step}, epoch {state.epoch})")

    log = MetricsLog(run.metrics_path) if main else None
    tb = None
    if main:
        run.start(
            run_config if run_config is not None else cfg,
            seed=cfg.seed,
            environment=environment if environment is not None else fingerprint(),
            extra={
                "world_size": info.world_size,
                "device": device_reason,
                "precision": {"name": plan.name, "reason": plan.reason},
                "deterministic": cfg.deterministic,
            },
        )
        if resumed_from is not None:
            assert log is not None
            log.truncate_after(resumed_from)
        if cfg.tensorboard:
            tb = _tensorboard(run, resumed_from, say)

    # -- wrap: DDP then compile; checkpoints always hold the plain module -----------------------------
    core = model
    ddp: nn.parallel.DistributedDataParallel | None = None
    if info.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = ddp
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    autocast = (
        torch.autocast(device.type, dtype=plan.autocast_dtype)
        if plan.autocast_dtype is not None
        else contextlib.nullcontext()
    )

    def checkpoint_state() -> dict[str, Any]:
        return {
            "step": state.step,
            "epoch": state.epoch,
            "batch": state.batch,
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if plan.grad_scaler else None,
            "trainer": state.state_dict(),
            "rng": dist.gather(rng.capture(), info),  # collective: every rank's streams
            "world_size": info.world_size,
            "precision": plan.name,
        }

    def save_checkpoint() -> None:
        payload = checkpoint_state()
        if main:
            ckpts.save(payload)
        dist.barrier(info)

    def evaluate() -> dict[str, float]:
        metrics: dict[str, float] = {}
        if main:
            core.eval()
            with torch.no_grad(), autocast:
                metrics = {k: float(v) for k, v in task.evaluate(core).items()}
            core.train()
        metrics = dist.broadcast(metrics, info)  # every rank takes the same early-stopping decision
        state.last_metrics = metrics
        record = {"step": state.step, "epoch": state.epoch, **{f"eval/{k}": v for k, v in metrics.items()}}
        if log is not None:
            log.write(record)
        if tb is not None:
            for k, v in metrics.items():
                tb.add_scalar(f"eval/{k}", v, state.step)
        metric = cfg.early_stop_metric
        if metric:
            for name in filter(None, (metric, cfg.tiebreak_metric)):
                if name not in metrics:
                    raise ValueError(
                        f"train metric {name!r} is not among the evaluation's {', '.join(metrics)}"
                    )
            if _better(metrics, state.best_metrics, cfg):
                state.best_value, state.best_step, state.bad_evals = metrics[metric], state.step, 0
                state.best_metrics = dict(metrics)
                if main:
                    ckpts.save_best(
                        {
                            "step": state.step,
                            "epoch": state.epoch,
                            "batch": state.batch,
                            "model": core.state_dict(),
                            "metrics": metrics,
                        }
                    )
            else:
                state.bad_evals += 1
                if cfg.patience and state.bad_evals >= cfg.patience:
                    state.stopped_early = True
        return metrics

    # -- the loop -----------------------------------------------------------------------------------
    if main and resumed_from is None:
        say(f"[bold]run[/]        {run.path}")
    say(
        f"[bold]schedule[/]   {total_steps} steps = {cfg.max_epochs} epochs x {steps_per_epoch} "
        f"(grad_accum {cfg.grad_accum}, world {info.world_size})"
    )
    progress = _progress(con) if (main and cfg.progress) else None
    bar = progress.add_task("train", total=total_steps, completed=state.step) if progress else None
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    done = state.stopped_early or state.step >= total_steps
    core.train()
    t_start = time.perf_counter() - state.train_time_s
    with progress or contextlib.nullcontext():
        while not done and state.epoch < cfg.max_epochs:
            micro_in_step = 0
            step_micro = min(cfg.grad_accum, micro_per_epoch - state.batch)
            epoch_ended = False
            for batch in task.train_batches(state.epoch, state.batch):
                # ---- one micro-batch --------------------------------------------------------------
                last_micro = micro_in_step + 1 == step_micro
                # DDP all-reduces gradients on the last micro-batch of a step only
                no_sync = ddp.no_sync() if ddp is not None and not last_micro else contextlib.nullcontext()
                with no_sync:
                    with autocast:
                        loss = task.training_step(model, batch)
                    scaler.scale(loss / step_micro).backward()
                loss_sum += loss.detach().float()
                loss_count += 1
                micro_in_step += 1
                state.batch += 1
                if not last_micro:
                    continue
                # ---- one optimizer step -----------------------------------------------------------
                if cfg.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(core.parameters(), cfg.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                state.step += 1
                micro_in_step = 0
                step_micro = min(cfg.grad_accum, micro_per_epoch - state.batch)
                end_of_epoch = state.batch >= micro_per_epoch
                if end_of_epoch:
                    state.epoch, state.batch = state.epoch + 1, 0
                state.train_time_s = time.perf_counter() - t_start

                # ---- once in a while: log, evaluate, checkpoint -----------------------------------
                if state.step % cfg.log_every == 0 or state.step == total_steps:
                    # .item() syncs with the device: only every log_every steps
                    mean_loss = dist.mean(loss_sum / max(loss_count, 1), info).item()
                    loss_sum.zero_()
                    loss_count = 0
                    lr = scheduler.get_last_lr()[0]
                    if log is not None:
                        log.write(
                            {
                                "step": state.step,
                                "epoch": state.epoch,
                                "train/loss": mean_loss,
                                "train/lr": lr,
                                "time_s": round(state.train_time_s, 3),
                            }
                        )
                    if tb is not None:
                        tb.add_scalar("train/loss", mean_loss, state.step)
                        tb.add_scalar("train/lr", lr, state.step)
                last = state.step >= total_steps
                if (
                    (cfg.eval_every and state.step % cfg.eval_every == 0)
                    or (not cfg.eval_every and end_of_epoch)
                    or last
                ):
                    evaluate()
                    last = last or state.stopped_early
                if (
                    (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)
                    or (not cfg.checkpoint_every and end_of_epoch)
                    or last
                ):
                    save_checkpoint()
                if progress is not None and bar is not None:
                    shown = state.last_metrics.get(cfg.early_stop_metric) if cfg.early_stop_metric else None
                    progress.update(
                        bar,
                        completed=state.step,
                        description=(
                            f"epoch {state.epoch}"
                            + (f" {cfg.early_stop_metric} {shown:.4f}" if shown is not None else "")
                        ),
                    )
                if last:
                    done = True
                    break
                if end_of_epoch:
                    epoch_ended = True
                    break
            if not (done or epoch_ended):
                raise RuntimeError(
                    f"the task yielded {state.batch} micro-batches in epoch {state.epoch}, "
                    f"but said it has {micro_per_epoch}"
                )

    if not state.last_metrics:  # resumed past the planned end (fewer epochs asked) from an unevaluated step
        evaluate()
    summary = {
        "steps": state.step,
        "epochs": state.epoch,
        "stopped_early": state.stopped_early,
        "train_time_s": round(state.train_time_s, 3),
        "final": state.last_metrics,
        "best": {
            "metric": cfg.early_stop_metric,
            "value": state.best_value,
            "step": state.best_step,
            "metrics": state.best_metrics,
        }
        if cfg.early_stop_metric
        else None,
        "precision": plan.name,
        "world_size": info.world_size,
        "resumed_from_step": resumed_from,
    }
    if main:
        assert log is not None
        log.close()
        if tb is not None:
            tb.close()
        run.finish(summary)
    dist.barrier(info)
    return FitResult(summary=summary, model=core, precision=plan)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _tensorboard(run: RunDir, resumed_from: int | None, say: Callable[[str], None]) -> Any:
    """A SummaryWriter, purging events past the resumed step; None (said loudly) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        say("[yellow]tensorboard is not installed: no TensorBoard events (pip install tensorboard)[/]")
        return None
    purge = resumed_from + 1 if resumed_from is not None else None
    return SummaryWriter(log_dir=str(run.tensorboard), purge_step=purge)


def print_config(cfg: Any, console: Console) -> None:
    """The resolved config, one ``key = value`` per line (what config.toml will hold)."""
    console.print("[bold]config[/]")
    for key, value in describe(cfg):
        console.print(f"  {key} = {value}", highlight=False)
