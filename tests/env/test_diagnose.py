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


def _healthy() -> dict:
    return json.loads((HERE / "h100_healthy.json").read_text())


def _with(path: list[str], value: object) -> dict:
    data = _healthy()
    node = data.get("facts", data)
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"probes": {}, "x": ' + "[" * 50 + "]" * 50 + "}", "nested more than 32 deep"),
        ('{"probes": {}, "n": ' + "9" * 5000 + "}", "not a doctor report"),
        ("\udcff", "not UTF-8"),
    ],
)
def test_hostile_facts_files_are_one_line_errors(tmp_path: Path, blob: str, message: str) -> None:
    path = tmp_path / "facts.json"
    path.write_bytes(blob.encode("utf-8", "surrogateescape"))
    with pytest.raises(CudalabError, match=message) as exc:
        run_doctor(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_a_facts_file_too_large_or_not_a_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(17 << 20)  # sparse: 17 MiB of nothing
    for path, message in (
        (big, "larger than 16 MiB"),
        (tmp_path, "is a folder"),
        (Path("/dev/zero"), "not a regular file"),
    ):
        with pytest.raises(CudalabError, match=message):
            Facts.load(path)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["probes", "torch", "ok"], "yes", "'ok': true or false"),
        (["probes", "torch", "elapsed_s"], "slow", "elapsed_s must be a number"),
        (["probes", "torch", "source"], 7, "source and error must be strings"),
        (["probes", "driver", "value", "version"], 580, "version must be a string or null"),
        (["probes", "nvml", "value", "gpus"], {"name": "H100"}, "gpus must be a list"),
        (
            ["probes", "torch", "value", "cuda_available"],
            "true",
            "cuda_available must be true or false or null",
        ),
        (["probes", "libcuda", "value", "cu_init"], True, "cu_init must be an integer or null"),
        (["probes", "pci", "value"], [1, 2], "value must be an object or null"),
        (["schema"], 99, "schema 99 is not one this doctor reads"),
        (["meta"], "today", "meta must be an object"),
    ],
)
def test_facts_of_the_wrong_types_are_refused_naming_the_field(
    tmp_path: Path, path: list[str], value: object, message: str
) -> None:
    file = tmp_path / "facts.json"
    file.write_text(json.dumps(_with(path, value)))
    with pytest.raises(CudalabError, match=message) as exc:
        run_doctor(file)
    assert str(file) in str(exc.value)


def test_nested_values_of_a_shape_no_doctor_wrote_are_one_line(tmp_path: Path) -> None:
    """Items of the wrong type are named; deeper than the checked fields, the diagnosis itself meets the
    wrong shape, and that is one line too."""
    file = tmp_path / "facts.json"
    file.write_text(json.dumps(_with(["probes", "nvml", "value", "gpus"], [7, "x"])))
    with pytest.raises(CudalabError, match="gpus must be a list of objects"):
        run_doctor(file)
    gpus = _healthy()["probes"]["nvml"]["value"]["gpus"]
    file.write_text(json.dumps(_with(["probes", "nvml", "value", "gpus"], [{**gpus[0], "mig": "on"}])))
    with pytest.raises(CudalabError, match="a value has the wrong shape") as exc:
        run_doctor(file)
    assert str(file) in str(exc.value) and "\n" not in str(exc.value)


def test_the_cli_reports_hostile_facts_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cudalab.cli import main

    file = tmp_path / "deep.json"
    file.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["doctor", "--facts", str(file)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply" in err and "Traceback" not in err
