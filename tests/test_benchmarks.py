"""The benchmark scripts themselves stay runnable (their --quick modes, on whatever device is here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["doctor_latency.py", "bench_vs_hand.py"])
def test_benchmark_quick_prints_measured_reference_and_ratio(script: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert records
    first = records[0]
    ratio_key = "ratio_to_reference" if script == "doctor_latency.py" else "ratio"
    assert first[ratio_key] > 0
    if script == "doctor_latency.py":
        assert first["reference_s"] > 0 and first["doctor_s"] > 0
    else:
        assert first["by_hand"] > 0 and first["cudalab_bench"] > 0
