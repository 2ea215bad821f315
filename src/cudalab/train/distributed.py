"""One process or many under torchrun: the same code, with rank-0 duties and collective helpers.

torchrun exports RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT (and TORCHELASTIC_RUN_ID, stable
across the restarts of one launch); without them the run is a world of one and nothing here
touches ``torch.distributed``. NCCL on GPU, gloo on CPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cudalab.errors import CudalabError, ExitCode

T = TypeVar("T")

#: Rank 0 evaluates and writes checkpoints while the others wait in a collective; give that time.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
TIMEOUT_ENV = "CUDALAB_COLLECTIVE_TIMEOUT_S"


def collective_timeout(environ: Mapping[str, str] | None = None) -> timedelta:
    """How long a collective may wait for the other ranks: ``$CUDALAB_COLLECTIVE_TIMEOUT_S`` seconds,
    else :data:`COLLECTIVE_TIMEOUT`."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not raw:
        return COLLECTIVE_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise RuntimeError(f"{TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
    return timedelta(seconds=seconds)


class CollectiveError(CudalabError):
    """A collective that timed out or lost a peer: another rank is hung or died (exit 1, one line)."""


def as_collective_error(exc: BaseException, info: DistInfo) -> CollectiveError | None:
    """``exc`` as a one-line :class:`CollectiveError` when it is a collective that timed out or lost
    its peer (gloo raises either in the waiting rank; NCCL's watchdog aborts the process itself and
    logs the timed-out operation); None for any other error. gloo's errors reach Python as a plain
    RuntimeError from DDP's backward, so they are told by their own words (a DataLoader's "timed out"
    is not one of them)."""
    if not info.distributed or not isinstance(exc, RuntimeError):
        return None
    text = str(exc).lower()
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)[:200]  # gloo's source location
    gloo_wait = re.search(r"timed out waiting \d+ ?ms for (recv|send)", text)
    if gloo_wait or (isinstance(exc, dist.DistError) and ("timed out" in text or "timeout" in text)):
        what = (
            f"waited over {collective_timeout().total_seconds():g} s for the other ranks: one is hung or died"
        )
    elif "connection closed by peer" in text or "connection reset" in text:
        what = "lost its connection to another rank, which died"
    else:
        return None
    return CollectiveError(
        f"rank {info.rank}: a collective {what} (that rank's own log says why); the run resumes from its last "
        f"checkpoint when started again [{first}; the wait is {TIMEOUT_ENV}]",
        ExitCode.PROBLEM,
    )


@dataclass(frozen=True, slots=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    """nccl or gloo when a process group was started; None for a single process."""

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates, and writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) outside it."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))
    except ValueError as exc:
        raise RuntimeError(f"malformed torchrun environment: {exc}") from None


def init(device: str) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process).

    ``device`` is the run's requested device (auto/cpu/cuda): NCCL when it resolves to GPUs, else gloo.
    """
    rank, local_rank, world = env_world()
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=collective_timeout())
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, backend=backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` on every rank (a picklable value: run id, metrics, a stop decision)."""
    if not info.distributed:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T, info: DistInfo) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over ranks (an all-reduce; a sync point)."""
    if not info.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
