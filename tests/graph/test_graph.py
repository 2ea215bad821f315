"""GNN node classification on real Planetoid data: accuracy, sampler, crash-safety, the CLI and runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

pytest.importorskip("torch_geometric")

from cudalab.cli import main
from cudalab.graph.data import load_planetoid
from cudalab.graph.sampler import NeighborSampler
from cudalab.graph.task import GraphConfig, preset, train_graph
from cudalab.runs.config import update
from cudalab.runs.rundir import RunDir, read_metrics
from cudalab.train.checkpoint import CheckpointDir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def planetoid(shared_data: Path) -> Path:
    return shared_data / "planetoid"


def _preset(model: str, planetoid: Path, **train: object) -> GraphConfig:
    """A model's published preset on Cora, read from ``planetoid``, with engine overrides, quiet."""
    return update(
        preset(model, "Cora"),  # type: ignore[arg-type]
        {"data": {"root": str(planetoid)}, "train": {"progress": False, "tensorboard": False, **train}},
    )


def test_gcn_on_cora_reaches_78_percent_in_100_epochs(planetoid: Path, tmp_path: Path) -> None:
    cfg = _preset("gcn", planetoid, max_epochs=100)
    run, summary = train_graph(cfg, runs_root=tmp_path, console=Console(quiet=True))
    assert summary["test_acc_mean"] >= 0.78
    seed = summary["seeds"][0]
    assert seed["val_acc"] >= 0.75 and seed["epochs"] == 100
    assert (run.path / "seed-0" / "checkpoints" / "best.pt").is_file()


def test_a_fixed_seed_gcn_run_logs_the_numbers_recorded_before_the_run_layer(
    planetoid: Path, tmp_path: Path
) -> None:
    """The run layer's refactor (issue 13) changed no number: 20 deterministic GCN epochs log the
    records that the engine before it logged with the same command (tests/golden/, recorded then).
    Floats agree to 1e-6 relative, so a CPU with other vector units may round differently."""
    args = ["train", "graph", "--data-root", str(planetoid), "--runs", str(tmp_path), "--run-id", "g"]
    assert (
        main(
            [*args, "--epochs", "20", "--deterministic", "--no-progress", "--set", "train.tensorboard=false"]
        )
        == 0
    )
    got = [
        {k: v for k, v in r.items() if k != "time_s"}
        for r in read_metrics(tmp_path / "graph" / "g" / "seed-0" / "metrics.jsonl")
    ]
    want = [
        json.loads(line)
        for line in (REPO / "tests" / "golden" / "gcn_cora_20epochs_metrics.jsonl").read_text().splitlines()
    ]
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g == {k: pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for k, v in w.items()}


