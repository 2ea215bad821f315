"""The classifier end to end on the CPU: a training set made by the search and labelled by the truth,
training through the engine (one process and two under torchrun), export with a model card, scoring
FETCH files, and ``radio search --classify``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cudalab.cli import main
from cudalab.errors import ExitCode
from cudalab.radio.classify.dataset import DatasetConfig, build_dataset, read_index, recipe
from cudalab.radio.classify.score import DEFAULT_WEIGHTS, FORMAT, load_classifier
from cudalab.radio.constants import DM_CONSTANT
from cudalab.radio.simulate import planned_header
from tests.radio.test_classify_parts import write_yours

REPO = Path(__file__).resolve().parents[2]
#: A small set: 128 channels, DM 20-300, a third of the observations on a held-out background.
SMALL = ["--set", "nchans=128", "--set", "nchans_p=1.0", "--set", "dm_range=20,300", "--set", "snr_range=6,30",
         "--set", "split_every=3", "--set", "max_candidates=12", "--set", "holdout_fraction=0.3",
         "--set", "background_fraction=0"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("classify") / "set"
    holdout = shared_data / "radio" / "ascending_noise.fil"
    rc = main(
        [
            "radio",
            "dataset",
            str(out),
            "--observations",
            "6",
            "--seed",
            "4",
            "--holdout",
            str(holdout),
            *SMALL,
        ]
    )
    assert rc == ExitCode.OK
    return out


def _cfg(shared_data: Path, observations: int) -> DatasetConfig:
    return DatasetConfig(
        observations=observations, seed=4, holdout=(str(shared_data / "radio" / "ascending_noise.fil"),),
        nchans=(128,), nchans_p=(1.0,), dm_range=(20.0, 300.0), snr_range=(6.0, 30.0), split_every=3,
        max_candidates=12, holdout_fraction=0.3, background_fraction=0.0,
    )  # fmt: skip


def test_the_set_is_labelled_by_the_truth_and_split_by_observation(dataset: Path, shared_data: Path) -> None:
    meta = json.loads((dataset / "dataset.json").read_text())
    rows = list(csv.DictReader((dataset / "candidates.csv").open()))
    assert meta["candidates"] == len(rows) > 10
    entries = read_index(dataset)
    assert {e.split for e in entries} == {"train", "val", "test"}
    for obs in {e.observation for e in entries}:  # an observation lies in one split
        assert len({e.split for e in entries if e.observation == obs}) == 1
    assert all(e.split == "test" for e in entries if e.background == "ascending_noise.fil")
    assert any(e.background == "ascending_noise.fil" for e in entries)
    assert {e.label for e in entries} >= {0, 1}
    cfg = _cfg(shared_data, 6)
    headers = {e.observation: planned_header(recipe(cfg, e.observation).sim) for e in entries}
    for e, row in zip(entries, rows, strict=True):
        with h5py.File(e.path) as f:
            assert f.attrs["label"] == e.label
            assert f["data_freq_time"].shape == f["data_dm_time"].shape == (256, 256)
            assert f["data_freq_time"].dtype == np.float16
            name = f.attrs["filename"]  # the observation's, not a temporary folder's
            assert (name.decode() if isinstance(name, bytes) else name) == f"obs{e.observation:05d}.fil"
        if e.label == 1:  # a DM error that smears the pulse by at most twice the widest pulse's width
            assert e.kind in ("burst", "pulsar")
            h = headers[e.observation]  # the band it was made on (the holdout's: 32 x 1 MHz)
            smear_s = abs(e.dm - float(row["truth_dm"])) * DM_CONSTANT * (h.fmin_mhz**-2 - h.fmax_mhz**-2)
            assert smear_s <= 4 * 30e-3 or abs(e.dm - float(row["truth_dm"])) <= 0.1 * float(row["truth_dm"])
        else:
            assert e.kind in ("rfi", "rfi?", "noise", "ambiguous") and (e.label == -1) == (
                e.kind == "ambiguous"
            )
    # against the recipe (not the labeller's truth table): a real row names one of its observation's
    # injected DMs, and every burst injected at S/N >= 15 on a synthetic receiver has a real row
    by_obs = {e.observation: recipe(cfg, e.observation).sim for e in entries}
    for e, row in zip(entries, rows, strict=True):
        sim = by_obs[e.observation]
        dms = [b.dm for b in sim.bursts] if e.kind == "burst" else [p.dm for p in sim.pulsars]
        if e.label == 1:
            assert min(abs(float(row["truth_dm"]) - d) for d in dms) < 1e-6
    for obs, sim in by_obs.items():
        if sim.background:  # 32 x 1 MHz: a band-limited burst at low DM sweeps as little as an
            continue  # impulse of interference, and is masked as one (a limit of so narrow a band)
        for b in sim.bursts:
            if b.snr >= 15:
                found = [
                    float(r["truth_dm"])
                    for e, r in zip(entries, rows, strict=True)
                    if e.observation == obs and e.label == 1
                ]
                assert any(abs(d - b.dm) < 1e-6 for d in found), (obs, b)


def test_a_set_is_reproducible_from_its_seed_observation_by_observation(
    dataset: Path, shared_data: Path, tmp_path: Path
) -> None:
    cfg = _cfg(shared_data, 6)
    assert recipe(cfg, 2) == recipe(cfg, 2) and recipe(cfg, 2) != recipe(cfg, 1)
    # the first two observations of the same seed, built by two worker processes: the same rows as in
    # the larger set built by one
    meta = build_dataset(replace(cfg, observations=2), tmp_path / "two", workers=2)
    assert meta["workers"] == 2
    two = list(csv.DictReader((tmp_path / "two" / "candidates.csv").open()))
    six = [r for r in csv.DictReader((dataset / "candidates.csv").open()) if int(r["observation"]) < 2]
    assert two == six


def test_a_long_build_replaces_its_worker_pool_and_finishes(
    dataset: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one observation a worker before the pool is replaced: three pools in turn (Python 3.11's own
    # max_tasks_per_child hung here for good once its first worker retired)
    import cudalab.radio.classify.dataset as ds

    monkeypatch.setattr(ds, "TASKS_PER_WORKER", 1)
    build_dataset(_cfg(shared_data, 3), tmp_path / "three")
    assert _rows(tmp_path / "three") == _rows(dataset, 3)


def _rows(root: Path, below: int | None = None) -> list[dict[str, str]]:
    rows = list(csv.DictReader((root / "candidates.csv").open()))
    return [r for r in rows if below is None or int(r["observation"]) < below]


def test_a_stopped_build_resumes_and_a_set_grows_and_shrinks(
    dataset: Path, shared_data: Path, tmp_path: Path
) -> None:
    cfg = _cfg(shared_data, 3)
    out = tmp_path / "set"
    journal = tmp_path / ".set.building"

    def stop_after_one(done: int, total: int, counts: dict[str, int]) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # stopped after its first observation
        build_dataset(replace(cfg, observations=2), out, stop_after_one)
    assert not out.exists() and (journal / "rows" / "00000.json").is_file()
    meta = build_dataset(replace(cfg, observations=2), out)
    assert (meta["resumed"], meta["taken"], meta["built"]) == (1, 0, 1)
    assert _rows(out) == _rows(dataset, 2)
    assert not journal.exists() and not (tmp_path / ".set.building.lock").exists()
    first = {r["file"]: (out / r["file"]).stat().st_ino for r in _rows(out)}

    meta = build_dataset(cfg, out)  # grown: observations 0 and 1 kept (their files linked), 2 built
    assert (meta["resumed"], meta["taken"], meta["built"]) == (0, 2, 1)
    assert _rows(out) == _rows(dataset, 3)
    assert all((out / f).stat().st_ino == ino for f, ino in first.items())
    assert json.loads((out / "dataset.json").read_text())["config"]["observations"] == 3

    meta = build_dataset(replace(cfg, observations=1), out)  # cut: nothing built, files gone
    assert (meta["taken"], meta["built"]) == (1, 0)
    assert _rows(out) == _rows(dataset, 1)
    assert sorted(p.name for p in (out / "cands").iterdir()) == sorted(
        Path(r["file"]).name for r in _rows(dataset, 1)
    )
    # another recipe (another seed) replaces the set: nothing of it is taken
    meta = build_dataset(replace(cfg, observations=1, seed=5), out)
    assert (meta["taken"], meta["built"]) == (0, 1)
    assert _rows(out) != _rows(dataset, 1)


def test_bad_dataset_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    cases = [
        (["radio", "dataset", str(tmp_path / "other")], "not a cudalab output"),
        (["radio", "dataset", str(tmp_path / "d"), "--holdout", str(tmp_path / "none.fil")], "none.fil"),
        (["radio", "dataset", str(tmp_path / "d"), "--set", "snr_range=9,3"], "snr_range"),
        (
            ["train", "radio-classifier", "--data", str(tmp_path / "other"), "--runs", str(tmp_path)],
            "not a radio dataset",
        ),
    ]
    for argv, fault in cases:
        assert main(argv) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert fault in err and "Traceback" not in err, err
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier trained 4 epochs on the small set, exported with its card."""
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train", "radio-classifier", "--data", str(dataset), "--epochs", "4", "--runs", str(runs),
            "--run-id", "one", "--device", "cpu", "--no-progress", "--set", "data.batch_size=8"]  # fmt: skip
    assert main(argv) == ExitCode.OK
    out = runs / "export" / "small.pt"
    assert (
        main(["radio", "export-classifier", str(runs / "radio-classifier" / "one"), "--out", str(out)])
        == ExitCode.OK
    )
    return out


