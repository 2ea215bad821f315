"""The GPU acceptance driver on the CPU, with stand-in steps: plan, budget, timeouts, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
from gpu_steps import STEPS, Step  # noqa: E402

PY = sys.executable


def _step(name: str, code: str, *, estimate: float = 1, cap: float = 30, **kw: object) -> Step:
    return Step(
        name=name,
        what=f"stand-in {name}",
        argv=("{python}", "-c", code),
        estimate_s=estimate,
        cap_s=cap,
        **kw,
    )  # type: ignore[arg-type]


def test_the_plan_fits_the_budget_on_an_h100_by_its_estimates() -> None:
    assert sum(s.estimate_s for s in STEPS) <= 480
    assert all(0 < s.estimate_s <= s.cap_s for s in STEPS)
    assert [s.name for s in STEPS][:2] == ["pytest-gpu", "radio-fast"]  # the order the issue asks for
    out = subprocess.run(
        [PY, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "estimated total 480 s of 480 s" in out
    for s in STEPS:
        assert f"- {s.name}: ~{s.estimate_s:.0f} s (cap {s.cap_s:.0f} s)" in out
    assert "over budget" not in out


def test_steps_run_in_order_with_their_figures_and_failures(tmp_path: Path) -> None:
    record = json.dumps({"benchmark": "x", "a": 1.5, "b": 2})
    steps = [
        _step("ok", f"print({record!r}); print('{{\"other\": 1}}')", shown=("a", "b")),
        _step("broken", "import sys; print('it broke'); sys.exit(3)"),
        _step("needs", "pass", needs=("no_such_module_for_cudalab",)),
        _step("data", "pass", data=("nowhere",)),
        _step(
            "tests",
            "print('FAILED tests/x.py::test_y - assert 1 == 2'); print('2 passed, 1 failed, 3 deselected in 0.5s')",
            shown=("pytest",),
        ),
    ]
    results = gpu_check.run(
        steps, tmp_path, 100, python=PY, data=tmp_path, environment={"gpus": [{"name": "Stand-in GPU"}]}
    )
    assert [r.status for r in results] == ["passed", "failed", "skipped", "skipped", "passed"]
    assert results[0].figures["records"][0]["a"] == 1.5
    assert results[1].returncode == 3 and "it broke" in results[1].reason
    assert "no_such_module_for_cudalab" in results[2].reason and "nowhere" in results[3].reason
    assert results[4].figures == {
        "counts": {"passed": 2, "failed": 1, "deselected": 3},
        "failures": ["tests/x.py::test_y"],
    }
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in doc["steps"]] == ["ok", "broken", "needs", "data", "tests"]
    assert doc["environment"]["gpus"][0]["name"] == "Stand-in GPU" and doc["budget_s"] == 100
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("GPU acceptance (") and "Stand-in GPU" in md
    assert "| ok | passed |" in md and "a=1.5 b=2" in md and '"other"' not in md
    assert "| tests | passed |" in md and "2 passed, 1 failed, 3 deselected; failed: tests/x.py::test_y" in md
    assert "| needs | skipped (missing Python packages: no_such_module_for_cudalab) |" in md
    assert (tmp_path / "logs" / "broken.log").read_text().strip() == "it broke"


def test_a_hung_step_is_stopped_with_everything_it_started_and_keeps_what_it_printed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import json, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print(json.dumps({'a': 1, 'b': 2}), flush=True)\n"
        "time.sleep(120)\n"
    )
    t0 = time.monotonic()
    (result,) = gpu_check.run([_step("hang", code, cap=3, shown=("a", "b"))], tmp_path, 60, python=PY)
    assert result.status == "timeout" and "stopped after 3 s" in result.reason
    assert time.monotonic() - t0 < 3 + gpu_check.KILL_GRACE_S + 5
    assert result.figures["records"] == [{"a": 1, "b": 2}]  # printed before the hang: not lost
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)  # the grandchild went too


def _state(pid: int) -> str:
    try:
        return next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")
        )
    except (OSError, StopIteration):
        return "Z"


def test_a_step_that_no_longer_fits_the_budget_is_skipped_and_caps_shrink_to_what_is_left(
    tmp_path: Path,
) -> None:
    ticks = iter([0.0, 0.0, 6.0, 9.5, 9.5])  # start, then before each step

    steps = [
        _step("first", "pass", estimate=5, cap=50),
        _step("second", "pass", estimate=5, cap=50),
        _step("third", "pass", estimate=1, cap=50),
    ]
    results = gpu_check.run(steps, tmp_path, 10, python=PY, clock=lambda: next(ticks))
    assert [r.status for r in results] == ["passed", "skipped", "skipped"]
    assert results[1].reason == "needs ~5 s, 4 s of the budget left"
    assert results[2].reason == "needs ~1 s, 0 s of the budget left"
    # the report is rewritten after every step: what finished is never lost
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"][0]["status"] == "passed"


def test_the_command_says_in_one_line_why_it_cannot_run(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever this machine has
        return subprocess.run(
            [PY, str(REPO / "benchmarks" / "gpu_check.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    for args, message in [
        (["--out", str(tmp_path / "o")], "no usable CUDA GPU here"),
        (["--only", "nosuchstep", "--dry-run"], "--only names a step that does not exist"),
        (["--budget-s", "0", "--dry-run"], "--budget-s must be > 0"),
        ([], "--out DIR is required"),
    ]:
        r = run(*args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", [s.name for s in STEPS])
def test_every_step_names_a_script_that_exists(name: str) -> None:
    step = next(s for s in STEPS if s.name == name)
    scripts = [a for a in step.argv if a.endswith(".py")]
    assert all((REPO / s).is_file() for s in scripts)
