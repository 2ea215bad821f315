"""The four node classifiers, built from PyG layers with the papers' architectures.

Shapes: every model maps ``x`` (num_nodes, in_dim) and ``edge_index`` (2, num_edges) to logits
(num_nodes, num_classes).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch idiom)
from torch import nn

with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script (deprecated)
    warnings.simplefilter("ignore", FutureWarning)
    from torch_geometric.nn import APPNP as APPNPProp  # noqa: N811
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv


class _TwoConv(nn.Module):
    """Dropout, conv1, ReLU, dropout, conv2: the shape GCN and GraphSAGE share."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.conv1, self.conv2 = conv1, conv2

    def first_layer(self) -> nn.Module:
        return self.conv1

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class GCN(_TwoConv):
    """Kipf & Welling (2017): two graph convolutions, ReLU, dropout on the input of each."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float, cached: bool) -> None:
        # cached: the normalised adjacency is computed once (full-batch, transductive only)
        super().__init__(
            GCNConv(in_dim, hidden, cached=cached), GCNConv(hidden, out_dim, cached=cached), dropout
        )


class GAT(nn.Module):
    """Velickovic et al. (2018): 8 heads x 8 features with ELU, then one averaged output head."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        heads: int,
        out_heads: int,
        dropout: float,
        attn_dropout: float,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.conv1 = GATConv(in_dim, hidden, heads=heads, dropout=attn_dropout)
        self.conv2 = GATConv(hidden * heads, out_dim, heads=out_heads, concat=False, dropout=attn_dropout)

    def first_layer(self) -> nn.Module:
        return self.conv1

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class SAGE(_TwoConv):
    """Hamilton et al. (2017): mean-aggregator GraphSAGE, two layers (trained on sampled subgraphs)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__(
            SAGEConv(in_dim, hidden, aggr="mean"), SAGEConv(hidden, out_dim, aggr="mean"), dropout
        )


class APPNP(nn.Module):
    """Klicpera et al. (2019): a two-layer MLP, then K steps of personalised-PageRank propagation."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        dropout: float,
        k: int,
        alpha: float,
        edge_dropout: float,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, out_dim)
        self.prop = APPNPProp(K=k, alpha=alpha, dropout=edge_dropout)

    def first_layer(self) -> nn.Module:
        return self.lin1

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, self.dropout, self.training)
        return self.prop(self.lin2(x), edge_index)