def test_training_runs_through_the_engine_and_exports_a_card(trained: Path) -> None:
    run = trained.parents[1] / "radio-classifier" / "one"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "radio-classifier"
    metrics = [json.loads(line) for line in (run / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval/val_ap" in m]
    assert len(evals) == 4 and all(0.0 <= m["eval/val_ap"] <= 1.0 for m in evals)
    card = json.loads(trained.with_suffix(".card.json").read_text())
    assert 0.0 < card["threshold"] <= 0.5 and card["test"]["candidates"] > 0
    assert (
        card["dataset"]["recipe"]["seed"] == 4 and card["training"]["command"]
    )  # (in-process: pytest's argv)
    import hashlib

    assert card["sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    md = (trained.parent / "MODEL_CARD.md").read_text()
    assert card["sha256"] in md and "Held-out test split" in md
    clf = load_classifier(trained)
    assert clf.threshold == card["threshold"] and clf.size == 64


def test_classify_scores_our_files_and_yours(trained: Path, dataset: Path, tmp_path: Path) -> None:
    ours = sorted((dataset / "cands").glob("*.h5"))[:5]
    rng = np.random.default_rng(0)
    yours = write_yours(tmp_path / "yours.h5", rng.normal(size=(256, 256)), rng.normal(size=(256, 256)))
    out = tmp_path / "scores.csv"
    rc = main(["radio", "classify", *map(str, ours), str(yours), "--classifier", str(trained), "--out", str(out),
               "--device", "cpu"])  # fmt: skip
    assert rc == ExitCode.OK
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["file"]).name for r in rows] == [p.name for p in ours] + ["yours.h5"]
    clf = load_classifier(trained)
    want, attrs = clf.score_files([*ours, yours])
    assert attrs[0]["label"] in (0, 1) and attrs[-1]["dm"] == 100.0
    np.testing.assert_allclose([float(r["prob"]) for r in rows], want, rtol=1e-5)
    assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)


