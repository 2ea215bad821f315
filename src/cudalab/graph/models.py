"""The four node classifiers, built from PyG layers with the papers' architectures.

Shapes: every model maps ``x`` (num_nodes, in_dim) and ``edge_index`` (2, num_edges) to logits
(num_nodes, num_classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch idiom)
from torch import nn

with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script (deprecated)
    warnings.simplefilter("ignore", FutureWarning)
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv
    from torch_geometric.nn.conv.gcn_conv import gcn_norm


class _TwoConv(nn.Module):
    """Dropout, conv1, activation, dropout, conv2: the shape GCN, GAT and GraphSAGE share."""

    def __init__(
        self,
        conv1: nn.Module,
        conv2: nn.Module,
        dropout: float,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.relu,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.activation = activation
        self.conv1, self.conv2 = conv1, conv2

    def first_layer(self) -> nn.Module:
        return self.conv1

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = self.activation(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class GCN(_TwoConv):
    """Kipf & Welling (2017): two graph convolutions, ReLU, dropout on the input of each."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float, cached: bool) -> None:
        # cached: the normalised adjacency is computed once (full-batch, transductive only)
        super().__init__(
            GCNConv(in_dim, hidden, cached=cached), GCNConv(hidden, out_dim, cached=cached), dropout
        )


class GAT(_TwoConv):
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
        super().__init__(
            GATConv(in_dim, hidden, heads=heads, dropout=attn_dropout),
            GATConv(hidden * heads, out_dim, heads=out_heads, concat=False, dropout=attn_dropout),
            dropout,
            F.elu,
        )


class SAGE(_TwoConv):
    """Hamilton et al. (2017): mean-aggregator GraphSAGE, two layers (trained on sampled subgraphs)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__(
            SAGEConv(in_dim, hidden, aggr="mean"), SAGEConv(hidden, out_dim, aggr="mean"), dropout
        )


class PPRPropagation(nn.Module):
    """K steps of ``x <- (1 - alpha) A x + alpha h`` with ``A`` the GCN-normalised adjacency (self-loops
    added) and the adjacency dropped out afresh at every step, as in Klicpera et al.

    Written here instead of PyG's ``APPNP`` layer: up to PyG 2.8.1 it drops out the already
    dropped-out weights at each step (pyg-team/pytorch_geometric#10783), so after K = 10 steps at
    p = 0.5 about 0.1 % of the edges are left, each weighted 1024 times; with the paper's settings
    training then does not converge (10-seed test accuracy 35 % on Cora, against 83 % here).
    """

    def __init__(self, k: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.k, self.alpha, self.dropout = k, alpha, dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        edge_index, weight = gcn_norm(edge_index, None, x.size(0), add_self_loops=True, dtype=x.dtype)
        src, dst = edge_index
        h = x
        for _ in range(self.k):
            w = F.dropout(weight, self.dropout, self.training)  # from the normalised weights each step
            x = torch.zeros_like(h).index_add_(0, dst, x[src] * w.unsqueeze(1))
            x = (1 - self.alpha) * x + self.alpha * h
        return x


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
        self.prop = PPRPropagation(k, alpha, edge_dropout)

    def first_layer(self) -> nn.Module:
        return self.lin1

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, self.dropout, self.training)
        return self.prop(self.lin2(x), edge_index)
