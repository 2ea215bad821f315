"""Seeding, determinism switches and RNG state capture: what makes a run repeatable bit for bit."""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch

#: cuBLAS needs a fixed workspace for deterministic GEMMs on CUDA >= 10.2 (PyTorch "Reproducibility").
CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def configure_determinism(enabled: bool) -> list[str]:
    """Switch deterministic algorithms and cuDNN flags on or off; return what was set (for the log).

    ``CUBLAS_WORKSPACE_CONFIG`` must be in the environment before cuBLAS initialises, so it is set
    here, before the model touches the GPU; a different value the user exported is kept and noted.
    """
    notes: list[str] = []
    if enabled:
        current = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        if current is None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
            notes.append(f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}")
        elif current not in (":4096:8", ":16:8"):
            notes.append(f"CUBLAS_WORKSPACE_CONFIG={current} kept; it may not be deterministic")
        notes.append("torch.use_deterministic_algorithms(True)")
        notes.append("cudnn.deterministic=True, cudnn.benchmark=False")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.cuda.is_available()
    return notes


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A seed for one epoch's data order: a pure function of (seed, epoch), so resume needs no state."""
    # SplitMix-style mixing keeps neighbouring (seed, epoch) pairs far apart in the generator's space.
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) % 2**64
    x ^= x >> 31
    return x % 2**63


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed NumPy and Python in each worker from torch's worker seed."""
    del worker_id
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def capture() -> dict[str, Any]:
    """Every RNG state of this process."""
    # NumPy's key array travels as a tensor so that checkpoints load with ``weights_only=True``.
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back the RNG states :func:`capture` took."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(
                "checkpoint holds CUDA RNG states for other GPUs; CUDA RNG not restored", stacklevel=2
            )
