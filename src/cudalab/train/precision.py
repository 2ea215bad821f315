"""Numeric precision, decided once per run with a reason that is printed and saved."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cudalab.train.config import Precision

#: bf16 tensor cores and full-range bf16 arithmetic arrive with Ampere (compute capability 8.0).
BF16_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    """What autocast and the loss scaler do in this run, and why."""

    name: Precision
    """bf16, fp16 or fp32 (never auto once resolved)."""
    autocast_dtype: torch.dtype | None
    """dtype for ``torch.autocast``; None: run in fp32 without autocast."""
    grad_scaler: bool
    """fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not."""
    reason: str


def resolve_precision(requested: Precision, device: torch.device) -> PrecisionPlan:
    """Pick the training precision for ``device``; an explicit request wins where it can run."""
    if device.type != "cuda":
        if requested == "fp16":
            raise ValueError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
        if requested == "bf16":
            return PrecisionPlan("bf16", torch.bfloat16, False, "bf16 autocast on CPU: asked for")
        return PrecisionPlan(
            "fp32", None, False, "fp32: CPU" + ("" if requested == "auto" else ", asked for")
        )
    cap = torch.cuda.get_device_capability(device)
    cap_s = f"compute capability {cap[0]}.{cap[1]}"
    if requested == "fp32":
        return PrecisionPlan("fp32", None, False, f"fp32: asked for ({cap_s})")
    if requested == "fp16":
        return PrecisionPlan("fp16", torch.float16, True, f"fp16 with GradScaler: asked for ({cap_s})")
    if requested == "bf16":
        if cap < BF16_MIN_CAPABILITY:
            raise ValueError(f"precision bf16 needs compute capability >= 8.0; this GPU has {cap_s}")
        return PrecisionPlan("bf16", torch.bfloat16, False, f"bf16: asked for ({cap_s})")
    if cap >= BF16_MIN_CAPABILITY:
        return PrecisionPlan("bf16", torch.bfloat16, False, f"bf16 autocast: {cap_s} >= 8.0")
    return PrecisionPlan(
        "fp16", torch.float16, True, f"fp16 autocast with GradScaler: {cap_s} < 8.0 lacks bf16"
    )
