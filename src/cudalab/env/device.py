"""Which device a job runs on: one rule for ``cudalab bench``, the radio search and the training engine.

``auto`` takes the GPU when torch can use one, else the CPU; ``cuda`` without a usable GPU means the
job cannot run as asked, a problem found (exit 1), and the doctor says why. Importing this module
does not import torch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from cudalab.errors import CudalabError, ExitCode

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")


class DeviceChoice(StrEnum):
    """:data:`Device` as a command-line choice (typer takes an Enum)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(requested: str, local_rank: int = 0) -> tuple[torch.device, str]:
    """The device for ``requested`` (under torchrun, GPU ``local_rank``), and why it was chosen.

    Raises ``ValueError`` for a name other than auto/cpu/cuda and :class:`CudalabError` (exit 1)
    when a GPU is required but none is usable.
    """
    import torch  # here, not at import: the CLI's start-up (and the doctor) must not pay for it

    if requested not in DEVICES:
        raise ValueError(f"device must be auto, cpu or cuda, not {requested!r}")
    usable = torch.cuda.is_available()
    if requested == "cpu" or (requested == "auto" and not usable):
        why = "asked for" if requested == "cpu" else "no usable CUDA GPU (run `cudalab doctor` for why)"
        return torch.device("cpu"), f"cpu: {why}"
    if not usable:
        raise CudalabError(
            "--device cuda: no usable CUDA GPU (run 'cudalab doctor' to see why)", ExitCode.PROBLEM
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise CudalabError(f"local rank {local_rank} has no GPU: only {count} visible", ExitCode.PROBLEM)
    dev = torch.device("cuda", local_rank)
    return dev, f"cuda:{local_rank} ({torch.cuda.get_device_name(dev)})"
