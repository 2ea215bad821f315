"""The one training loop, as a small object with named steps: resume, train step, evaluate, save.

:class:`Trainer` takes a :class:`~cudalab.train.task.Task`, a :class:`TrainConfig` and a run
directory. It decides device and precision once (with reasons it prints and records), wraps the
model in DDP under torchrun, runs the optimizer steps with gradient accumulation and clipping, and
once in a while logs, evaluates (with early stopping) and checkpoints. Everything a resumed run
needs to continue bit for bit is in its checkpoints: weights, optimizer, schedule, loss scaler, data
position, every rank's RNG streams, and the loss accumulated since the last log line (so the logged
numbers after a resume equal an uninterrupted run's).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from torch import nn

from cudalab.env.device import resolve_device
from cudalab.runs.rundir import Resume, RunDir
from cudalab.train import distributed as dist
from cudalab.train import rng
from cudalab.train.checkpoint import CheckpointDir
from cudalab.train.config import TrainConfig
from cudalab.train.distributed import DistInfo
from cudalab.train.optim import build_optimizer, lr_lambda
from cudalab.train.precision import PrecisionPlan, resolve_precision
from cudalab.train.sinks import MetricsSink
from cudalab.train.state import TrainState
from cudalab.train.task import Task

_END = object()  # an exhausted batch iterator (a task may yield None: the whole graph is the batch)


class Preempted(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption) arrived: a checkpoint of the last finished step was written
    and the run stopped; the same command resumes it. A ``KeyboardInterrupt``, so the CLI exits as
    interrupted and nothing treats it as a failure of the code."""


@dataclass(slots=True)
class FitResult:
    """What a training run returns on every rank."""

    summary: dict[str, Any]
    model: nn.Module
    """The trained plain module (unwrapped from DDP and torch.compile)."""
    precision: PrecisionPlan


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (what checkpoints hold)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


