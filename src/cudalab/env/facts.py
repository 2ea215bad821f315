"""Facts: what the probes found on a machine, each with the way it was obtained.

A :class:`Facts` value is plain JSON underneath, so a report recorded on one machine
(``cudalab doctor --json``) can be diagnosed on another (``cudalab doctor --facts FILE``), and every
cause the doctor knows is tested here from a fixture, without the broken machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cudalab.errors import CudalabError

#: Bumped when a probe's value changes shape; older reports keep loading (unknown keys read as absent).
SCHEMA_VERSION = 1


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
        probes: dict[str, Probe] = {}
        for name, raw in probes_raw.items():
            if not isinstance(raw, Mapping) or "ok" not in raw:
                raise CudalabError(f"{origin}: probe {name!r} is malformed (expected an object with 'ok')")
            probes[name] = Probe(
                name=str(name),
                ok=bool(raw["ok"]),
                value=raw.get("value"),
                source=str(raw.get("source", "")),
                error=None if raw.get("error") is None else str(raw["error"]),
                elapsed_s=float(raw.get("elapsed_s", 0.0) or 0.0),
            )
        meta = data.get("meta") or {}
        return cls(probes=probes, meta=dict(meta) if isinstance(meta, Mapping) else {})

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
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CudalabError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CudalabError(f"{p}: cannot read ({exc.__class__.__name__}: {exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CudalabError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, Mapping):
            raise CudalabError(f"{p}: not a cudalab facts report (top level is not an object)")
        return cls.from_dict(data, origin=str(p))
