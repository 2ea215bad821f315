"""The benchmark scripts themselves stay runnable (their --quick modes, on whatever device is here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, **env: str) -> list[dict]:
    """Run a benchmark script as a user would and return the JSON records it printed."""
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env},
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert records
    return records


@pytest.mark.parametrize("script", ["doctor_latency.py", "bench_vs_hand.py"])
def test_benchmark_quick_prints_measured_reference_and_ratio(script: str) -> None:
    first = _run(script, "--quick")[0]
    if script == "doctor_latency.py":
        assert first["reference_s"] > 0 and first["doctor_s"] > 0
        assert first["ratio_to_reference"] == pytest.approx(
            first["doctor_s"] / first["reference_s"], rel=0.01
        )
    else:
        assert first["by_hand"] > 0 and first["cudalab_bench"] > 0
        assert first["ratio"] == pytest.approx(first["cudalab_bench"] / first["by_hand"], rel=0.01)


def test_radio_injection_quick_reports_recall_against_the_goal(shared_data: Path) -> None:
    records = _run("radio_injection.py", "--quick", "--device", "cpu", CUDALAB_DATA=str(shared_data))
    inj = {x["case"]: x for x in records if x["benchmark"] == "radio_injection"}
    assert set(inj) == {"synthetic", "apertif"}
    synth = inj["synthetic"]
    assert synth["reference_value"] == 0.98 and synth["ratio"] == pytest.approx(
        synth["recall_snr_ge_10"] / 0.98
    )
    assert (
        synth["detected_snr_ge_10"] == 1.0
    )  # every S/N >= 10 burst is found; DM accuracy is reported beside it
    study = synth["snr_study"]  # recovered over ideal S/N, ours and heimdall's, on white noise alike
    assert 0.8 < study["median_ours_over_ideal"] < 1.2
    assert abs(study["median_heimdall_over_ideal"] - study["median_ours_over_ideal"]) < 0.1
    # the physical reference beside the goal: what an estimator at the Cramer-Rao bound would reach
    assert 0.5 < synth["ideal_recall_snr_ge_10"] <= 1.0
    assert synth["ratio_to_ideal"] == pytest.approx(
        synth["recall_snr_ge_10"] / synth["ideal_recall_snr_ge_10"]
    )
    assert all(m["cramer_rao"] > 0 for m in synth["misses"])
    noise = next(x for x in records if x["benchmark"] == "radio_false_alarms")
    assert noise["candidates_ge_8"] == 0


def test_engine_overhead_reports_both_loops_and_the_ratio(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch_geometric")
    row = _run(
        "engine_overhead.py", "--data-root", str(shared_data / "planetoid"), "--steps", "24", "--repeats", "1"
    )[0]
    assert row["bare_step_ms"] > 0 and row["engine_step_ms"] > 0
    assert row["overhead_pct"] == pytest.approx(
        100 * (row["engine_step_ms"] / row["bare_step_ms"] - 1), abs=0.05
    )


def test_graph_table_prints_a_row_per_config_with_its_target(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch_geometric")
    rows = _run(
        "graph_table.py",
        "--data-root",
        str(shared_data / "planetoid"),
        "--runs",
        str(tmp_path),
        "--models",
        "gcn",
        "--datasets",
        "Cora,CiteSeer",
        "--seeds",
        "2",
        "--epochs",
        "3",
    )
    assert [r["config"] for r in rows] == ["gcn/Cora", "gcn/CiteSeer"]
    assert [r["target"] for r in rows] == [81.0, 70.0]
    assert all(r["seeds"] == 2 and 0 <= r["test_acc_mean"] <= 100 and r["epoch_time_ms"] > 0 for r in rows)


def test_radio_search_quick_compares_methods_in_one_run() -> None:
    printed = _run("radio_search.py", "--quick", "--device", "cpu")
    records = [r for r in printed if r["benchmark"] == "radio_search"]
    # printed as each method finishes, fastest first; the naive reference, slowest, last
    assert [r["method"] for r in records] == ["subband", "direct", "naive"]
    by_method = {r["method"]: r for r in records}
    naive = by_method["naive"]["realtime_factor_search"]
    vs = [r for r in printed if r["benchmark"] == "radio_search_vs_naive"]
    assert [r["method"] for r in vs] == ["subband", "direct", "naive"]
    for r in vs:
        assert r["naive_realtime_factor"] == pytest.approx(naive)
        assert r["ratio_to_naive"] == pytest.approx(by_method[r["method"]]["realtime_factor_search"] / naive)
    for r in records:
        assert r["realtime_factor_dedisp"] >= r["realtime_factor_search"] > 0
        assert r["recall"] is not None and r["injected"] >= 3
        assert r["floor_realtime_factor"] is None  # no datasheet FP32 rate for a CPU
        assert r["kernel"] == "torch" and r["peak_device_gb"] is None and r["memory_bound_gb"] > 0
    assert by_method["subband"]["adds_per_s_of_data"] < by_method["direct"]["adds_per_s_of_data"]
    assert by_method["direct"]["adds_per_s_of_data"] <= by_method["naive"]["adds_per_s_of_data"]


def test_radio_classifier_quick_reports_recall_reduction_and_the_demo(tmp_path: Path) -> None:
    records = _run("radio_classifier.py", "--quick", "--device", "cpu", "--out", str(tmp_path))
    model = next(x for x in records if x["benchmark"] == "radio_classifier")
    assert model["reference_recall_snr_ge_10"] == 0.99 and model["test_candidates"] > 0
    assert model["candidates_per_s_256x256"] > 0
    assert model["ratio_rate"] == pytest.approx(model["candidates_per_s_256x256"] / 20_000, abs=1e-4)
    demo = next(x for x in records if x["benchmark"] == "radio_classifier_demo")
    assert demo["bursts_found"] == 5 and 0 <= demo["bursts_kept"] <= 5 and demo["other_candidates"] > 0
    assert (tmp_path / "radio_classifier.png").stat().st_size > 10_000


def test_protein_mlm_quick_compares_with_hugging_face() -> None:
    pytest.importorskip("transformers")
    (rec,) = [
        x for x in _run("protein_mlm.py", "--quick", "--device", "cpu") if x["benchmark"] == "protein_mlm"
    ]
    assert rec["ours_tokens_per_s"] > 0 and rec["hf_tokens_per_s"] > 0
    assert rec["ratio_ours_to_hf"] == pytest.approx(
        rec["ours_tokens_per_s"] / rec["hf_tokens_per_s"], rel=0.01
    )


def test_vision_train_quick_compares_the_engine_with_a_plain_loop(shared_data: Path) -> None:
    records = {r["benchmark"]: r for r in _run("vision_train.py", "--quick", "--device", "cpu")}
    ours, ref = records["vision_ours"], records["vision_reference"]
    assert ours["images_per_s"] > 0 and ref["images_per_s"] > 0 and ours["train_images"] == 500
    assert ours["ratio_images_per_s"] == pytest.approx(ours["images_per_s"] / ref["images_per_s"], rel=1e-6)
    equal = records["vision_equal_time"]
    assert equal["fast_minus_resnet18"] == pytest.approx(equal["fast_val_acc"] - equal["resnet18_val_acc"])
    assert records["vision_fast"]["target"] == 0.905


def test_serve_load_quick_loads_both_servers_without_errors(shared_data: Path) -> None:
    records = _run("serve_load.py", "--quick")
    rows = [r for r in records if r["benchmark"] == "serve_load"]
    assert {(r["server"], r["concurrency"]) for r in rows} == {
        (s, c) for s in ("cudalab", "reference") for c in (1, 8)
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    (summary,) = [r for r in records if r["benchmark"] == "serve_load_summary"]
    assert set(summary["throughput_ratio"]) == {"1", "8"} and summary["errors"] == {
        "cudalab": 0,
        "reference": 0,
    }


def test_radio_periodic_quick_reports_recovery_per_method() -> None:
    records = _run("radio_periodic.py", "--quick")
    cases = [r for r in records if r["benchmark"] == "radio_periodic_case"]
    assert len(cases) == 2 and all(r["ours_found"] and 0.5 < r["ours_snr"] / r["snr"] < 1.3 for r in cases)
    (summary,) = [r for r in records if r["benchmark"] == "radio_periodic" and r["method"] == "ours"]
    assert summary["found_fraction"] == 1.0 and summary["realtime_factor"] > 0
    # the whole pipeline on a simulated filterbank: the pulsar found at its DM, near its true fold S/N
    (fb,) = [r for r in records if r["benchmark"] == "radio_periodic_filterbank"]
    assert fb["found"] and abs(fb["fold_dm"] - fb["dm"]) <= 0.1 * fb["dm"]
    assert 0.7 < fb["fold_snr"] / fb["true_fold_snr"] < 1.3 and fb["true_fold_snr"] < fb["snr"] * 1.2
    goals = {r["input"]: r for r in records if r["benchmark"] == "radio_periodic_goal"}
    assert set(goals) == {"time series", "filterbank"} and all(
        g["found_fraction"] == 1.0 for g in goals.values()
    )


def test_radio_dm_accuracy_quick_reports_error_against_the_cramer_rao_bound() -> None:
    records = _run("radio_dm_accuracy.py", "--quick")
    assert len(records) == 2
    for r in records:
        assert r["reference"].startswith("Cramer-Rao") and r["cramer_rao"] > 0
        assert r["ratio"] == pytest.approx(r["rms_error"] / r["cramer_rao"], rel=0.01)
        # an estimator cannot beat the bound by much on 4 trials, nor be far worse than it
        assert 0.2 < r["ratio"] < 3.0
        assert 0.0 <= r["within_tolerance"] <= 1.0 and 0.5 < r["within_tolerance_at_bound"] <= 1.0
