"""Data flow one way: env -> runs -> train -> workloads -> cli (DESIGN.md), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cudalab"

#: What each layer may import from cudalab, besides itself and the shared helpers.
SHARED = {"cudalab", "cudalab._io", "cudalab._console", "cudalab.errors"}
ALLOWED = {
    "env": set(),
    "runs": {"env"},
    "train": {"env", "runs"},
    "graph": {"env", "runs", "train"},
    "radio": {"env", "runs", "train"},
    "lab": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "cudalab" or m.startswith("cudalab.")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for module in _imports(path):
            if module in SHARED:
                continue
            top = module.split(".")[1]
            if top != layer and top not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(SRC)} imports {module}")
    assert not wrong, "\n".join(wrong)
