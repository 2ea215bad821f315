"""Node classification as an engine task: config, published presets, and the multi-seed driver.

The presets follow each paper's Planetoid setup (public split, row-normalised features) and
report test accuracy at the evaluation with the best validation accuracy (ties: lowest validation loss):

=======  ==========================================================================================
gcn      Kipf & Welling 2017: 16 hidden, dropout 0.5, Adam lr 0.01, L2 5e-4 on the first layer, 200 epochs
gat      Velickovic et al. 2018: 8 heads x 8, dropout 0.6 (features and attention), lr 0.005, L2 5e-4,
         up to 1000 epochs with patience 100
appnp    Klicpera et al. 2019: MLP 64 hidden, K 10, alpha 0.1, dropout 0.5 (features and edges),
         lr 0.01, L2 5e-3 on the first layer, up to 1000 epochs with patience 100
sage     Hamilton et al. 2017: mean aggregator, 64 hidden, mini-batches of 32 seeds with fan-outs 25, 10
=======  ==========================================================================================
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from rich.console import Console
from torch import nn

from cudalab.graph.data import Dataset, load_planetoid, row_normalize
from cudalab.graph.models import APPNP, GAT, GCN, SAGE
from cudalab.graph.sampler import NeighborSampler, Subgraph
from cudalab.train.config import TrainConfig, check_literals
from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo
from cudalab.train.loop import Resume, fit
from cudalab.train.rng import epoch_seed, generator
from cudalab.train.run import RunDir, new_run_id, now

TASK = "graph"
Model = Literal["gcn", "gat", "sage", "appnp"]
MODELS: tuple[Model, ...] = ("gcn", "gat", "appnp", "sage")
DATASETS: tuple[Dataset, ...] = ("Cora", "CiteSeer")


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    dataset: Dataset = "Cora"
    root: str = "data/planetoid"
    """Folder holding <Dataset>/raw/ind.<dataset>.* (downloaded there by PyG when absent)."""
    normalize_features: bool = True
    """Row-normalise the bag-of-words features, as the papers do."""
    sampled: bool = False
    """Mini-batches of seed nodes with sampled neighbourhoods instead of the full graph per step."""
    fanouts: tuple[int, ...] = (25, 10)
    """Neighbours sampled per node, seeds' hop first (-1: all)."""
    batch_size: int = 32
    """Seed nodes per optimizer step over all ranks (sampled training only)."""

    def __post_init__(self) -> None:
        check_literals(self)
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelConfig:
    name: Model = "gcn"
    hidden: int = 16
    """Hidden features (per head for GAT)."""
    heads: int = 8
    """GAT attention heads in the hidden layer."""
    out_heads: int = 1
    """GAT heads in the output layer (averaged)."""
    dropout: float = 0.5
    """Dropout on each layer's input features."""
    attn_dropout: float = 0.6
    """GAT: dropout on the attention coefficients."""
    k: int = 10
    """APPNP propagation steps."""
    alpha: float = 0.1
    """APPNP teleport probability."""
    edge_dropout: float = 0.0
    """APPNP: dropout on the propagation matrix."""
    decay: Literal["all", "first"] = "all"
    """Which parameters the L2 penalty applies to: all, or the first layer only (GCN, APPNP papers)."""

    def __post_init__(self) -> None:
        check_literals(self)
        if self.hidden < 1 or self.heads < 1 or self.out_heads < 1 or self.k < 1:
            raise ValueError("model.hidden, heads, out_heads and k must be >= 1")
        for name in ("dropout", "attn_dropout", "edge_dropout", "alpha"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} must lie in [0, 1), got {getattr(self, name)}")


