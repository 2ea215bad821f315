"""Shared fixtures: the real-data folder, and the GPU gate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests with a reason when selected (-m gpu) on a machine without a usable GPU."""
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if gpu_items and not _cuda_usable():
        skip = pytest.mark.skip(reason="needs a usable CUDA GPU (run on the device machine)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team's real test data (../shared/data beside the checkout, or $CUDALAB_DATA); skip when absent."""
    root = Path(os.environ.get("CUDALAB_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set CUDALAB_DATA)")
    return root