class Trainer:
    """Train ``task`` as ``cfg`` says, into ``run``; :meth:`fit` does it all.

    Parameters
    ----------
    kind, subject
        What the run is (``graph``, ``custom``, ...) and on what, for its manifest and ``runs list``.
    resume
        ``auto`` continues from the newest valid checkpoint; ``never`` refuses a run that has one.
    environment
        The fingerprint for the manifest (rank 0); computed once by the caller so multi-seed
        sweeps do not probe the machine per seed (probed here when None).
    run_config
        The workload's whole resolved config (saved as config.toml); ``cfg`` when None.
    info
        This process's place in the job; joins torchrun's process group when None.
    """

    sink: MetricsSink

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        run: RunDir,
        *,
        kind: str = "custom",
        subject: str = "",
        resume: Resume = "auto",
        environment: dict[str, Any] | None = None,
        run_config: Any = None,
        console: Console | None = None,
        info: DistInfo | None = None,
    ) -> None:
        self.task, self.cfg, self.run, self.kind, self.subject = task, cfg, run, kind, subject
        self.resume_mode = resume
        self.environment, self.run_config = environment, run_config if run_config is not None else cfg
        self.console = console or Console(stderr=True)
        self.info = info or dist.init(cfg.device)
        self.main = self.info.is_main

        # -- decide once: device, precision, determinism --------------------------------------------
        self.device, self.device_reason = resolve_device(cfg.device, self.info.local_rank)
        det_notes = rng.configure_determinism(cfg.deterministic)
        self.plan = resolve_precision(cfg.precision, self.device)
        rng.seed_everything(cfg.seed)
        ranks = f" x {self.info.world_size} ranks ({self.info.backend})" if self.info.distributed else ""
        self.say(f"[bold]device[/]     {self.device_reason}{ranks}")
        self.say(f"[bold]precision[/]  {self.plan.reason}")
        if det_notes:
            self.say(f"[bold]determinism[/] {'; '.join(det_notes)}")

        # -- build: model, optimizer, schedule --------------------------------------------------------
        task.setup(self.device, self.info, cfg.seed)
        self.core = task.build_model().to(self.device)  # identical on every rank: all seeded alike
        if self.info.distributed:  # then each rank its own dropout stream (a resume restores them per rank)
            rng.seed_everything(cfg.seed + 7919 * self.info.rank)
        self.optimizer = build_optimizer(cfg, task.param_groups(self.core))
        self.micro_per_epoch = task.micro_batches_per_epoch()
        if self.micro_per_epoch < 1:
            raise ValueError("the task has no training batches")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / cfg.grad_accum)
        self.total_steps = cfg.max_epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total_steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.plan.grad_scaler)
        self.state = TrainState()
        self.ckpts = CheckpointDir(run.checkpoints, cfg.keep_last)
        self.model: nn.Module = self.core
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.autocast: Any = contextlib.nullcontext()
        self._items = 0
        self._logged_at = 0.0  # train_time_s at the last log line
        self._resumed_loss = 0.0
        self._loss_sum = torch.zeros((), device=self.device)

    def say(self, message: str) -> None:
        if self.main:
            self.console.print(message)

    # -- the named steps ----------------------------------------------------------------------------

    def resume(self) -> int | None:
        """Load the newest valid checkpoint (skipping torn ones); return its step, or None."""
        if self.main:
            for stale in self.ckpts.sweep_temporaries():
                self.say(f"[yellow]removed a torn checkpoint write[/] {stale.name}")
        dist.barrier(self.info)
        loaded, skipped = self.ckpts.newest_valid(map_location="cpu")
        for why in skipped:
            self.say(f"[yellow]skipped[/] {why}")
        if loaded is None:
            return None
        if self.resume_mode == "never":
            raise ValueError(f"{self.run.path}: already holds checkpoints; resume it or choose a new run id")
        ck = loaded.state
        try:
            self.core.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{loaded.path}: does not fit this model ({first})") from None
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.state.load_state_dict(ck["trainer"])
        self._logged_at = self.state.train_time_s
        sums = ck.get("loss_sums") or []
        self._resumed_loss = float(sums[self.info.rank]) if len(sums) == self.info.world_size else 0.0
        if len(sums) != self.info.world_size:
            self.state.loss_count = 0
        states = ck["rng"]
        if len(states) == self.info.world_size:
            rng.restore(states[self.info.rank])
        else:
            self.say(
                f"[yellow]checkpoint from {len(states)} ranks, running on {self.info.world_size}: "
                "RNG streams reseeded[/]"
            )
            rng.seed_everything(self.cfg.seed + 1_000_003 * self.state.step + self.info.rank)
        self.say(f"[bold]resumed[/]    {loaded.path.name} (step {self.state.step}, epoch {self.state.epoch})")
        return self.state.step

    def train_step(self, batches: Iterator[Any]) -> None:
        """One optimizer step over the next micro-batches (``grad_accum``, fewer at an epoch's end)."""
        cfg, state = self.cfg, self.state
        step_micro = min(cfg.grad_accum, self.micro_per_epoch - state.batch)
        for k in range(step_micro):
            batch = next(batches, _END)
            if batch is _END:
                raise RuntimeError(
                    f"the task yielded {state.batch} micro-batches in epoch {state.epoch}, "
                    f"but said it has {self.micro_per_epoch}"
                )
            # DDP all-reduces gradients on the last micro-batch of a step only
            last_micro = k + 1 == step_micro
            no_sync = (
                self.ddp.no_sync() if self.ddp is not None and not last_micro else contextlib.nullcontext()
            )
            with no_sync:
                with self.autocast:
                    loss = self.task.training_step(self.model, batch)
                self.scaler.scale(loss / step_micro).backward()
            self._loss_sum += loss.detach().float()
            state.loss_count += 1
            state.batch += 1
            self._items += self._batch_size(batch)
        if cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.core.parameters(), cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state.step += 1
        if state.batch >= self.micro_per_epoch:
            state.epoch, state.batch = state.epoch + 1, 0

    def evaluate(self) -> dict[str, float]:
        """Evaluate on rank 0, share the result, record it, and update the best and early stopping."""
        cfg, state = self.cfg, self.state
        metrics: dict[str, float] = {}
        if self.main:
            self.core.eval()
            with torch.no_grad(), self.autocast:
                metrics = {k: float(v) for k, v in self.task.evaluate(self.core).items()}
            self.core.train()
        metrics = dist.broadcast(metrics, self.info)  # every rank takes the same early-stopping decision
        state.last_metrics = metrics
        self.sink.evaluation(state.step, state.epoch, metrics)
        if cfg.early_stop_metric and state.record_evaluation(metrics, cfg) and self.main:
            self.ckpts.save_best(
                {
                    "step": state.step,
                    "epoch": state.epoch,
                    "batch": state.batch,
                    "model": self.core.state_dict(),
                    "metrics": metrics,
                }
            )
        return metrics

    def save(self) -> None:
        """A periodic checkpoint (a collective: every rank's RNG streams are gathered)."""
        payload = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batch": self.state.batch,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.plan.grad_scaler else None,
            "trainer": self.state.state_dict(),
            "rng": dist.gather(rng.capture(), self.info),
            # each rank's loss since the last log line: the next logged mean equals an uninterrupted
            # run's (.item() syncs, only at checkpoints)
            "loss_sums": dist.gather(float(self._loss_sum.item()), self.info),
            "world_size": self.info.world_size,
            "precision": self.plan.name,
        }
        if self.main:
            self.ckpts.save(payload)
        dist.barrier(self.info)

    # -- the whole run ------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Resume, train to the planned step (or early stop), and write the summary."""
        cfg, state, run = self.cfg, self.state, self.run
        started = False
        try:
            resumed_from = self.resume()
            if self.main:
                from cudalab.env.fingerprint import fingerprint

                run.start(
                    self.run_config,
                    kind=self.kind,
                    subject=self.subject,
                    seed=cfg.seed,
                    environment=self.environment if self.environment is not None else fingerprint(),
                    extra={
                        "world_size": self.info.world_size,
                        "device": self.device_reason,
                        "precision": {"name": self.plan.name, "reason": self.plan.reason},
                        "deterministic": cfg.deterministic,
                    },
                )
                started = True
                if resumed_from is None:
                    self.say(f"[bold]run[/]        {run.path}")
            self._wrap()
            self.sink = MetricsSink(
                run,
                self.console,
                main=self.main,
                total_steps=self.total_steps,
                start_step=state.step,
                resumed_from=resumed_from,
                progress=cfg.progress,
                tensorboard=cfg.tensorboard,
                say=self.say,
            )
            self.say(
                f"[bold]schedule[/]   {self.total_steps} steps = {cfg.max_epochs} epochs x "
                f"{self.steps_per_epoch} (grad_accum {cfg.grad_accum}, world {self.info.world_size})"
            )
            self._loop()
            if not state.last_metrics:  # resumed past the planned end (fewer epochs asked), unevaluated
                self.evaluate()
            summary = state.summary(
                cfg, precision=self.plan.name, world_size=self.info.world_size, resumed_from=resumed_from
            )
            self.sink.close(self.run_config, state.last_metrics)
            if self.main:
                run.finish(summary)
            dist.barrier(self.info)
            return FitResult(summary=summary, model=self.core, precision=self.plan)
        except BaseException as exc:
            clear = dist.as_collective_error(exc, self.info)
            if started:
                run.fail(clear or exc)
            if clear is not None:
                raise clear from None
            raise

    def _wrap(self) -> None:
        """DDP, then compile; checkpoints always hold the plain module."""
        if self.info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.core, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.model = self.ddp
        if self.cfg.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        if self.plan.autocast_dtype is not None:
            self.autocast = torch.autocast(self.device.type, dtype=self.plan.autocast_dtype)
        self._loss_sum = torch.tensor(self._resumed_loss, dtype=torch.float32, device=self.device)

    def _loop(self) -> None:
        cfg, state = self.cfg, self.state
        done = state.stopped_early or state.step >= self.total_steps
        self.core.train()
        t_start = time.perf_counter() - state.train_time_s
        with self.sink, _sigterm_flag() as preempted:
            while not done and state.epoch < cfg.max_epochs:
                batches = iter(self.task.train_batches(state.epoch, state.batch))
                epoch = state.epoch
                while not done and state.epoch == epoch:
                    self.train_step(batches)
                    state.train_time_s = time.perf_counter() - t_start
                    done = self._once_in_a_while(end_of_epoch=state.epoch != epoch)
                    if not done and self._agreed(preempted):
                        self.save()
                        self.say(
                            f"[yellow]SIGTERM: checkpoint of step {state.step} written; rerun to resume[/]"
                        )
                        raise Preempted(f"preempted at step {state.step}; a checkpoint was written")

    def _agreed(self, flag: list[bool]) -> bool:
        """Whether any rank received SIGTERM: at once in a single process; under torchrun one small
        all-reduce at each logging step, so that every rank stops at the same step and the
        checkpoint's collectives match."""
        if not self.info.distributed:
            return flag[0]
        if self.state.step % self.cfg.log_every:  # the collective syncs the device: at log steps only
            return False
        t = torch.tensor([1.0 if flag[0] else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _once_in_a_while(self, *, end_of_epoch: bool) -> bool:
        """After a step: log, evaluate, checkpoint, show progress; True when the run is done."""
        cfg, state = self.cfg, self.state
        last = state.step >= self.total_steps
        if state.step % cfg.log_every == 0 or last:
            # .item() syncs with the device: only every log_every steps
            mean_loss = dist.mean(self._loss_sum / max(state.loss_count, 1), self.info).item()
            self._loss_sum.zero_()
            state.loss_count = 0
            record = {
                "step": state.step,
                "epoch": state.epoch,
                "train/loss": mean_loss,
                "train/lr": self.scheduler.get_last_lr()[0],
                "time_s": round(state.train_time_s, 3),
            }
            items = self._items * self.info.world_size
            extra = getattr(self.task, "interval_metrics", None)
            if callable(extra):  # the task's own figures of the interval (perplexity, tokens/s, MFU)
                seconds = max(state.train_time_s - self._logged_at, 1e-9)
                record |= {f"train/{k}": float(v) for k, v in extra(mean_loss, items, seconds).items()}
            self._logged_at = state.train_time_s
            self.sink.train(record, items=items)
            self._items = 0
        if (
            (cfg.eval_every and state.step % cfg.eval_every == 0)
            or (not cfg.eval_every and end_of_epoch)
            or last
        ):
            self.evaluate()
            last = last or state.stopped_early
        if (
            (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)
            or (not cfg.checkpoint_every and end_of_epoch)
            or last
        ):
            self.save()
        shown = state.last_metrics.get(cfg.early_stop_metric) if cfg.early_stop_metric else None
        self.sink.progress(
            state.step,
            f"epoch {state.epoch}" + (f" {cfg.early_stop_metric} {shown:.4f}" if shown is not None else ""),
        )
        return last

    def _batch_size(self, batch: Any) -> int:
        size = getattr(self.task, "batch_size", None)
        return int(size(batch)) if callable(size) else 0


def train_run(task: Task, cfg: TrainConfig, run: RunDir, **options: Any) -> FitResult:
    """Train ``task`` into the run directory ``run``: ``Trainer(task, cfg, run, **options).fit()``."""
    return Trainer(task, cfg, run, **options).fit()


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[list[bool]]:
    """A flag set by SIGTERM while the block runs (the previous handler restored after); in a thread
    other than the main one, where no handler can be set, a flag that stays False."""
    import signal
    import threading

    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
