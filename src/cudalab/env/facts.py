"""Facts: what the probes found on a machine, each with the way it was obtained.

A :class:`Facts` value is plain JSON underneath, so a report recorded on one machine
(``cudalab doctor --json``) can be diagnosed on another (``cudalab doctor --facts FILE``), and every
cause the doctor knows is tested here from a fixture, without the broken machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cudalab.errors import CudalabError

#: Bumped when a probe's value changes shape; older reports keep loading (unknown keys read as absent).
SCHEMA_VERSION = 1

#: A doctor report is tens of kilobytes; a file past this is not one (and is not read whole).
MAX_REPORT_BYTES = 16 << 20
#: A report is a few levels deep; deeper JSON is not a report (and would exhaust the parser's stack).
MAX_DEPTH = 32

#: The probes the doctor knows: each value is an object (or null where the probe found nothing), and
#: the fields the diagnosis reads must have these JSON types (``None``: null allowed).
VALUE_TYPES: dict[str, dict[str, tuple[type | None, ...]]] = {
    "os": {},
    "container": {"runtime": (str, None), "image": (str, None)},
    "pci": {"gpus": (list,), "nvswitches": (list,)},
    "driver": {"version": (str, None), "open_kernel_module": (bool, None)},
    "device_nodes": {"gpus": (list,), "nvswitches": (list,), "nvidiactl": (bool,)},
    "libcuda": {
        "realpath": (str, None),
        "forward_compat": (bool, None),
        "file_version": (str, None),
        "cu_init": (int, None),
    },
    "nvml": {"gpus": (list,), "driver_version": (str, None)},
    "visible_devices": {},
    "shm": {"total_bytes": (int, None)},
    "compilers": {"cc": (str, None), "cxx": (str, None), "triton": (bool, None)},
    "nvidia_wheels": {"wheels": (list,)},
    "ld_library_path": {"entries": (list,)},
    "torch": {
        "version": (str, None),
        "cuda": (str, None),
        "cudnn": (int, None),
        "nccl": (str, None),
        "cuda_available": (bool, None),
        "devices": (list,),
        "arch_list": (list,),
        "cuda_warnings": (list,),
        "cuda_error": (str, None),
        "loaded_libs": (dict,),
    },
    "smoke": {"tests": (list,)},
}
#: List fields whose items the diagnosis reads as objects or strings.
ITEM_TYPES: dict[tuple[str, str], type] = {
    ("pci", "gpus"): dict,
    ("pci", "nvswitches"): dict,
    ("nvml", "gpus"): dict,
    ("device_nodes", "gpus"): str,
    ("device_nodes", "nvswitches"): str,
    ("ld_library_path", "entries"): dict,
    ("nvidia_wheels", "wheels"): dict,
    ("torch", "devices"): dict,
    ("torch", "arch_list"): str,
    ("torch", "cuda_warnings"): str,
    ("smoke", "tests"): dict,
}
_ITEM_NAMES: dict[type, str] = {dict: "objects", str: "strings"}
_JSON_NAMES: dict[type | None, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    None: "null",
}


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def _check_value(name: str, value: Any, origin: str) -> None:
    """Refuse a known probe's value of the wrong JSON shape (the diagnosis would misread it)."""
    fields = VALUE_TYPES.get(name)
    if fields is None or value is None:
        return
    if not isinstance(value, Mapping):
        raise CudalabError(
            f"{origin}: probe {name!r}: value must be an object or null, not {type(value).__name__}"
        )
    for key, allowed in fields.items():
        if key not in value:
            continue
        v = value[key]
        ok = any(
            (v is None) if t is None else (isinstance(v, t) and not (t is int and isinstance(v, bool)))
            for t in allowed
        )
        if not ok:
            want = " or ".join(_JSON_NAMES[t] for t in allowed)
            raise CudalabError(f"{origin}: probe {name!r}: {key} must be {want}, not {json.dumps(v)[:40]}")
        item = ITEM_TYPES.get((name, key))
        if item is not None and isinstance(v, list) and not all(isinstance(e, item) for e in v):
            raise CudalabError(f"{origin}: probe {name!r}: {key} must be a list of {_ITEM_NAMES[item]}")


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one probe.

    Attributes
    ----------
    name
        Probe name, e.g. ``"driver"``.
    ok
        True when the probe obtained its value; False when the thing probed is absent or broken
        (``error`` then says what was seen).
    value
        JSON-compatible value (a dict for all but the simplest probes); None when nothing was found.
    source
        How the value was obtained: the file read, the call made, the variable consulted.
    error
        The error text as the system gave it (e.g. NVML's ``"Unknown Error"``), or None.
    elapsed_s
        Wall time the probe took, in seconds.
    """

    name: str
    ok: bool
    value: Any
    source: str
    error: str | None = None
    elapsed_s: float = 0.0

    def get(self, key: str, default: Any = None) -> Any:
        """Return ``value[key]`` when the value is a mapping holding ``key``, else ``default``."""
        if isinstance(self.value, Mapping):
            return self.value.get(key, default)
        return default


@dataclass(frozen=True)
class Facts:
    """An ordered set of probe results plus where and when they were collected."""

    probes: Mapping[str, Probe]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Probe]:
        return iter(self.probes.values())

    def __contains__(self, name: object) -> bool:
        return name in self.probes

    def probe(self, name: str) -> Probe | None:
        """The probe called ``name``, or None when it did not run (or the report predates it)."""
        return self.probes.get(name)

    def value(self, name: str, key: str | None = None, default: Any = None) -> Any:
        """``probes[name].value`` (or its ``key``), with ``default`` for anything absent."""
        p = self.probes.get(name)
        if p is None:
            return default
        if key is None:
            return default if p.value is None else p.value
        return p.get(key, default)

    def error(self, name: str) -> str | None:
        """The error text a probe recorded, or None."""
        p = self.probes.get(name)
        return None if p is None else p.error

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"schema": 1, "meta": {...}, "probes": {name: {...}}}``."""
        return {
            "schema": SCHEMA_VERSION,
            "meta": dict(self.meta),
            "probes": {name: asdict(p) for name, p in self.probes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "<facts>") -> Facts:
        """Rebuild facts from :meth:`to_dict` output (or a whole doctor report holding ``"facts"``).

        Raises
        ------
        CudalabError
            When ``data`` is not a facts report; the message names ``origin``.
        """
        if "facts" in data and isinstance(data["facts"], Mapping):
            data = data["facts"]
        probes_raw = data.get("probes")
        if not isinstance(probes_raw, Mapping):
            raise CudalabError(f"{origin}: not a cudalab facts report (no 'probes' object)")
        schema = data.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA_VERSION:
            raise CudalabError(
                f"{origin}: schema {schema!r} is not one this doctor reads (<= {SCHEMA_VERSION})"
            )
        probes: dict[str, Probe] = {}
        for name, raw in probes_raw.items():
            if not isinstance(raw, Mapping) or not isinstance(raw.get("ok"), bool):
                raise CudalabError(
                    f"{origin}: probe {name!r} is malformed (expected an object with 'ok': true or false)"
                )
            source, error, elapsed = raw.get("source", ""), raw.get("error"), raw.get("elapsed_s", 0.0)
            if not isinstance(source, str) or not (error is None or isinstance(error, str)):
                raise CudalabError(f"{origin}: probe {name!r}: source and error must be strings")
            if (
                isinstance(elapsed, bool)
                or not isinstance(elapsed, int | float)
                or not math.isfinite(elapsed)
            ):
                raise CudalabError(f"{origin}: probe {name!r}: elapsed_s must be a number, not {elapsed!r}")
            _check_value(str(name), raw.get("value"), origin)
            probes[name] = Probe(
                name=str(name),
                ok=raw["ok"],
                value=raw.get("value"),
                source=source,
                error=error,
                elapsed_s=float(elapsed),
            )
        meta = data.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise CudalabError(f"{origin}: meta must be an object")
        return cls(probes=probes, meta=dict(meta))

    @classmethod
    def load(cls, path: str | Path) -> Facts:
        """Read a facts report written by ``cudalab doctor --json``.

        Raises
        ------
        CudalabError
            With a one-line message naming the file when it is missing, unreadable or not a report.
        """
        p = Path(path)
        try:
            if p.is_dir():
                raise CudalabError(f"{p}: is a folder, not a facts report")
            if not p.is_file() and p.exists():
                raise CudalabError(f"{p}: not a regular file")
            with p.open("rb") as fh:
                raw = fh.read(MAX_REPORT_BYTES + 1)
        except FileNotFoundError:
            raise CudalabError(f"{p}: no such file") from None
        except OSError as exc:
            raise CudalabError(f"{p}: cannot read ({exc.strerror})") from None
        if len(raw) > MAX_REPORT_BYTES:
            raise CudalabError(f"{p}: larger than {MAX_REPORT_BYTES >> 20} MiB: not a doctor report")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CudalabError(f"{p}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise CudalabError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except RecursionError:
            raise CudalabError(f"{p}: JSON nested too deeply to be a doctor report") from None
        except ValueError as exc:  # e.g. an integer of thousands of digits
            raise CudalabError(f"{p}: not a doctor report ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise CudalabError(f"{p}: not a cudalab facts report (top level is not an object)")
        if _depth(data) > MAX_DEPTH:
            raise CudalabError(f"{p}: JSON nested more than {MAX_DEPTH} deep: not a doctor report")
        return cls.from_dict(data, origin=str(p))
