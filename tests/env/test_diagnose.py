"""Every cause the doctor knows, diagnosed from a recorded (fixture) machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab.env.diagnose import diagnose, verdict
from cudalab.env.doctor import run_doctor
from cudalab.env.facts import Facts
from cudalab.errors import CudalabError, ExitCode
from tests.env.fixtures.build import CASES, HERE, build, render


def test_fixture_files_match_their_builder() -> None:
    for name in CASES:
        path = HERE / f"{name}.json"
        assert path.read_text(encoding="utf-8") == render(name), (
            f"{path} is stale: run tests/env/fixtures/build.py"
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_cause_is_found_with_its_fix(name: str) -> None:
    case = CASES[name]
    report = run_doctor(HERE / f"{name}.json")
    by_check = {f.check: f for f in report.findings}
    assert report.verdict.state == case.state, report.verdict.headline
    if case.check is None:
        assert not [f for f in report.findings if f.status in ("fail", "warn")], report.findings
        assert report.exit_code() == ExitCode.OK
        return
    finding = by_check.get(case.check)
    assert finding is not None, f"{case.check} not among {sorted(by_check)}"
    assert finding.status == case.status
    assert finding.evidence
    for text in case.fix_contains:
        assert finding.fix is not None and text in finding.fix, (text, finding.fix)
    if case.status == "fail":
        # The cause is the *first* failure, so the verdict names it rather than its consequences.
        first_fail = next(f for f in report.findings if f.status == "fail")
        assert report.verdict.cause == first_fail
        assert report.findings.index(first_fail) <= report.findings.index(finding)
        assert report.exit_code() == ExitCode.PROBLEM
    else:
        assert report.exit_code() == ExitCode.OK


@pytest.mark.parametrize(
    ("name", "first_fail"),
    [
        ("container_no_gpus", "container-no-gpus"),
        ("no_driver", "no-driver"),
        ("driver_too_old", "driver-too-old"),
        ("fabric_manager", "fabric-manager"),
        ("driver_lib_mismatch", "driver-lib-mismatch"),
        ("mig_no_instances", "mig-no-instances"),
        ("visible_devices_empty", "visible-devices"),
    ],
)
def test_root_cause_precedes_its_consequences(name: str, first_fail: str) -> None:
    report = run_doctor(HERE / f"{name}.json")
    assert report.verdict.cause is not None
    assert report.verdict.cause.check == first_fail
    assert first_fail in report.verdict.headline or report.verdict.cause.evidence in report.verdict.headline


def test_healthy_h100_is_all_green_and_reports_libraries_as_loaded() -> None:
    report = run_doctor(HERE / "h100_healthy.json")
    statuses = {f.check: f.status for f in report.findings}
    assert set(statuses.values()) <= {"pass", "info"}
    assert statuses["torch-cuda"] == "pass"
    assert statuses["driver-compat"] == "pass"
    assert {"smoke-matmul", "smoke-conv", "smoke-autocast", "smoke-nccl"} <= set(statuses)
    torch_row = next(f for f in report.findings if f.check == "torch-cuda")
    assert "cuDNN 91300" in torch_row.evidence and "NCCL 2.27.7" in torch_row.evidence
    assert report.verdict.gpus == 1


def test_driver_too_old_names_the_driver_and_the_variants_it_runs() -> None:
    report = run_doctor(HERE / "driver_too_old.json")
    f = next(f for f in report.findings if f.check == "driver-too-old")
    assert "535.183.01" in f.evidence and "CUDA <= 12.2" in f.evidence
    # 535 runs no current variant natively (cu126 needs 560.28.03), cu128 through CUDA 12 minor-version compat.
    assert f.fix is not None and "minor-version compatibility" in f.fix
    assert "cu130" not in f.fix


def test_the_report_round_trips_through_json(tmp_path: Path) -> None:
    report = run_doctor(HERE / "forward_compat.json")
    out = tmp_path / "report.json"
    out.write_text(json.dumps(report.to_dict()))
    again = run_doctor(out)  # a whole report, not only its facts, is accepted
    assert [f.check for f in again.findings] == [f.check for f in report.findings]
    assert again.verdict == report.verdict


def test_findings_are_a_pure_function_of_the_facts() -> None:
    facts = Facts.from_dict(build("nvml_unknown_error"))
    a, b = diagnose(facts), diagnose(facts)
    assert a == b
    assert verdict(facts, a) == verdict(facts, b)


def test_unknown_probes_and_missing_keys_do_not_break_diagnosis() -> None:
    data = build("h100_healthy")
    data["probes"]["from_the_future"] = {"ok": True, "value": {"x": 1}, "source": "later cudalab"}
    del data["probes"]["shm"]
    del data["probes"]["torch"]["value"]["loaded_libs"]
    findings = diagnose(Facts.from_dict(data))
    assert not [f for f in findings if f.status == "fail"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "top level is not an object"),
        ('{"probes": 3}', "no 'probes' object"),
        ('{"probes": {"os": 1}}', "probe 'os' is malformed"),
    ],
)
def test_bad_facts_files_fail_with_one_line_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "facts.json"
    path.write_text(content)
    with pytest.raises(CudalabError) as exc:
        Facts.load(path)
    assert str(path) in str(exc.value) and message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert exc.value.code == ExitCode.USAGE