@dataclass(kw_only=True, slots=True, frozen=True)
class GraphConfig:
    """``cudalab train graph``: one model on one dataset, over ``seeds`` seeds."""

    seeds: int = 1
    """Train seeds train.seed, train.seed+1, ...; report test accuracy at best validation as mean +- std."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


# --------------------------------------------------------------------------------------------------
# presets: plain functions; a variant calls the base and changes it
# --------------------------------------------------------------------------------------------------

# Model selection: the best validation accuracy, ties going to the lower validation loss (the GAT
# reference code keeps a model only when accuracy does not drop and loss does not rise).
_SELECT = {
    "early_stop_metric": "val_acc",
    "early_stop_mode": "max",
    "tiebreak_metric": "val_loss",
    "tiebreak_mode": "min",
    "log_every": 10,
    "keep_last": 2,
}


def gcn(dataset: Dataset = "Cora") -> GraphConfig:
    return GraphConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(name="gcn", hidden=16, dropout=0.5, decay="first"),
        train=TrainConfig(max_epochs=200, lr=0.01, weight_decay=5e-4, checkpoint_every=50, **_SELECT),  # type: ignore[arg-type]
    )


def gat(dataset: Dataset = "Cora") -> GraphConfig:
    return GraphConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(name="gat", hidden=8, heads=8, out_heads=1, dropout=0.6, attn_dropout=0.6),
        train=TrainConfig(
            max_epochs=1000,
            lr=0.005,
            weight_decay=5e-4,
            patience=100,
            checkpoint_every=100,
            **_SELECT,  # type: ignore[arg-type]
        ),
    )


def appnp(dataset: Dataset = "Cora") -> GraphConfig:
    return GraphConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(
            name="appnp", hidden=64, dropout=0.5, k=10, alpha=0.1, edge_dropout=0.5, decay="first"
        ),
        train=TrainConfig(
            max_epochs=1000,
            lr=0.01,
            weight_decay=5e-3,
            patience=100,
            checkpoint_every=100,
            **_SELECT,  # type: ignore[arg-type]
        ),
    )


def sage(dataset: Dataset = "Cora") -> GraphConfig:
    return GraphConfig(
        data=DataConfig(dataset=dataset, sampled=True, fanouts=(25, 10), batch_size=32),
        model=ModelConfig(name="sage", hidden=64, dropout=0.5),
        train=TrainConfig(max_epochs=100, lr=0.01, weight_decay=5e-4, checkpoint_every=100, **_SELECT),  # type: ignore[arg-type]
    )


PRESETS = {"gcn": gcn, "gat": gat, "appnp": appnp, "sage": sage}


def preset(model: Model, dataset: Dataset) -> GraphConfig:
    """The published setup of ``model`` on ``dataset``."""
    return PRESETS[model](dataset)


# --------------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------------


class NodeClassification:
    """Planetoid node classification for the engine (full-batch or sampled mini-batches)."""

    def __init__(self, cfg: GraphConfig, data: Any) -> None:
        self.cfg = cfg
        self.cpu_data = data
        self.seed = cfg.train.seed

    # -- engine protocol ----------------------------------------------------------------------------

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        d = self.cpu_data
        self.device, self.info, self.seed = device, info, seed
        x = row_normalize(d.x) if self.cfg.data.normalize_features else d.x
        self.x, self.y = x.to(device), d.y.to(device)
        self.edge_index = d.edge_index.to(device)
        self.masks = {k: getattr(d, f"{k}_mask").to(device) for k in ("train", "val", "test")}
        self.num_classes = int(d.y.max()) + 1
        self.train_idx = d.train_mask.nonzero().flatten()
        if self.cfg.data.sampled:
            self.sampler = NeighborSampler(d.edge_index, d.num_nodes, self.cfg.data.fanouts)
            self.order = EpochSampler(
                self.train_idx.numel(),
                self.cfg.data.batch_size,
                rank=info.rank,
                world_size=info.world_size,
                grad_accum=self.cfg.train.grad_accum,
                seed=seed,
                drop_last=False,
            )

    def build_model(self) -> nn.Module:
        m, in_dim = self.cfg.model, self.x.shape[1]
        full = not self.cfg.data.sampled
        if m.name == "gcn":
            return GCN(in_dim, m.hidden, self.num_classes, m.dropout, cached=full)
        if m.name == "gat":
            return GAT(in_dim, m.hidden, self.num_classes, m.heads, m.out_heads, m.dropout, m.attn_dropout)
        if m.name == "sage":
            return SAGE(in_dim, m.hidden, self.num_classes, m.dropout)
        return APPNP(in_dim, m.hidden, self.num_classes, m.dropout, m.k, m.alpha, m.edge_dropout)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if self.cfg.model.decay == "all":
            return [{"params": list(model.parameters())}]
        first = {id(p) for p in model.first_layer().parameters()}  # type: ignore[operator]
        return [
            {"params": [p for p in model.parameters() if id(p) in first]},
            {"params": [p for p in model.parameters() if id(p) not in first], "weight_decay": 0.0},
        ]

    def micro_batches_per_epoch(self) -> int:
        return len(self.order) if self.cfg.data.sampled else 1

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]:
        if not self.cfg.data.sampled:
            if start == 0:
                yield None  # the whole graph is the batch
            return
        for i, local in enumerate(self.order.epoch(epoch, start), start=start):
            seeds = self.train_idx[local]
            g = generator(epoch_seed(self.seed, epoch, salt=1 + i * self.info.world_size + self.info.rank))
            yield self.sampler.sample(seeds, g).to(self.device)

    def training_step(self, model: nn.Module, batch: Subgraph | None) -> torch.Tensor:
        if batch is None:
            out = model(self.x, self.edge_index)
            mask = self.masks["train"]
            return F.cross_entropy(out[mask], self.y[mask])
        out = model(self.x[batch.n_id], batch.edge_index)[: batch.batch_size]
        return F.cross_entropy(out, self.y[batch.n_id[: batch.batch_size]])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Accuracy and loss on each split, with every neighbour (full-graph inference)."""
        out = model(self.x, self.edge_index).float()
        metrics = {}
        for split, mask in self.masks.items():
            metrics[f"{split}_acc"] = (out[mask].argmax(1) == self.y[mask]).float().mean().item()
            metrics[f"{split}_loss"] = F.cross_entropy(out[mask], self.y[mask]).item()
        return metrics


