"""Audit the pinned stack (``constraints.txt``) for known vulnerabilities: ``make audit``.

Two sources of the same data (PyPI's vulnerability records are the PyPA advisory database, served
through OSV):

- **pip-audit** against PyPI (the default). A pin that PyPI could not be asked about is reported as
  *not audited*, never as clean; when no pin could be asked about, the audit fails in one line.
- **an advisory database on disk** (``--advisory-db DIR``): a checkout of
  github.com/pypa/advisory-database, or OSV's PyPI export unpacked, for machines whose network does
  not reach PyPI's JSON API or OSV. Its records are matched here by the OSV rules (``ECOSYSTEM``
  ranges and explicit version lists); the table states the newest record's date, since a snapshot
  knows nothing published after it.

Every finding needs a decision in ``docs/audit-actions.toml`` (``"ADVISORY-ID" = "action taken"``,
matched by the advisory's id or any alias). The table, ``docs/audit.md``, lists each finding with its
action; a finding without one is written as ``UNTRIAGED`` and the audit exits 1, so a new advisory
against a pin cannot pass unnoticed. Bad input (a malformed pin, an unreadable record) exits 2 with
one line naming the file.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from cudalab._io import atomic_write_text, file_sha256

#: A pin as ``make constraints`` writes it: ``name==version``.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")


def normalize(name: str) -> str:
    """A distribution name in PEP 503's normal form (``PyYAML`` -> ``pyyaml``, ``a_b.c`` -> ``a-b-c``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One pinned distribution."""

    name: str
    version: str

    @property
    def key(self) -> str:
        return normalize(self.name)


@dataclass(frozen=True)
class Finding:
    """One advisory affecting one pin."""

    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    summary: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.advisory, *self.aliases)


@dataclass
class AuditResult:
    """What an audit found, and what it could not look at."""

    source: str
    as_of: str
    pins: int
    findings: list[Finding] = field(default_factory=list)
    not_audited: list[tuple[str, str]] = field(default_factory=list)  # (pin, reason)


class AuditError(Exception):
    """Bad input or an unusable data source: one line for the user, exit 2."""


