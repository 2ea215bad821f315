"""cudalab: a reproducible PyTorch-CUDA research environment.

The package is layered so that data flows one way: :mod:`cudalab.env` knows whether a machine can do
GPU work and what it delivers; workloads build on it; :mod:`cudalab.cli` sits on top.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cudalab")
except PackageNotFoundError:  # running from a source tree (PYTHONPATH=src) without installation
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
