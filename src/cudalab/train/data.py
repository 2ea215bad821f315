"""Data order for the engine: one seeded permutation per epoch, split into global batches, then ranks.

The order is a pure function of (seed, epoch), so a resumed run rebuilds it without saved state
and a run on W ranks sees exactly the batches a single process sees: global batch ``b`` is
``perm[b*B:(b+1)*B]`` and rank ``r`` of ``W`` takes its ``r``-th contiguous slice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cudalab.train.rng import epoch_seed, generator


class EpochSampler:
    """Index batches for one rank of a global-batch schedule.

    Parameters
    ----------
    n
        Number of training examples.
    global_batch
        Examples per optimizer step over all ranks and accumulation micro-steps.
    rank, world_size
        This process and the job size.
    grad_accum
        Micro-batches per step on each rank; ``global_batch`` must divide by ``world_size * grad_accum``.
    seed
        Run seed; each epoch's permutation comes from ``(seed, epoch)``.
    shuffle
        False keeps the natural order (evaluation, tests).
    drop_last
        Drop the final incomplete global batch (otherwise it is padded by wrapping around).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs at least one example")
        parts = world_size * grad_accum
        if global_batch < 1 or global_batch % parts:
            raise ValueError(
                f"batch size {global_batch} must be a positive multiple of world size x grad_accum = {parts}"
            )
        if drop_last and global_batch > n:
            raise ValueError(f"batch size {global_batch} exceeds the {n} training examples")
        self.n, self.global_batch = n, global_batch
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.micro = global_batch // parts
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch."""
        return self.n // self.global_batch if self.drop_last else math.ceil(self.n / self.global_batch)

    def __len__(self) -> int:
        """Micro-batches this rank sees per epoch."""
        return self.steps_per_epoch * self.grad_accum

    def epoch(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """This rank's micro-batches of ``epoch`` (int64 index tensors), from micro-batch ``start``."""
        if self.shuffle:
            perm = torch.randperm(self.n, generator=generator(epoch_seed(self.seed, epoch)))
        else:
            perm = torch.arange(self.n)
        total = self.steps_per_epoch * self.global_batch
        if total > self.n:  # pad the last global batch by wrapping, as DistributedSampler does
            perm = torch.cat([perm, perm[: total - self.n]])
        for i in range(start, len(self)):
            step, accum = divmod(i, self.grad_accum)
            base = step * self.global_batch
            # within a global batch: accumulation micro-step a of rank r is slice (a * W + r)
            offset = (accum * self.world_size + self.rank) * self.micro
            yield perm[base + offset : base + offset + self.micro]