def test_a_file_that_is_not_a_classifier_is_refused(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shared_data / "radio" / "ascending_noise.fil"
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    old = tmp_path / "v1.pt"
    torch.save({"format": FORMAT, "version": 1, "model": {"name": "fetchlike"}}, old)
    for f, fault in (
        (bad, "not a cudalab radio classifier"),
        (tmp_path / "junk.pt", "not a classifier file"),
        (old, "classifier file version 1; this cudalab reads version 2"),
    ):
        with pytest.raises(ValueError, match=fault):
            load_classifier(f)
        argv = ["radio", "search", str(data), "--classifier", str(f), "--out", str(tmp_path / "s")]
        assert main(argv) == ExitCode.USAGE
        assert fault in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_search_classify_ranks_filters_and_reports(trained: Path, tmp_path: Path) -> None:
    from cudalab.radio.simulate import demo_config, simulate

    fil = tmp_path / "demo.fil"
    simulate(replace(demo_config(), duration_s=4.0).with_nchans(128), fil)
    out = tmp_path / "search"
    clf = load_classifier(trained)
    rc = main(["radio", "search", str(fil), "--out", str(out), "--classifier", str(trained), "--min-prob", "auto",
               "--device", "cpu", "--dm-max", "700"])  # fmt: skip
    assert rc == ExitCode.OK
    rows = list(csv.DictReader((out / "candidates.csv").open()))
    probs = [float(r["prob"]) for r in rows]
    assert probs == sorted(probs, reverse=True) and all(p >= clf.threshold for p in probs)
    summary = json.loads((out / "summary.json").read_text())
    cls = summary["classifier"]
    assert cls["min_prob"] == clf.threshold and cls["scored"] - cls["removed"] == len(rows)
    assert (out / "plots" / "score_time.png").stat().st_size > 10_000
    assert "P(real)" in (out / "report.html").read_text()
    files = sorted((out / "cands").glob("*.h5"))
    assert len(files) == min(20, len(rows))
    for i, h5 in enumerate(files):  # the i-th file is the i-th candidate, its cutout the classifier's
        with h5py.File(h5) as f:
            assert float(f.attrs["prob"]) == pytest.approx(probs[i], rel=1e-6)
            assert float(f.attrs["dm"]) == pytest.approx(float(rows[i]["dm"]))
            if i == 0:
                from cudalab.radio.io.observation import open_observation
                from cudalab.radio.pipeline.config import default_config
                from cudalab.radio.single_pulse.candidates import read_candidates
                from cudalab.radio.single_pulse.cutouts import make_cutout

                cand = read_candidates(out / "candidates.csv")[0]
                fresh = make_cutout(open_observation(fil), cand, k_dm=default_config().k_dm,
                                    rfi=default_config().rfi, device=torch.device("cpu"))  # fmt: skip
                np.testing.assert_allclose(f["data_freq_time"][...], fresh.freq_time, atol=1e-5)
    # --no-classify: the search alone, no probability
    rc = main(
        [
            "radio",
            "search",
            str(fil),
            "--out",
            str(out),
            "--no-classify",
            "--device",
            "cpu",
            "--dm-max",
            "700",
        ]
    )
    assert rc == ExitCode.OK
    assert "prob" in next(csv.DictReader((out / "candidates.csv").open()))
    assert json.loads((out / "summary.json").read_text())["classifier"] is None


def test_two_gloo_processes_under_torchrun(dataset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cudalab",
         "train", "radio-classifier", "--data", str(dataset), "--epochs", "2", "--runs", str(tmp_path), "--run-id",
         "ddp", "--device", "cpu", "--no-progress", "--set", "data.batch_size=8"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "radio-classifier" / "ddp"
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["val_ap_mean"] <= 1.0
    assert (run / "seed-0" / "checkpoints" / "best.pt").is_file()


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no classifier shipped in this checkout")
def test_the_shipped_classifier_loads_offline_with_its_card() -> None:
    import hashlib

    clf = load_classifier()
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".card.json").read_text())
    assert card["sha256"] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    assert clf.threshold == card["threshold"] and clf.name == card["model"]["name"]
    assert DEFAULT_WEIGHTS.stat().st_size < 2_000_000  # small enough to live in the package
    p = clf.score_planes(np.zeros((3, 2, clf.size, clf.size), dtype=np.float32))
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
