"""The one experiment engine every workload uses, and your own model's way in.

A workload (or you) writes a :class:`~cudalab.train.task.Task` (data, model, loss, evaluation) and
a config dataclass with a ``train`` section (:class:`~cudalab.train.config.TrainConfig`); the engine
does the rest: device and precision, DDP under torchrun, the loop (:mod:`~cudalab.train.trainer`),
evaluation and early stopping, metrics, TensorBoard and progress (:mod:`~cudalab.train.sinks`),
crash-safe checkpoints and resume, seeds as child runs (:mod:`~cudalab.train.experiment`), and the
run directory with its manifest (:mod:`cudalab.runs`).

From Python or a notebook::

    from cudalab.train import fit
    result = fit(make_task, MyConfig(hidden=64))      # runs/custom/<id>/, resumable
    result.summary["headline"], result.run.path, result.last.model

Nothing heavy is imported here: ``cudalab runs`` and the CLI's start-up must not pay for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from cudalab.train.experiment import ExperimentResult
    from cudalab.train.task import Task


def fit(
    task: Callable[..., Task] | Task,
    config: Any = None,
    *,
    runs: str | Path = "runs",
    run_id: str | None = None,
    resume: str = "auto",
    kind: str = "custom",
    console: Console | None = None,
    allow_env_change: bool = False,
) -> ExperimentResult:
    """Train your task with the whole engine; return the run, its summary and the trained model.

    Parameters
    ----------
    task
        A factory ``make_task(cfg) -> Task`` (or ``make_task() -> Task``), called per seed with that
        seed's config; or a ready :class:`~cudalab.train.task.Task` (reused for every seed).
    config
        The factory's config dataclass (with a ``train`` section), a bare
        :class:`~cudalab.train.config.TrainConfig`, or None for the defaults of the factory's
        annotated config.
    runs, run_id, resume
        As ``--runs``, ``--run-id`` and ``--resume``: the same call again continues an unfinished
        run of the same config; a run id taken by another config is refused with the difference.
    allow_env_change
        As ``--allow-env-change``: resume even where torch, CUDA, cuDNN, NCCL, the driver or the
        packages changed since the run last ran (recorded in its manifest); refused otherwise.
    kind
        The run's folder under ``runs`` (``custom``).
    console
        Where the engine reports (stderr, which a notebook shows).
    """
    import dataclasses

    from cudalab.runs.rundir import RESUMES
    from cudalab.train.config import TrainConfig
    from cudalab.train.custom import CustomConfig, config_type, experiment_for
    from cudalab.train.experiment import run_experiment

    if resume not in RESUMES:
        raise ValueError(f"resume must be one of {', '.join(RESUMES)}, not {resume!r}")
    if callable(task) and not hasattr(task, "training_step"):
        factory: Callable[..., Any] = task
    else:
        ready = task

        def factory(cfg):  # unannotated: any config with a train section
            return ready

    wanted = config_type(factory) or CustomConfig
    if config is None:
        config = wanted()
    elif isinstance(config, TrainConfig):
        config = dataclasses.replace(wanted(), train=config)
    if not (dataclasses.is_dataclass(config) and isinstance(getattr(config, "train", None), TrainConfig)):
        raise ValueError("config must be a dataclass with a train: TrainConfig section, or a TrainConfig")
    return run_experiment(
        experiment_for(factory, kind=kind),
        config,
        runs_root=Path(runs),
        run_id=run_id,
        resume=resume,  # checked against RESUMES above
        console=console,
        allow_env_change=allow_env_change,
    )


__all__ = ["fit"]
