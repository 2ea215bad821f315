"""Your own model through the engine: a task factory in a file or module, and the Python entry.

A factory is a function ``make_task(cfg) -> Task``. Its config is the dataclass its first parameter
is annotated with, which holds a ``train: TrainConfig`` section beside the task's own fields (their
defaults are the preset; ``--set`` and ``--config`` override them as for any workload). A factory
without a parameter gets :class:`CustomConfig`, the ``train`` section alone.

From the command line::

    cudalab train custom examples/spirals.py:make_task --set hidden=128 --epochs 20
    torchrun --nproc-per-node 2 -m cudalab train custom examples/spirals.py --device cpu

From Python or a notebook, :func:`cudalab.train.fit` does the same.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cudalab.train.config import TrainConfig
from cudalab.train.experiment import Experiment
from cudalab.train.task import Task

KIND = "custom"


@dataclass(kw_only=True, slots=True, frozen=True)
class CustomConfig:
    """The config of a factory that takes none of its own: the engine's ``train`` section."""

    train: TrainConfig = field(default_factory=TrainConfig)


def config_type(factory: Callable[..., Any]) -> type | None:
    """The config dataclass ``factory`` takes (its first parameter's annotation), or None without one.

    Raises ``ValueError`` when the annotation is not a dataclass with a ``train: TrainConfig`` field.
    """
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    try:
        hints = typing.get_type_hints(factory)
    except Exception as exc:  # an annotation that does not resolve in the factory's module
        raise ValueError(f"{_name(factory)}: its annotations do not resolve ({exc})") from None
    cls = hints.get(params[0].name)
    if cls is None:
        return CustomConfig
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{_name(factory)}: its config parameter must be a dataclass, not {cls!r}")
    train = {f.name: f for f in dataclasses.fields(cls)}.get("train")
    if train is None or typing.get_type_hints(cls).get("train") is not TrainConfig:
        raise ValueError(f"{_name(factory)}: its config {cls.__name__} needs a field train: TrainConfig")
    return cls


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def load_factory(spec: str) -> Callable[..., Task]:
    """The factory ``spec`` names: ``path/to/file.py[:name]`` or ``package.module:name``
    (``name`` defaults to ``make_task``). One-line ``ValueError`` for a missing file or name."""
    target, sep, name = spec.rpartition(":")
    if not sep or "/" in name or name.endswith(".py"):
        target, name = spec, "make_task"
    if not name.isidentifier():
        raise ValueError(f"{spec}: {name!r} is not a Python name")
    path = Path(target)
    if target.endswith(".py") or path.exists():
        module = _import_file(path)
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(f"{target}: no such file, and not an importable module ({exc})") from None
        where = target
    factory = getattr(module, name, None)
    if factory is None:
        raise ValueError(f"{where}: defines no {name} (give FILE.py:NAME)")
    if not callable(factory):
        raise ValueError(f"{where}: {name} is not callable")
    return factory


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    module_name = f"cudalab_user_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise ValueError(f"{path}:{exc.lineno}: {exc.msg}") from None
    except ImportError as exc:
        del sys.modules[module_name]
        raise ValueError(f"{path}: {exc}") from None
    return module


def experiment_for(factory: Callable[..., Task], *, kind: str = KIND) -> Experiment[Any]:
    """An :class:`Experiment` that builds each seed's task with ``factory`` (given its config, if it
    takes one)."""
    takes_config = config_type(factory) is not None
    name = getattr(factory, "__qualname__", "task")
    module = getattr(factory, "__module__", "")
    shown = name if module.startswith("cudalab_user_") else f"{module}.{name}"

    def make(cfg: Any) -> Task:
        task = factory(cfg) if takes_config else factory()
        missing = [
            m
            for m in ("setup", "build_model", "train_batches", "training_step", "evaluate")
            if not hasattr(task, m)
        ]
        if missing:
            raise ValueError(
                f"{shown} returned {type(task).__name__}, which lacks {', '.join(missing)} of a Task"
            )
        return task

    return Experiment(kind=kind, make_task=make, subject=lambda cfg: shown)


def custom_experiment(spec: str) -> tuple[Experiment[Any], Any]:
    """The experiment and the default config for a factory named on the command line."""
    factory = load_factory(spec)
    cls = config_type(factory) or CustomConfig
    try:
        base = cls()
    except TypeError as exc:
        raise ValueError(
            f"{spec}: its config {cls.__name__} needs defaults for every field ({exc})"
        ) from None
    experiment = experiment_for(factory)
    return dataclasses.replace(experiment, subject=lambda cfg: spec), base
