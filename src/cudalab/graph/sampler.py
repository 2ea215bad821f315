"""Neighbour sampling for mini-batch GNN training, in plain PyTorch (GraphSAGE, Hamilton et al. 2017).

PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse, which have no wheels for every torch; this
sampler needs neither and produces the same kind of subgraph: the seed nodes first, then each hop's
newly reached nodes, and the sampled edges (source -> target, local ids) of all hops together, so
an L-layer message-passing model run on it computes the seeds' outputs from at most ``fanouts[l]``
neighbours per node at hop ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Subgraph:
    """A sampled computation graph.

    Shapes: ``n_id`` (num_nodes,) global ids, seeds first; ``edge_index`` (2, num_edges) local ids,
    row 0 the source (neighbour) and row 1 the target; ``batch_size`` seeds.
    """

    n_id: torch.Tensor
    edge_index: torch.Tensor
    batch_size: int

    def to(self, device: torch.device) -> Subgraph:
        return Subgraph(self.n_id.to(device), self.edge_index.to(device), self.batch_size)


class NeighborSampler:
    """Uniform sampling without replacement of up to ``fanouts[l]`` in-neighbours per node at hop ``l``.

    Parameters
    ----------
    edge_index
        (2, E) global edges source -> target; a node's neighbours are the sources of its in-edges.
    num_nodes
        Number of nodes in the graph.
    fanouts
        Neighbours per node for each hop, seeds' hop first; -1 takes all of them.
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, fanouts: tuple[int, ...]) -> None:
        if not fanouts or any(f == 0 or f < -1 for f in fanouts):
            raise ValueError(f"fanouts must be positive or -1 (all), got {fanouts}")
        src, dst = edge_index.cpu()
        order = torch.argsort(dst, stable=True)
        self.col = src[order].contiguous()  # in-neighbours grouped by target
        counts = torch.bincount(dst, minlength=num_nodes)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        self.num_nodes = num_nodes
        self.fanouts = tuple(fanouts)

    def sample(self, seeds: torch.Tensor, generator: torch.Generator | None = None) -> Subgraph:
        """Sample the computation graph of ``seeds`` (unique global ids)."""
        seeds = seeds.cpu().long()
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[seeds] = torch.arange(seeds.numel())
        nodes = [seeds]
        n_total = seeds.numel()
        frontier = seeds
        srcs, dsts = [], []
        for fanout in self.fanouts:
            start, deg = self.rowptr[frontier], self.rowptr[frontier + 1] - self.rowptr[frontier]
            # every candidate edge of the frontier: (target position in frontier, index into col)
            seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
            offs = torch.arange(seg.numel()) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
            cand = torch.repeat_interleave(start, deg) + offs
            if fanout != -1:
                # a random order within each target's segment (sort by segment + U[0,1)),
                # then the first `fanout` of each segment: uniform without replacement
                keys = seg.double() + torch.rand(seg.numel(), generator=generator, dtype=torch.float64)
                perm = torch.argsort(keys)
                seg, cand = seg[perm], cand[perm]
                first = torch.cumsum(deg, 0) - deg
                rank = torch.arange(seg.numel()) - first[seg]
                keep = rank < fanout
                seg, cand = seg[keep], cand[keep]
            nbr = self.col[cand]
            new = torch.unique(nbr[local[nbr] < 0])
            local[new] = torch.arange(n_total, n_total + new.numel())
            n_total += new.numel()
            nodes.append(new)
            srcs.append(local[nbr])
            dsts.append(local[frontier[seg]])
            frontier = new
        n_id = torch.cat(nodes)
        edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])
        return Subgraph(n_id=n_id, edge_index=edge_index, batch_size=seeds.numel())
