"""Planetoid citation graphs (Cora, CiteSeer) with the public split of Yang et al. (2016).

Files are read in place from ``<root>/<Name>/raw/ind.<name>.*`` (the layout PyG's ``Planetoid``
uses), so a read-only data folder works and nothing is written beside it. When the raw files are
absent, PyG's ``Planetoid(root, name)`` downloads them, as it would for any PyG user.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from torch_geometric.data import Data

Dataset = Literal["Cora", "CiteSeer"]
_RAW = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def raw_dir(root: Path, name: Dataset) -> Path:
    return Path(root) / name / "raw"


def has_raw(root: Path, name: Dataset) -> bool:
    d = raw_dir(root, name)
    return all((d / f"ind.{name.lower()}.{suffix}").is_file() for suffix in _RAW)


def load_planetoid(root: str | Path, name: Dataset, *, download: bool = True) -> Data:
    """The graph with ``x``, ``edge_index`` (both directions), ``y`` and train/val/test masks.

    Raises ``ValueError`` naming the folder when the files are missing and ``download`` is off, or
    when a raw file is unreadable.
    """
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script (deprecated)
        warnings.simplefilter("ignore", FutureWarning)
        from torch_geometric.io import read_planetoid_data

    root = Path(root).expanduser()
    if has_raw(root, name):
        try:
            return read_planetoid_data(str(raw_dir(root, name)), name)
        except Exception as exc:  # pickle/format errors in a raw file
            raise ValueError(f"{raw_dir(root, name)}: unreadable Planetoid files ({exc})") from None
    if not download:
        raise ValueError(f"{raw_dir(root, name)}: no Planetoid files (ind.{name.lower()}.x, ...) there")
    from torch_geometric.datasets import Planetoid

    try:
        return Planetoid(str(root), name)[0]
    except Exception as exc:  # no network, a proxy page instead of the file, ...
        raise ValueError(
            f"{raw_dir(root, name)}: no Planetoid files there and the download failed ({exc})"
        ) from None


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to one (Kipf & Welling's and Velickovic et al.'s feature preprocessing)."""
    s = x.sum(dim=1, keepdim=True)
    return x / s.clamp_min(1e-12)