def read_pins(path: Path) -> list[Pin]:
    """The ``name==version`` lines of a constraints file; anything else but comments is refused."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    pins = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _PIN.match(text)
        if match is None:
            raise AuditError(f"{path}:{number}: not a 'name==version' pin: {line.strip()!r}")
        pins.append(Pin(match[1], match[2]))
    if not pins:
        raise AuditError(f"{path}: no pins")
    return pins


# ------------------------------------------------------------------------------- OSV matching
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _range_affects(events: Sequence[Mapping[str, str]], version: Version) -> bool:
    """OSV's evaluation of one ``ECOSYSTEM`` range: the last event at or below ``version`` decides.

    ``introduced`` opens (``"0"`` is below every version), ``fixed`` closes at its version,
    ``last_affected`` closes just above it. Events are taken in version order, as the schema asks.
    """
    ordered: list[tuple[Version, int, str]] = []
    for event in events:
        for kind, value in event.items():
            if kind == "introduced":
                at = Version("0") if value == "0" else _version(value)
                rank = 1
            elif kind in ("fixed", "last_affected"):
                at = _version(value)
                rank = 0
            else:  # "limit" bounds a GIT range's walk; it has no meaning for a version
                continue
            if at is not None:
                ordered.append((at, rank, kind))
    affected = False
    for at, _, kind in sorted(ordered):
        if kind == "introduced" and version >= at:
            affected = True
        elif (kind == "fixed" and version >= at) or (kind == "last_affected" and version > at):
            affected = False
    return affected


def osv_affects(record: Mapping[str, Any], pin: Pin) -> tuple[bool, tuple[str, ...]]:
    """Whether an OSV record affects ``pin``, and the versions it names as fixed for that package."""
    version = _version(pin.version)
    hit = False
    fixed: list[str] = []
    for entry in record.get("affected") or ():
        package = entry.get("package") or {}
        if package.get("ecosystem") != "PyPI" or normalize(package.get("name", "")) != pin.key:
            continue
        if pin.version in (entry.get("versions") or ()):
            hit = True
        for rng in entry.get("ranges") or ():
            if rng.get("type") != "ECOSYSTEM":
                continue
            events = rng.get("events") or ()
            fixed += [e["fixed"] for e in events if "fixed" in e]
            if version is not None and _range_affects(events, version):
                hit = True
    return hit, tuple(dict.fromkeys(fixed))


def _records(root: Path, keys: set[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The OSV records under ``root`` that may concern ``keys`` (PyPA layout: ``vulns/<name>/*.yaml``)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    vulns = root / "vulns"
    if vulns.is_dir():
        paths: Iterable[Path] = (
            p
            for d in sorted(vulns.iterdir())
            if d.is_dir() and normalize(d.name) in keys
            for p in sorted(d.iterdir())
        )
    else:
        paths = sorted(root.rglob("*"))
    for path in paths:
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=loader)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise AuditError(f"{path}: not a readable OSV record ({type(exc).__name__})") from exc
        if not isinstance(record, dict) or "id" not in record:
            raise AuditError(f"{path}: not an OSV record (no 'id')")
        yield path, record


def audit_offline(pins: Sequence[Pin], root: Path) -> AuditResult:
    """Match ``pins`` against the OSV records of an advisory database on disk."""
    if not root.is_dir():
        raise AuditError(f"{root}: no such advisory database directory")
    by_key = {pin.key: pin for pin in pins}
    findings: list[Finding] = []
    newest = ""
    seen = 0
    for _, record in _records(root, set(by_key)):
        seen += 1
        newest = max(newest, str(record.get("modified", "")))
        if record.get("withdrawn"):
            continue
        for key in {
            normalize((e.get("package") or {}).get("name", "")) for e in record.get("affected") or ()
        }:
            pin = by_key.get(key)
            if pin is None:
                continue
            hit, fixed = osv_affects(record, pin)
            if hit:
                summary = str(record.get("summary") or record.get("details") or "").strip()
                findings.append(
                    Finding(
                        pin.name,
                        pin.version,
                        record["id"],
                        tuple(record.get("aliases") or ()),
                        fixed,
                        summary,
                    )
                )
    if seen == 0 and not (root / "vulns").is_dir():
        raise AuditError(f"{root}: no OSV records found (expected vulns/<package>/*.yaml or *.json files)")
    newest = max(newest, _newest_modified(root))
    kind = "the PyPA advisory database" if (root / "vulns").is_dir() else "OSV records"
    source = f"{kind}, a snapshot on disk (offline)"
    return AuditResult(source, newest[:10] or "unknown", len(pins), _sorted(findings))


_MODIFIED = re.compile(rb'^\s*"?modified"?\s*:\s*"?(\d{4}-\d\d-\d\d[0-9T:.Z+-]*)', re.MULTILINE)


def _newest_modified(root: Path) -> str:
    """The newest ``modified`` date of any record in the database: how current the snapshot is."""
    newest = b""
    for path in root.rglob("*"):
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            for match in _MODIFIED.finditer(path.read_bytes()):
                newest = max(newest, match[1])
    return newest.decode()


def audit_pip_audit(constraints: Path, pip_audit: str, timeout_s: float = 900.0) -> AuditResult:
    """Run pip-audit against PyPI on the pins (no resolution: the pins are the whole stack)."""
    command = [pip_audit, "-r", str(constraints), "--no-deps", "--disable-pip", "--format", "json",
               "--progress-spinner", "off"]  # fmt: skip
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise AuditError(f"{pip_audit}: pip-audit not found (make audit installs it)") from exc
    except subprocess.TimeoutExpired as exc:
        raise AuditError(f"pip-audit did not finish in {timeout_s:.0f} s (is PyPI reachable?)") from exc
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AuditError(f"pip-audit failed (exit {proc.returncode}): {last}") from None
    pins = read_pins(constraints)
    return parse_pip_audit(report, len(pins))


def parse_pip_audit(report: Mapping[str, Any], pins: int) -> AuditResult:
    """pip-audit's JSON report as an :class:`AuditResult`; skipped dependencies are not clean."""
    result = AuditResult("PyPI, through pip-audit", datetime.now(UTC).strftime("%Y-%m-%d"), pins)
    for dep in report.get("dependencies", ()):
        if "skip_reason" in dep:
            result.not_audited.append((f"{dep['name']}=={dep.get('version', '?')}", dep["skip_reason"]))
            continue
        for vuln in dep.get("vulns", ()):
            aliases = tuple(vuln.get("aliases", ()))
            fixed = tuple(vuln.get("fix_versions", ()))
            summary = str(vuln.get("description", "")).strip()
            result.findings.append(Finding(dep["name"], dep["version"], vuln["id"], aliases, fixed, summary))
    audited = pins - len(result.not_audited)
    if audited <= 0:
        reason = result.not_audited[0][1] if result.not_audited else "no dependencies in the report"
        raise AuditError(
            f"pip-audit could audit none of the {pins} pins ({reason}): PyPI's vulnerability data is not "
            "reachable from here; run where it is, or give ADVISORY_DB=<checkout of pypa/advisory-database>"
        )
    result.findings = _sorted(result.findings)
    return result


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    unique = {(normalize(f.package), f.advisory): f for f in findings}
    return sorted(unique.values(), key=lambda f: (normalize(f.package), f.advisory))


