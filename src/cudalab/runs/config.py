"""Typed configs: dataclasses to and from TOML, ``--set a.b=v`` overrides, identity and differences.

A config is a dataclass whose fields are scalars, tuples of scalars, ``Literal`` choices or nested
config dataclasses. The same helpers turn any of them into a dict (for ``config.toml``), back from
a dict (``--config FILE``), and apply ``key=value`` overrides with the field's own type
(``--set train.lr=0.02``), so the command line, a saved config and a preset go through one
validated path. Numbers must be finite: a NaN or an infinity in a config is always a mistake.

A field made with :func:`cosmetic` changes how a job is shown (a progress bar, a log interval), not
what it computes: it is left out of the config's :func:`identity`, so a run resumed with another
value of it is still the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomli_w

from cudalab._io import atomic_write_text

C = TypeVar("C")

#: Field metadata key: False for a field left out of the config's identity (:func:`cosmetic`).
IDENTITY = "cudalab.identity"


def cosmetic(default: Any) -> Any:
    """A config field that changes no result (display, logging cadence): not part of the identity."""
    return dataclasses.field(default=default, metadata={IDENTITY: False})


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


def check_finite(obj: Any, prefix: str = "") -> None:
    """Reject a NaN or infinite float anywhere in a config (built in code, where no parser checked)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            check_finite(value, f"{prefix}{f.name}.")
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{prefix}{f.name} must be a finite number, got {v}")


def _plain(cfg: Any, *, cosmetic: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if not cosmetic and not f.metadata.get(IDENTITY, True):
            continue
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = _plain(value, cosmetic=cosmetic)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (tuples become lists), ready for TOML or JSON."""
    return _plain(cfg, cosmetic=True)


def identity(cfg: Any) -> dict[str, Any]:
    """:func:`to_dict` without the :func:`cosmetic` fields: what decides a run's results."""
    return _plain(cfg, cosmetic=False)


def config_hash(cfg: Any) -> str:
    """sha256 of the config's :func:`identity` as canonical JSON: equal hashes, equal results."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


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
        if isinstance(value, dict):
            raise ValueError(f"{key} must be a list, got a table")
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_coerce(item, v.strip() if isinstance(v, str) else v, key) for v in items if v != "")
    if isinstance(value, dict | list) and hint is not str:
        raise ValueError(f"{key} must be a single value, got {type(value).__name__}")
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
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, dict | list):
            raise ValueError(f"{key} must be a string, got {type(value).__name__}")
        return str(value)
    raise TypeError(f"{key}: unsupported config field type {hint!r}")


def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "") -> C:
    """Build ``cls`` from nested dicts; unknown keys are an error, missing keys keep their defaults."""
    return update(cls(), data, prefix=prefix)


def update(cfg: C, data: dict[str, Any], *, prefix: str = "") -> C:
    """A copy of ``cfg`` with the values in the nested dict ``data`` (validated, coerced) applied.

    Raises ``ValueError`` naming the dotted key for an unknown key, a wrong type, or a value the
    config's own ``__post_init__`` refuses.
    """
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
    try:
        return replace(cfg, **changes)  # type: ignore[type-var]
    except ValueError as exc:
        message = str(exc)
        # a section's own check names its fields without the section: add it
        if prefix and not message.startswith(prefix):
            message = f"{prefix.rstrip('.')}: {message}"
        raise ValueError(message) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.02", "model.hidden=32"]`` as the nested dict :func:`update` takes."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        node = out
        parts = [p.strip() for p in key.split(".")]
        if any(not p for p in parts):
            raise ValueError(f"override {item!r}: empty part in the key")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with another override")
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config TOML file; a missing, unreadable or malformed file raises ``ValueError`` naming it."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, not a config file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML ({exc})") from None


def dumps(cfg: Any, *, header: str = "") -> str:
    """The config as TOML text, with ``header`` as leading comment lines."""
    body = tomli_w.dumps(to_dict(cfg))
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def save_toml(cfg: Any, path: str | Path, *, header: str = "") -> Path:
    """Write the config atomically as TOML (what ``--config`` reads back)."""
    return atomic_write_text(path, dumps(cfg, header=header))


def resolve(
    base: C,
    *,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> C:
    """The one way a command builds its config: ``base`` (a preset), replaced by ``config_file`` when
    given, then the command's own flags (a nested dict of the values given), then ``--set`` items.

    Raises ``ValueError`` naming the file or key at fault.
    """
    cfg = base
    if config_file is not None:
        data = load_toml(config_file)
        try:
            cfg = from_dict(type(base), data)
        except ValueError as exc:
            raise ValueError(f"{config_file}: {exc}") from None
    if flags:
        cfg = update(cfg, flags)
    if overrides:
        cfg = update(cfg, parse_overrides(overrides))
    check_finite(cfg)
    return cfg


def describe(cfg: Any) -> list[tuple[str, str]]:
    """Flattened ``(dotted.key, value)`` pairs, for printing the resolved config."""
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


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every key whose values differ (None when absent)."""
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]


__all__ = [
    "check_finite",
    "check_literals",
    "config_hash",
    "cosmetic",
    "describe",
    "differences",
    "dumps",
    "flatten",
    "from_dict",
    "identity",
    "load_toml",
    "parse_overrides",
    "resolve",
    "save_toml",
    "to_dict",
    "update",
]