# --------------------------------------------------------------------------------------------------
# the driver: N seeds, one parent run
# --------------------------------------------------------------------------------------------------


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (n-1) of the per-seed results."""
    out: dict[str, Any] = {"n_seeds": len(per_seed)}
    for key in ("test_acc", "val_acc", "epoch_time_ms"):
        values = [r[key] for r in per_seed if r.get(key) is not None]
        if values:
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = per_seed
    return out


def seed_result(seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One seed's line of the table: test accuracy at the best validation accuracy."""
    best = (summary.get("best") or {}).get("metrics") or summary.get("final") or {}
    epochs = max(1, int(summary.get("epochs", 0)))
    return {
        "seed": seed,
        "test_acc": best.get("test_acc"),
        "val_acc": best.get("val_acc"),
        "best_step": (summary.get("best") or {}).get("step"),
        "epochs": summary.get("epochs"),
        "stopped_early": summary.get("stopped_early"),
        # wall time per epoch, evaluation and checkpoints included
        "epoch_time_ms": 1000.0 * float(summary.get("train_time_s", 0.0)) / epochs,
    }


def train_graph(
    cfg: GraphConfig,
    *,
    runs_root: Path,
    run_id: str | None = None,
    resume: Resume = "auto",
    console: Console | None = None,
    info: DistInfo | None = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Train ``cfg.seeds`` seeds into one run directory; return it and its summary.

    Each seed is a child run ``seed-<n>/`` with its own checkpoints and metrics; a finished seed is
    skipped on resume and an unfinished one continues from its newest checkpoint.
    """
    from cudalab.train import distributed as dist

    con = console or Console(stderr=True)
    data = load_planetoid(cfg.data.root, cfg.data.dataset)
    owns_group = info is None
    info = info or dist.init(cfg.train.device)
    try:
        return _train_seeds(cfg, data, runs_root, run_id, resume, con, info)
    finally:
        if owns_group:
            dist.shutdown()


def _train_seeds(
    cfg: GraphConfig,
    data: Any,
    runs_root: Path,
    run_id: str | None,
    resume: Resume,
    con: Console,
    info: DistInfo,
) -> tuple[RunDir, dict[str, Any]]:
    from cudalab.env.device import resolve_device
    from cudalab.env.fingerprint import fingerprint

    resolve_device(cfg.train.device, info.local_rank)  # fails before any run directory exists
    run = _parent_run(cfg, runs_root, run_id, resume, info)
    environment = fingerprint() if info.is_main else {}
    if info.is_main:
        run.start(cfg, seed=cfg.train.seed, environment=environment, extra={"seeds": cfg.seeds})
    results = []
    for i in range(cfg.seeds):
        seed = cfg.train.seed + i
        child = RunDir(run.path / f"seed-{seed}")
        if child.finished:
            summary = child.summary() or {}
        else:
            if info.is_main:
                con.print(f"[bold]seed[/]       {seed} ({i + 1} of {cfg.seeds})")
            seed_cfg = replace(cfg, seeds=1, train=replace(cfg.train, seed=seed))
            result = fit(
                NodeClassification(seed_cfg, data),
                seed_cfg.train,
                child,
                resume=resume,
                environment=environment,
                run_config=seed_cfg,
                console=con,
                info=info,
            )
            summary = result.summary
            if info.is_main and i == 0:  # the parent states where its seeds ran
                run.update_manifest(
                    world_size=info.world_size,
                    device=(child.manifest() or {}).get("device"),
                    precision={"name": result.precision.name, "reason": result.precision.reason},
                )
        results.append(seed_result(seed, summary))
        if info.is_main:
            r = results[-1]
            con.print(
                f"  seed {seed}: test_acc {_pct(r['test_acc'])} at best val_acc {_pct(r['val_acc'])} "
                f"(epoch time {r['epoch_time_ms']:.1f} ms)"
            )
    summary = {
        "task": TASK,
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "sampled": cfg.data.sampled,
        **aggregate(results),
        "finished_at": now(),
    }
    if info.is_main:
        run.finish(summary)
    return run, summary


def _pct(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.2f} %"


def _parent_run(cfg: GraphConfig, root: Path, run_id: str | None, resume: Resume, info: DistInfo) -> RunDir:
    from cudalab.train import distributed as dist
    from cudalab.train.run import find_resumable

    path: Path | None = None
    if info.is_main:  # rank 0 picks the directory; the others take its choice
        if run_id is not None:
            path = root / TASK / run_id
            if resume == "never" and path.exists():
                raise ValueError(f"{path}: run exists; use --resume auto to continue it")
        elif resume == "auto":
            found = find_resumable(root, TASK, cfg)
            path = found.path if found is not None else None
        if path is None:
            path = root / TASK / new_run_id(cfg)
    chosen = dist.broadcast(path, info)
    assert chosen is not None
    return RunDir(chosen)
