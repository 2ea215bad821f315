"""Where a training run's numbers go: one sink, three outlets, on rank 0.

- ``metrics.jsonl`` (the record; truncated to the resumed step on resume, so every step's numbers
  appear once however often the run was killed);
- TensorBoard scalars, and at the end the run's hyper-parameters (its config's identity) beside its
  final metrics for TensorBoard's HParams tab;
- progress: a rich bar in a terminal or a notebook; otherwise, as in a Slurm or nohup log, one plain
  line per log interval with step, epoch, loss, learning rate and throughput, so a batch job is
  never silent until its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cudalab.runs.config import flatten, identity
from cudalab.runs.rundir import MetricsLog, RunDir


class MetricsSink:
    """Metrics, TensorBoard and progress of one run; every method is a no-op off rank 0.

    Parameters
    ----------
    run
        The run directory (rank 0 writes it).
    console
        Where progress goes (stderr by default, like every engine message).
    main
        Whether this is rank 0.
    total_steps, start_step
        The plan and where this process starts (a resume starts past 0).
    resumed_from
        The step a resume continues from, or ``None`` for a fresh start; either way the metrics log
        and the TensorBoard events are cut back to it (0 when a run directory had no usable
        checkpoint), so no step is recorded twice.
    progress, tensorboard
        The config's choices.
    """

    def __init__(
        self,
        run: RunDir,
        console: Console,
        *,
        main: bool,
        total_steps: int,
        start_step: int,
        resumed_from: int | None,
        progress: bool,
        tensorboard: bool,
        say: Callable[[str], None],
    ) -> None:
        self.main = main
        self.console = console
        self.total = total_steps
        self.log: MetricsLog | None = None
        self.tb: Any = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._plain = False
        self._t0 = time.perf_counter()
        self._first = start_step
        self._last = (start_step, self._t0)
        if not main:
            return
        self.log = MetricsLog(run.metrics_path)
        dropped = self.log.truncate_after(resumed_from or 0)
        if dropped:
            say(f"[yellow]dropped {dropped} metrics record(s) past step {resumed_from or 0}[/]")
        if tensorboard:
            self.tb = _tensorboard(run, resumed_from, say)
        if progress:
            if console.is_terminal or console.is_jupyter:
                self._bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    transient=True,
                )
                self._task = self._bar.add_task("train", total=total_steps, completed=start_step)
            else:
                self._plain = True

    def __enter__(self) -> MetricsSink:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def train(self, record: dict[str, Any], items: int) -> None:
        """A training record (``step``, ``epoch``, ``train/...``); ``items`` examples since the last."""
        if not self.main:
            return
        assert self.log is not None
        self.log.write(record)
        step = int(record["step"])
        if self.tb is not None:
            for k, v in record.items():
                if k.startswith("train/"):
                    self.tb.add_scalar(k, v, step)
        now = time.perf_counter()
        steps, seconds = step - self._last[0], max(now - self._last[1], 1e-9)
        self._last = (step, now)
        if self._plain:
            rate = f"{steps / seconds:.2f} steps/s" + (
                f", {items / seconds:,.0f} examples/s" if items else ""
            )
            elapsed = now - self._t0
            eta = elapsed / max(step - self._first, 1) * (self.total - step)
            self.console.print(
                f"step {step}/{self.total} epoch {record['epoch']} loss {record['train/loss']:.4g} "
                f"lr {record['train/lr']:.3g} {rate} elapsed {elapsed:.0f} s eta {eta:.0f} s",
                highlight=False,
                markup=False,
                soft_wrap=True,  # one line per record, however long: logs are read with grep
            )

    def evaluation(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        assert self.log is not None
        self.log.write({"step": step, "epoch": epoch, **{f"eval/{k}": v for k, v in metrics.items()}})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"eval/{k}", v, step)
        if self._plain:
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            self.console.print(f"eval step {step}: {shown}", highlight=False, markup=False, soft_wrap=True)

    def progress(self, step: int, description: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=step, description=description)

    def close(self, config: Any, final: dict[str, float]) -> None:
        """Close the outlets; TensorBoard gets the hyper-parameters beside the final metrics."""
        if not self.main:
            return
        assert self.log is not None
        self.log.close()
        if self.tb is not None:
            _write_hparams(self.tb, config, final)
            self.tb.close()


def _tensorboard(run: RunDir, resumed_from: int | None, say: Callable[[str], None]) -> Any:
    """A SummaryWriter that discards events past the resumed step; None (said loudly) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        say("[yellow]tensorboard is not installed: no TensorBoard events (pip install tensorboard)[/]")
        return None
    existing = run.tensorboard.is_dir() and any(run.tensorboard.iterdir())
    purge = (resumed_from or 0) + 1 if (resumed_from is not None or existing) else None
    return SummaryWriter(log_dir=str(run.tensorboard), purge_step=purge)


def _write_hparams(tb: Any, config: Any, final: dict[str, float]) -> None:
    """The config's identity as TensorBoard hyper-parameters, linked to the final evaluation's tags."""
    from torch.utils.tensorboard.summary import hparams

    hp = {k: v for k, v in flatten(identity(config)).items() if isinstance(v, bool | int | float | str)}
    metrics = {f"eval/{k}": float(v) for k, v in final.items()}
    if not metrics:
        return
    exp, ssi, sei = hparams(hp, metrics)
    writer = tb._get_file_writer()
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