# ------------------------------------------------------------------------------- triage and table
def read_actions(path: Path) -> dict[str, str]:
    """The triage file: advisory id (or alias) -> the action taken, under ``[advisories]``."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"{path}: not a readable TOML file ({exc})") from exc
    table = data.get("advisories", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise AuditError(f"{path}: [advisories] must map advisory ids to non-empty action strings")
    return {k.upper(): v.strip() for k, v in table.items()}


def action_for(finding: Finding, actions: Mapping[str, str]) -> str | None:
    """The recorded action for a finding, looked up by its id, then its aliases."""
    for name in finding.names:
        if name.upper() in actions:
            return actions[name.upper()]
    return None


def _cell(text: str, limit: int = 110) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= limit else one[: limit - 1].rstrip() + "…"


def render(result: AuditResult, actions: Mapping[str, str], constraints: Path) -> tuple[str, int]:
    """The Markdown table, and how many findings have no recorded action."""
    untriaged = 0
    rows = []
    for f in result.findings:
        action = action_for(f, actions)
        if action is None:
            untriaged += 1
            action = "**UNTRIAGED**"
        rows.append(
            f"| {f.package} | {f.version} | {f.advisory} | {', '.join(f.aliases) or '-'} | "
            f"{', '.join(f.fixed) or 'none'} | {_cell(f.summary)} | {_cell(action, 200)} |"
        )
    lines = [
        "# Vulnerability audit of the pinned stack",
        "",
        f"Written by `make audit` from `{constraints.name}` ({result.pins} pins, sha256 "
        f"{file_sha256(constraints)[:16]}). Source: {result.source}; data as of {result.as_of}.",
        f"Findings: {len(result.findings)}; without a recorded action: {untriaged}; "
        f"pins not audited: {len(result.not_audited)}.",
        "",
    ]
    if "offline" in result.source:
        lines += [
            f"A snapshot knows nothing published after {result.as_of}: where PyPI's vulnerability data is "
            "reachable, `make audit` (pip-audit) audits against today's.",
            "",
        ]
    if rows:
        lines += [
            "| package | pinned | advisory | aliases | fixed in | summary | action |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    else:
        lines.append("No advisory in the source affects a pinned version.")
    if result.not_audited:
        lines += ["", "Not audited (the source could not be asked about them):", ""]
        lines += [f"- {pin}: {_cell(reason, 200)}" for pin, reason in result.not_audited]
    return "\n".join(lines) + "\n", untriaged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cudalab.env.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraints", type=Path, default=Path("constraints.txt"))
    parser.add_argument("--actions", type=Path, default=Path("docs/audit-actions.toml"))
    parser.add_argument("--out", type=Path, default=Path("docs/audit.md"))
    parser.add_argument("--advisory-db", type=Path, help="an OSV advisory database on disk instead of PyPI")
    parser.add_argument(
        "--pip-audit", default="pip-audit", help="the pip-audit executable (default: on PATH)"
    )
    args = parser.parse_args(argv)
    try:
        pins = read_pins(args.constraints)
        actions = read_actions(args.actions)
        if args.advisory_db is not None:
            result = audit_offline(pins, args.advisory_db)
        else:
            result = audit_pip_audit(args.constraints, args.pip_audit)
        text, untriaged = render(result, actions, args.constraints)
    except AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, text)
    print(
        f"audit: {result.pins} pins against {result.source} (as of {result.as_of}): {len(result.findings)} "
        f"finding(s), {untriaged} untriaged, {len(result.not_audited)} not audited -> {args.out}"
    )
    for f in result.findings:
        print(f"  {f.package}=={f.version} {f.advisory} fixed in {', '.join(f.fixed) or 'none'}: "
              f"{action_for(f, actions) or 'UNTRIAGED'}")  # fmt: skip
    return 1 if untriaged else 0


if __name__ == "__main__":
    sys.exit(main())
