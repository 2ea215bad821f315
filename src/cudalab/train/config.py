"""The engine's typed configuration, and the one override layer every task config shares.

A task config is a dataclass whose fields are scalars, tuples of scalars or nested config
dataclasses (its ``train`` section is a :class:`TrainConfig`). The same helpers turn any of them
into a dict (for ``config.toml``), back from a dict (``--config FILE``), and apply ``key=value``
overrides with the field's own type (``--set train.lr=0.02``), so the command line, a saved config
and a preset all go through one validated path.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomli_w

from cudalab._io import atomic_write_text
from cudalab.env.device import Device

Precision = Literal["auto", "bf16", "fp16", "fp32"]

C = TypeVar("C")


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainConfig:
    """How to train, independent of what is trained.

    Steps are optimizer steps; one step consumes ``grad_accum`` micro-batches on every rank.
    """

    seed: int = 0
    """Seeds every RNG (Python, NumPy, torch CPU and CUDA) and every per-epoch data permutation."""
    max_epochs: int = 200
    """Epochs to train (an epoch is one pass over the task's training batches)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0: no limit besides ``max_epochs``."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    """Peak learning rate, reached at the end of warm-up."""
    weight_decay: float = 0.0
    """L2 penalty (Adam, SGD) or decoupled decay (AdamW); tasks may exempt parameter groups."""
    momentum: float = 0.9
    """SGD momentum (unused by Adam/AdamW)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate shape after warm-up, over the planned number of steps."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr`` over this many steps."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine/linear decay as a fraction of ``lr``."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each rank (the global batch is split over both)."""
    clip_grad_norm: float = 0.0
    """Clip the global gradient L2 norm to this value; 0: off."""
    precision: Precision = "auto"
    """auto: bf16 on compute capability >= 8.0, fp16 with a GradScaler below, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (checkpoints still hold the plain module)."""
    device: Device = "auto"
    """auto: CUDA when usable, else CPU. Under torchrun each rank takes cuda:LOCAL_RANK."""
    deterministic: bool = False
    """Deterministic algorithms, cuDNN flags and cuBLAS workspace: bitwise-repeatable runs."""
    eval_every: int = 0
    """Evaluate every this many steps; 0: at the end of every epoch."""
    log_every: int = 10
    """Log the training loss every this many steps (one device sync each)."""
    checkpoint_every: int = 0
    """Checkpoint every this many steps; 0: at the end of every epoch. The last step is always saved."""
    keep_last: int = 3
    """Periodic checkpoints kept besides ``best.pt``."""
    early_stop_metric: str = ""
    """Evaluation metric that decides the best checkpoint and early stopping; '': none."""
    early_stop_mode: Literal["max", "min"] = "max"
    tiebreak_metric: str = ""
    """Decides between evaluations whose early-stop metric ties (accuracy on a 500-node split moves
    in steps of 0.2 %); '': the first one wins."""
    tiebreak_mode: Literal["max", "min"] = "min"
    patience: int = 0
    """Stop after this many evaluations without improvement of the metric; 0: never stop early."""
    progress: bool = True
    """Show a rich progress bar on rank 0."""
    tensorboard: bool = True
    """Write TensorBoard events beside metrics.jsonl on rank 0."""

    def __post_init__(self) -> None:
        positive = {"max_epochs": self.max_epochs, "grad_accum": self.grad_accum, "log_every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"train.{name} must be >= 1, got {value}")
        non_negative: dict[str, float] = {
            "max_steps": self.max_steps,
            "warmup_steps": self.warmup_steps,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "patience": self.patience,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "clip_grad_norm": self.clip_grad_norm,
        }
        for name, amount in non_negative.items():
            if amount < 0:
                raise ValueError(f"train.{name} must be >= 0, got {amount}")
        if self.keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {self.keep_last}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.patience and not self.early_stop_metric:
            raise ValueError("train.patience needs train.early_stop_metric")
        if self.tiebreak_metric and not self.early_stop_metric:
            raise ValueError("train.tiebreak_metric needs train.early_stop_metric")
        check_literals(self)


# --------------------------------------------------------------------------------------------------
# dict / TOML round trip and overrides
# --------------------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_literals(obj: Any) -> None:
    """Reject a value outside a ``Literal`` field's choices (dataclasses do not check types)."""
    for f in fields(obj):
        hint = _hints(type(obj))[f.name]
        if typing.get_origin(hint) is Literal:
            value = getattr(obj, f.name)
            if value not in typing.get_args(hint):
                choices = ", ".join(map(str, typing.get_args(hint)))
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (tuples become lists), ready for TOML or JSON."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """``value`` (a TOML value or an override string) as the type ``hint`` names."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"{key}: union-typed config fields are not supported")
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_coerce(item, v.strip() if isinstance(v, str) else v, key) for v in items if v != "")
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if hint is str:
        return str(value)
    raise TypeError(f"{key}: unsupported config field type {hint!r}")


def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "") -> C:
    """Build ``cls`` from nested dicts; unknown keys are an error, missing keys keep their defaults."""
    return update(cls(), data, prefix=prefix)


def update(cfg: C, data: dict[str, Any], *, prefix: str = "") -> C:
    """A copy of ``cfg`` with the values in the nested dict ``data`` (validated, coerced) applied."""
    hints = _hints(type(cfg))
    names = {f.name for f in fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown config key {full!r} (known: {', '.join(sorted(names))})")
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{full} is a section; set its keys as {full}.KEY=VALUE")
            changes[key] = update(current, value, prefix=f"{full}.")
        else:
            changes[key] = _coerce(hints[key], value, full)
    return replace(cfg, **changes)  # type: ignore[type-var]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.02", "model.hidden=32"]`` as the nested dict :func:`update` takes."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        node = out
        parts = [p.strip() for p in key.split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config TOML file; a missing or malformed file raises ``ValueError`` naming it."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML ({exc})") from None


def save_toml(cfg: Any, path: str | Path, *, header: str = "") -> Path:
    """Write the resolved config atomically as TOML (what ``--config`` reads back)."""
    body = tomli_w.dumps(to_dict(cfg))
    text = "".join(f"# {line}\n" for line in header.splitlines()) + body
    return atomic_write_text(path, text)


def describe(cfg: Any) -> list[tuple[str, str]]:
    """Flattened ``(dotted.key, value)`` pairs, for printing the resolved config and diffing runs."""
    return [(k, repr(v)) for k, v in flatten(to_dict(cfg)).items()]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


__all__ = [
    "Device",
    "Precision",
    "TrainConfig",
    "check_literals",
    "describe",
    "flatten",
    "from_dict",
    "load_toml",
    "parse_overrides",
    "save_toml",
    "to_dict",
    "update",
]
