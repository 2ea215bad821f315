"""The vulnerability audit (``make audit``): OSV matching, pip-audit's report, triage, the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cudalab.env import audit
from cudalab.env.audit import AuditError, Pin

REPO = Path(__file__).resolve().parents[2]


def _record(ident: str, name: str, events: list[dict], versions: list[str] = (), **extra: object) -> dict:
    return {
        "id": ident,
        "modified": "2026-01-02T03:04:05Z",
        "summary": f"{ident} in {name}",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [
                    {
                        "type": "GIT",
                        "repo": "https://example.org/x",
                        "events": [{"introduced": "0"}, {"fixed": "abc"}],
                    },
                    {"type": "ECOSYSTEM", "events": events},
                ],
                "versions": list(versions),
            }
        ],
        **extra,
    }


@pytest.mark.parametrize(
    "version, affected",
    [
        ("1.2.20", True),  # inside [0, 1.2.21)
        ("1.2.21", False),  # the fix itself
        ("2.0.0", True),  # a second range [2, 2.2.10)
        ("2.2.10", False),
        ("3.1.3", True),  # [3.1, 3.1.4)
        ("3.1.4", False),
        ("4.0.0rc1", False),  # after every fix
    ],
)
def test_ecosystem_ranges_follow_osv_rules(version: str, affected: bool) -> None:
    """Several introduced/fixed pairs in one range (as PYSEC-2021-130 against jupyterlab has)."""
    events = [{"introduced": "0"}, {"fixed": "1.2.21"}, {"introduced": "2"}, {"fixed": "2.2.10"},
              {"introduced": "3.1"}, {"fixed": "3.1.4"}]  # fmt: skip
    hit, fixed = audit.osv_affects(_record("PYSEC-1", "jupyterlab", events), Pin("jupyterlab", version))
    assert hit is affected
    assert fixed == ("1.2.21", "2.2.10", "3.1.4")


def test_last_affected_versions_list_and_names() -> None:
    last = _record("X-1", "Some_Pkg", [{"introduced": "1.0"}, {"last_affected": "1.4"}])
    assert audit.osv_affects(last, Pin("some-pkg", "1.4"))[0], "last_affected is inclusive; names normalised"
    assert not audit.osv_affects(last, Pin("some.pkg", "1.4.1"))[0]
    assert not audit.osv_affects(last, Pin("some-pkg", "0.9"))[0], "below the first introduced"
    listed = _record("X-2", "odd", [], versions=["2024.1-custom"])
    assert audit.osv_affects(listed, Pin("odd", "2024.1-custom"))[0], "an explicit version needs no range"
    assert not audit.osv_affects(listed, Pin("other", "2024.1-custom"))[0], "another package's record"


def _pypa_db(root: Path, records: list[dict]) -> Path:
    yaml = pytest.importorskip("yaml")
    for record in records:
        folder = root / "vulns" / record["affected"][0]["package"]["name"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record['id']}.yaml").write_text(yaml.safe_dump(record))
    return root


def _constraints(path: Path, pins: str) -> Path:
    path.write_text("# pinned\n" + pins)
    return path


def test_offline_audit_finds_triages_and_writes_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db = _pypa_db(
        tmp_path / "db",
        [
            _record(
                "PYSEC-2026-1", "PyYAML", [{"introduced": "0"}, {"fixed": "6.0.4"}], aliases=["CVE-2026-1"]
            ),
            _record("PYSEC-2026-2", "torch", [{"introduced": "0"}, {"fixed": "2.0"}]),
            _record("PYSEC-2026-3", "numpy", [{"introduced": "0"}], withdrawn="2026-02-01T00:00:00Z"),
            _record("PYSEC-2026-4", "unpinned", [{"introduced": "0"}]),
        ],
    )
    constraints = _constraints(tmp_path / "constraints.txt", "PyYAML==6.0.3\ntorch==2.14.0\nnumpy==2.3.0\n")
    out = tmp_path / "audit.md"
    argv = ["--constraints", str(constraints), "--advisory-db", str(db), "--out", str(out),
            "--actions", str(tmp_path / "none.toml")]  # fmt: skip
    assert audit.main(argv) == 1, "a finding without a recorded action fails the audit"
    table = out.read_text()
    assert "| PyYAML | 6.0.3 | PYSEC-2026-1 | CVE-2026-1 | 6.0.4 |" in table and "**UNTRIAGED**" in table
    assert "PYSEC-2026-2" not in table, "torch 2.14 is past the fix"
    assert "PYSEC-2026-3" not in table, "a withdrawn advisory is not a finding"
    assert "3 pins" in table and "data as of 2026-01-02" in table
    # Triaged by its alias: the action lands in the table and the audit passes.
    actions = tmp_path / "actions.toml"
    actions.write_text('[advisories]\n"CVE-2026-1" = "upgrade to 6.0.4 in the next make constraints"\n')
    argv[-1] = str(actions)
    assert audit.main(argv) == 0
    assert "| upgrade to 6.0.4 in the next make constraints |" in out.read_text()
    assert "1 finding(s), 0 untriaged" in capsys.readouterr().out


def test_the_committed_table_is_from_the_current_pins() -> None:
    """docs/audit.md names the digest of the constraints.txt it audited: a change of pins needs a rerun."""
    table = (REPO / "docs" / "audit.md").read_text()
    digest = audit.file_sha256(REPO / "constraints.txt")[:16]
    assert f"sha256 {digest}" in table, "constraints.txt changed since docs/audit.md: run make audit"
    assert "UNTRIAGED" not in table


@pytest.mark.parametrize(
    "content, fault",
    [
        ("torch>=2.0\n", "not a 'name==version' pin"),
        ("# nothing\n", "no pins"),
    ],
)
def test_bad_constraints_are_refused_by_file_and_line(tmp_path: Path, content: str, fault: str) -> None:
    path = tmp_path / "c.txt"
    path.write_text(content)
    with pytest.raises(AuditError, match=re.escape(fault)) as info:
        audit.read_pins(path)
    assert str(path) in str(info.value)


def test_a_bad_record_or_actions_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db = tmp_path / "db" / "vulns" / "torch"
    db.mkdir(parents=True)
    (db / "BAD.yaml").write_text("id: [unclosed\n")
    constraints = _constraints(tmp_path / "c.txt", "torch==2.14.0\n")
    out = tmp_path / "audit.md"
    argv = ["--constraints", str(constraints), "--advisory-db", str(tmp_path / "db"), "--out", str(out)]
    assert audit.main([*argv, "--actions", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "BAD.yaml" in err and err.count("\n") == 1 and not out.exists(), "one line, no partial table"
    (db / "BAD.yaml").unlink()
    actions = tmp_path / "actions.toml"
    actions.write_text('[advisories]\n"PYSEC-1" = ""\n')
    assert audit.main([*argv, "--actions", str(actions)]) == 2
    assert "actions.toml" in capsys.readouterr().err and not out.exists()


def test_pip_audit_skips_are_not_clean() -> None:
    """pip-audit says "No known vulnerabilities found" (exit 0) when PyPI answered for no pin; here
    that is a failure, and a pin it skipped is listed as not audited, never as clean."""
    skipped = {"name": "absl-py", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    with pytest.raises(AuditError, match="could audit none of the 2 pins"):
        audit.parse_pip_audit({"dependencies": [skipped, {**skipped, "name": "aiohttp"}]}, pins=2)
    vuln = {"id": "GHSA-xxxx", "fix_versions": ["3.0"], "aliases": ["CVE-9"], "description": "bad"}
    report = {"dependencies": [skipped, {"name": "aiohttp", "version": "2.0", "vulns": [vuln]}]}
    result = audit.parse_pip_audit(report, pins=2)
    assert [(f.package, f.advisory, f.fixed, f.aliases) for f in result.findings] == [
        ("aiohttp", "GHSA-xxxx", ("3.0",), ("CVE-9",))
    ]
    assert [pin for pin, _ in result.not_audited] == ["absl-py==?"]
    text, untriaged = audit.render(result, {}, REPO / "constraints.txt")
    assert untriaged == 1 and "Not audited" in text and "absl-py" in text


def test_pip_audit_missing_is_one_line(tmp_path: Path) -> None:
    constraints = _constraints(tmp_path / "c.txt", "torch==2.14.0\n")
    with pytest.raises(AuditError, match="pip-audit not found"):
        audit.audit_pip_audit(constraints, str(tmp_path / "no-such-pip-audit"))