def test_appnp_drops_edges_afresh_at_every_step() -> None:
    """Each of the K steps drops out the normalised weights, never the previous step's survivors
    (PyG's APPNP layer, <= 2.8.1, compounds them: pyg-team/pytorch_geometric#10783)."""
    from unittest import mock

    import torch.nn.functional as F  # noqa: N812
    from torch_geometric.nn import APPNP as PygAPPNP  # noqa: N811

    from cudalab.graph.models import PPRPropagation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    edges = torch.randint(0, 40, (2, 200), generator=g)
    prop = PPRPropagation(k=6, alpha=0.1, dropout=0.5)
    seen: list[torch.Tensor] = []
    real_dropout = F.dropout  # the patch below replaces it on torch.nn.functional itself

    def spy(w: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        seen.append(w.clone())
        return real_dropout(w, p, training)

    with mock.patch("cudalab.graph.models.F.dropout", side_effect=spy):
        prop.train()(x, edges)
    assert len(seen) == 6 and all(torch.equal(w, seen[0]) for w in seen)
    assert torch.allclose(prop.eval()(x, edges), PygAPPNP(6, 0.1).eval()(x, edges), atol=1e-6)


def test_appnp_learns_on_cora_with_the_papers_dropout(planetoid: Path, tmp_path: Path) -> None:
    cfg = _preset("appnp", planetoid, max_epochs=100, patience=0)
    _, summary = train_graph(cfg, runs_root=tmp_path, console=Console(quiet=True))
    assert summary["test_acc_mean"] >= 0.75  # the compounded edge dropout left it at chance (~0.3)


def test_planetoid_public_split(planetoid: Path) -> None:
    for name, nodes, classes in (("Cora", 2708, 7), ("CiteSeer", 3327, 6)):
        d = load_planetoid(planetoid, name, download=False)  # type: ignore[arg-type]
        assert d.num_nodes == nodes and int(d.y.max()) + 1 == classes
        assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (
            classes * 20,
            500,
            1000,
        )


def test_neighbor_sampler_invariants(planetoid: Path) -> None:
    d = load_planetoid(planetoid, "Cora", download=False)
    edges = set(map(tuple, d.edge_index.t().tolist()))
    fanouts = (5, 3)
    sampler = NeighborSampler(d.edge_index, d.num_nodes, fanouts)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        seeds = torch.randperm(d.num_nodes, generator=g)[:64]
        sub = sampler.sample(seeds, g)
        assert torch.equal(sub.n_id[:64], seeds)  # seed nodes first, in order
        assert sub.n_id.unique().numel() == sub.n_id.numel()  # each node once
        src, dst = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
        assert all((s, t) in edges for s, t in zip(src.tolist(), dst.tolist(), strict=True))  # edges exist
        pairs = list(zip(src.tolist(), dst.tolist(), strict=True))
        assert len(set(pairs)) == len(pairs)  # without replacement
        # fan-out: a seed gets exactly min(degree, 5) sampled in-edges; a node first reached at hop 1
        # (a sampled neighbour of a seed that is not a seed) exactly min(degree, 3); later nodes none
        indeg = torch.bincount(sub.edge_index[1], minlength=sub.n_id.numel())
        full = torch.bincount(d.edge_index[1], minlength=d.num_nodes)
        assert torch.all(indeg[:64] == torch.clamp(full[seeds], max=5))
        to_seeds = sub.edge_index[0][sub.edge_index[1] < 64]
        hop1 = torch.unique(to_seeds[to_seeds >= 64])
        assert torch.all(indeg[hop1] == torch.clamp(full[sub.n_id[hop1]], max=3))
        later = torch.ones(sub.n_id.numel(), dtype=torch.bool)
        later[:64] = False
        later[hop1] = False
        assert later.any() and torch.all(indeg[later] == 0)
    everything = NeighborSampler(d.edge_index, d.num_nodes, (-1,)).sample(torch.tensor([0, 1]))
    assert everything.edge_index.shape[1] == int(full[0] + full[1])


def test_sampled_sage_trains_on_minibatches(planetoid: Path, tmp_path: Path) -> None:
    cfg = _preset("sage", planetoid, max_epochs=8)
    assert cfg.data.sampled
    _, summary = train_graph(cfg, runs_root=tmp_path, console=Console(quiet=True))
    assert summary["seeds"][0]["epochs"] == 8
    assert summary["test_acc_mean"] > 0.6  # 8 epochs x 5 mini-batches; random guessing gives 0.14


# -- SIGKILL and resume ----------------------------------------------------------------------------


def _cli(planetoid: Path, runs: Path, run_id: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cudalab",
        "train",
        "graph",
        "--data-root",
        str(planetoid),
        "--runs",
        str(runs),
        "--run-id",
        run_id,
        "--epochs",
        "30",
        "--deterministic",
        "--no-progress",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.keep_last=2",
        "--set",
        "train.tensorboard=false",
    ]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    ck = CheckpointDir(run / "seed-0" / "checkpoints")
    loaded, skipped = ck.newest_valid()
    assert loaded is not None and not skipped
    assert loaded.step == 30
    return loaded.state["model"]


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(planetoid: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    ref = subprocess.run(
        _cli(planetoid, tmp_path, "ref"), env=env, capture_output=True, text=True, check=False
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    # killed twice at random moments while training (start-up takes a few seconds)
    rnd = random.Random()
    kills = 0
    for _ in range(2):
        proc = subprocess.Popen(
            _cli(planetoid, tmp_path, "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        ck = CheckpointDir(tmp_path / "graph" / "killed" / "seed-0" / "checkpoints")
        before = max((s for s, _ in ck.steps()), default=0)
        deadline = time.monotonic() + 120  # wait until this process has trained, then a random moment
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and max((s for s, _ in ck.steps()), default=0) <= before
        ):
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.0, 0.3))  # 30 epochs take about 2 s: leave the torn write room
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    # killed in the middle of writing a checkpoint: the writer dies after half the bytes
    torn = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("kill_mid_write.py")),
            "3",
            *_cli(planetoid, tmp_path, "killed")[3:],
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert torn.returncode == -signal.SIGKILL, torn.stderr[-2000:]
    resumed = subprocess.run(
        _cli(planetoid, tmp_path, "killed"), env=env, capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed a torn checkpoint write" in resumed.stderr
    a, b = _final_weights(tmp_path / "graph" / "ref"), _final_weights(tmp_path / "graph" / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    child = RunDir(tmp_path / "graph" / "killed" / "seed-0")
    evals = [r["step"] for r in read_metrics(child.metrics_path) if "eval/val_acc" in r]
    assert evals == list(range(1, 31))  # every epoch's evaluation exactly once across the kills
    assert len((child.manifest() or {})["resumptions"]) >= 2

    def records(run: str) -> list[dict[str, object]]:
        path = tmp_path / "graph" / run / "seed-0" / "metrics.jsonl"
        return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(path)]

    assert records("killed") == records("ref")  # the whole log, logged losses included


# -- the CLI and runs --------------------------------------------------------------------------------


def test_cli_trains_and_runs_list_show_diff(
    planetoid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "train",
        "graph",
        "--data-root",
        str(planetoid),
        "--runs",
        str(tmp_path),
        "--epochs",
        "5",
        "--no-progress",
        "--set",
        "train.tensorboard=false",
    ]
    assert main([*base, "--run-id", "a"]) == 0
    assert main([*base, "--run-id", "b", "--set", "train.lr=0.02"]) == 0
    out = capsys.readouterr().out
    assert "test_acc" in out
    # pretend run b ran elsewhere: another torch, another GPU
    mpath = tmp_path / "graph" / "b" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["environment"]["torch"]["version"] = "2.9.1"
    m["environment"]["gpus"] = [{"name": "NVIDIA H100 80GB HBM3"}]
    m["environment"]["packages"] = [*m["environment"]["packages"], "extra-pkg==1.0"]
    mpath.write_text(json.dumps(m))
    assert main(["runs", "diff", "a", "b", "--runs", str(tmp_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["config"] == {"train.lr": [0.01, 0.02]}
    assert d["environment"]["torch"][1] == "2.9.1"
    assert d["environment"]["GPUs"] == ["none", "NVIDIA H100 80GB HBM3"]
    assert d["packages"] == {"extra-pkg": ["-", "1.0"]}
    assert "test_acc_mean" in d["metrics"]
    assert main(["runs", "diff", "a", "b", "--runs", str(tmp_path)]) == 0
    text = "".join(capsys.readouterr().out.split())
    assert "train.lr" in text and "2.9.1" in text and "test_acc_mean" in text
    assert main(["runs", "list", "--runs", str(tmp_path), "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["status"]) for r in listed] == [("a", "finished"), ("b", "finished")]
    assert main(["runs", "show", "graph/a", "--runs", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["model.name"] == "gcn" and shown["summary"]["n_seeds"] == 1


def test_cli_bad_input_is_one_line_and_exit_2(
    planetoid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "graph", "--data-root", str(planetoid), "--runs", str(tmp_path), "--no-progress"]
    assert main([*base, "--set", "train.lr=fast"]) == 2
    assert "train.lr must be a number" in capsys.readouterr().err
    assert main([*base, "--set", "model.width=3"]) == 2
    assert "unknown config key 'model.width'" in capsys.readouterr().err
    broken = tmp_path / "broken" / "Cora" / "raw"
    broken.mkdir(parents=True)
    for suffix in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"):
        (broken / f"ind.cora.{suffix}").write_bytes(b"not a pickle")
    assert main(["train", "graph", "--data-root", str(tmp_path / "broken"), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # the resolved config is printed first, then the one-line error
    assert last.startswith("cudalab: error:") and "unreadable Planetoid files" in last
    assert not (tmp_path / "graph").exists()  # nothing left behind
    assert main(["runs", "show", "nope", "--runs", str(tmp_path)]) == 2
    if not torch.cuda.is_available():  # the job cannot run as asked: a problem found, exit 1
        assert main([*base, "--device", "cuda", "--run-id", "gpu"]) == 1
        assert "--device cuda: no usable CUDA GPU" in capsys.readouterr().err
        assert not (tmp_path / "graph").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["gcn", "gat", "appnp", "sage"])
def test_every_model_trains_on_the_gpu_under_bf16(planetoid: Path, tmp_path: Path, model: str) -> None:
    cfg = _preset(model, planetoid, max_epochs=100, device="cuda")
    run, summary = train_graph(cfg, runs_root=tmp_path, console=Console(quiet=True))
    assert (run.manifest() or {})["precision"]["name"] in ("bf16", "fp16")
    assert summary["test_acc_mean"] >= 0.75
