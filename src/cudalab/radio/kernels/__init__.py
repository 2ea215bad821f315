"""The search's compute kernels, and the one place that chooses between them.

Two sets do the same work: the torch references, which run anywhere (and are what the tests trust),
and the Triton kernels (:mod:`~cudalab.radio.kernels.launch`), which run compiled on a GPU and under
Triton's CPU interpreter (``TRITON_INTERPRET=1``) in the CPU test suite. :func:`resolve_kernel` turns
``--kernel auto|torch|triton`` into a :class:`KernelSet` of callables, so the pipeline and the
sub-band stages call what they are given instead of branching on a name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import torch

from cudalab.radio.dedispersion.direct import dedisperse
from cudalab.radio.single_pulse.search import Baseline, Hits, boxcar_hits_torch

Kernel = Literal["auto", "torch", "triton"]
KERNELS: tuple[Kernel, ...] = ("auto", "torch", "triton")

DedisperseFn = Callable[..., torch.Tensor]
"""``(data, delays, nout, *, weights=None, out=None) -> (ndm, nout)``: see
:func:`cudalab.radio.dedispersion.direct.dedisperse`."""
BoxcarFn = Callable[..., Hits]
"""``(series, baseline, *, widths, threshold, valid) -> hits``: see
:func:`cudalab.radio.single_pulse.search.boxcar_hits_torch`."""


@dataclass(frozen=True)
class KernelSet:
    """The kernels one search runs on.

    Attributes
    ----------
    name
        ``torch`` or ``triton``, as recorded in search.json.
    dedisperse
        Direct dedispersion of a block (and stage 1 of the sub-band method).
    dedisperse_sources
        Dedispersion with a source row per trial (stage 2 of the sub-band method), or None where the
        sub-band code gathers the rows with torch instead.
    boxcar
        The single-pulse search of dedispersed series against their baseline: every boxcar above
        threshold.
    """

    name: Literal["torch", "triton"]
    dedisperse: DedisperseFn
    dedisperse_sources: DedisperseFn | None
    boxcar: BoxcarFn


TORCH = KernelSet("torch", dedisperse, None, boxcar_hits_torch)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@cache
def triton_importable() -> bool:
    """True when Triton is installed (it comes with torch's Linux wheels)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_usable(device: torch.device) -> bool:
    """Can the Triton kernels run on ``device``: a CUDA device, or the CPU under the interpreter."""
    if not triton_importable():
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


@cache
def triton_set() -> KernelSet:
    """The Triton kernels as a :class:`KernelSet` (imported on first use: Triton is optional)."""
    from cudalab.radio.kernels.launch import boxcar_hits_triton, dedisperse_triton

    def boxcar(series: torch.Tensor, baseline: Baseline, **kw: Any) -> Hits:
        return boxcar_hits_triton(series, baseline.knots, baseline.chunk, baseline.inv_rms, **kw)

    return KernelSet("triton", dedisperse_triton, dedisperse_triton, boxcar)


def resolve_kernel(requested: str, device: torch.device) -> KernelSet:
    """``auto`` -> Triton where it runs compiled (a CUDA device), else the torch references.

    Raises ``ValueError`` for an unknown name, or for ``triton`` where it cannot run.
    """
    if requested not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {requested!r}")
    if requested == "torch":
        return TORCH
    if requested == "auto":
        return triton_set() if device.type == "cuda" and triton_usable(device) else TORCH
    if not triton_usable(device):
        why = "Triton is not installed" if not triton_importable() else f"not on {device.type}"
        raise ValueError(f"the triton kernel cannot run here ({why}); use --kernel torch")
    return triton_set()


__all__ = [
    "KERNELS",
    "TORCH",
    "BoxcarFn",
    "DedisperseFn",
    "Kernel",
    "KernelSet",
    "interpreting",
    "resolve_kernel",
    "triton_importable",
    "triton_set",
    "triton_usable",
]
