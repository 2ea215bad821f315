"""The Python entry inside a real Jupyter kernel, as a JupyterLab user calls it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]


def test_fit_runs_in_a_notebook_and_shows_its_progress(tmp_path: Path) -> None:
    cells = [
        f"import sys; sys.path[:0] = [{str(REPO / 'src')!r}, {str(REPO)!r}]",
        "from dataclasses import replace\n"
        "from cudalab.train import fit\n"
        "from examples.spirals import SpiralConfig, make_task\n"
        "cfg = SpiralConfig(points=400)\n"
        "cfg = replace(cfg, train=replace(cfg.train, max_epochs=4, tensorboard=False))",
        f"result = fit(make_task, cfg, runs={str(tmp_path)!r})\nprint(result.summary['headline'])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "'metric': 'val_acc'" in text
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors
    runs = list((tmp_path / "custom").iterdir())
    assert len(runs) == 1 and json.loads((runs[0] / "manifest.json").read_text())["status"] == "finished"
