"""What a workload (or a user's own model) gives the engine: a :class:`Task`.

A task owns its data and its model and says how a batch becomes a loss and how a model is
evaluated; the engine owns everything else (device, precision, DDP, the loop, checkpoints, logging,
the run directory). :class:`TaskBase` supplies the optional parts, so a small task is four methods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from cudalab.train.distributed import DistInfo


@runtime_checkable
class Task(Protocol):
    """The engine's contract with a workload.

    ``setup`` runs once per process before the model is built, with the device and this rank's place
    in the job. ``train_batches(epoch, start)`` yields this rank's micro-batches of ``epoch`` from
    micro-batch ``start`` on, the same ones for the same (seed, epoch) every time (see
    :class:`cudalab.train.data.EpochSampler`); ``micro_batches_per_epoch`` counts them.
    ``training_step`` returns the mean loss of one micro-batch; the engine runs it under autocast.
    ``evaluate`` runs on rank 0 with the plain module in eval mode under ``torch.no_grad`` and
    returns named numbers (``val_acc``, ``val_loss``, ...): the early-stop metric is one of them.

    Optional: ``batch_size(batch) -> int``, the examples in a micro-batch, for a throughput in
    examples per second in the log; ``interval_metrics(mean_loss, items, seconds) -> dict``, figures
    of the last log interval (``items`` examples over all ranks in ``seconds`` of training) logged
    beside the loss as ``train/<name>`` (a language model's perplexity, tokens/s, MFU);
    ``finish(model, run)``, called on rank 0 after a seed has trained, with the plain model and the
    seed's :class:`~cudalab.runs.rundir.RunDir`, for pictures and files of the trained model.
    """

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None: ...

    def build_model(self) -> nn.Module: ...

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]: ...

    def micro_batches_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]: ...

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...


class TaskBase:
    """Defaults for the optional parts of a :class:`Task`: subclass it and write the rest.

    ``setup`` keeps the device, the rank info and the seed as attributes; ``param_groups`` puts every
    parameter in one group (the optimizer's weight decay applies to all); ``batch_size`` reads the
    first dimension of a tensor batch (or of the first tensor of a tuple or list).
    """

    device: torch.device
    info: DistInfo
    seed: int

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        self.device, self.info, self.seed = device, info, seed

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def batch_size(self, batch: Any) -> int:
        first = batch[0] if isinstance(batch, tuple | list) and batch else batch
        return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 0
