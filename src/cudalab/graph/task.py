"""Node classification as an engine task: config, published presets, the task, and its experiment.

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

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from rich.console import Console
from torch import nn

from cudalab.graph.data import Dataset, load_planetoid, row_normalize
from cudalab.graph.models import APPNP, GAT, GCN, SAGE
from cudalab.graph.sampler import NeighborSampler, Subgraph
from cudalab.runs.config import check_literals
from cudalab.runs.rundir import Resume, RunDir
from cudalab.train.config import TrainConfig
from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo
from cudalab.train.experiment import Experiment, run_experiment
from cudalab.train.rng import epoch_seed, generator

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
    """``cudalab train graph``: one model on one dataset (over ``train.seeds`` seeds: test accuracy at
    the best validation accuracy, mean +- std)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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
# the experiment the engine drives
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _dataset(root: str, name: Dataset) -> Any:
    """Planetoid read once per process (a multi-seed run builds one task per seed; the data are shared
    read-only)."""
    return load_planetoid(root, name)


def _headline(cfg: GraphConfig, summary: dict[str, Any]) -> dict[str, Any]:
    mean, std = summary.get("test_acc_mean"), summary.get("test_acc_std")
    return {
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "sampled": cfg.data.sampled,
        "headline": {
            "metric": "test_acc",
            "value": None if mean is None else round(100 * mean, 2),
            "std": None if std is None else round(100 * std, 2),
            "unit": "%",
        },
    }


def experiment() -> Experiment[GraphConfig]:
    """Node classification for the engine's driver: ``runs/graph/<id>/seed-<n>/``."""
    return Experiment(
        kind=TASK,
        make_task=lambda cfg: NodeClassification(cfg, _dataset(cfg.data.root, cfg.data.dataset)),
        subject=lambda cfg: (
            f"{cfg.model.name} on {cfg.data.dataset}" + (" (sampled)" if cfg.data.sampled else "")
        ),
        summarise=_headline,
        columns=("test_acc", "val_acc"),
    )


def train_graph(
    cfg: GraphConfig,
    *,
    runs_root: Path,
    run_id: str | None = None,
    resume: Resume = "auto",
    console: Console | None = None,
    info: DistInfo | None = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Train ``cfg.train.seeds`` seeds into one run directory; return it and its summary."""
    result = run_experiment(
        experiment(), cfg, runs_root=runs_root, run_id=run_id, resume=resume, console=console, info=info
    )
    return result.run, result.summary
