"""``cudalab runs`` on run folders as they are found: hand-edited, cut short, of any kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cudalab.cli import main


def _run(
    root: Path, kind: str, run_id: str, manifest: object, summary: object = None, config: str = ""
) -> Path:
    path = root / kind / run_id
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if summary is not None:
        (path / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    if config:
        (path / "config.toml").write_text(config)
    return path


def test_list_show_and_diff_survive_runs_written_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"kind": "graph", "subject": "gcn on Cora", "started_at": "2026-11-01T00:00:00+00:00", "seed": 0}
    _run(
        tmp_path,
        "graph",
        "a",
        good,
        {"headline": {"metric": "test_acc", "value": 81.5, "std": 0.4, "unit": "%"}},
        "lr = 0.01\n",
    )
    _run(
        tmp_path,
        "graph",
        "b",
        {**good, "started_at": 7, "subject": ["x"]},
        {"headline": {"metric": "test_acc", "value": "high"}},
        "lr = 0.02\n",
    )
    _run(
        tmp_path,
        "graph",
        "c",
        {"resumptions": "many", "command": "not a list", "environment": "none"},
        '{"headline": 3',
    )
    _run(tmp_path, "custom", "d", "{not json", None, "this is = = not toml\n")
    _run(tmp_path, "custom", "e", [1, 2], {"headline": None, "x": {"y": [1, "z"]}})
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    assert "graph" in capsys.readouterr().out
    assert main(["runs", "list", "--runs", str(tmp_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["run_id"] for r in rows) == ["a", "b", "c", "d", "e"]
    headlines = {r["run_id"]: r["headline"] for r in rows}
    assert headlines["a"] == "test_acc 81.5 +- 0.4 %" and headlines["b"] == "test_acc high"
    assert {r["run_id"]: r["status"] for r in rows}["a"] == "finished"
    for ref in ("a", "b", "c", "e"):
        assert main(["runs", "show", ref, "--runs", str(tmp_path)]) == 0, ref
        assert main(["runs", "show", ref, "--runs", str(tmp_path), "--json"]) == 0, ref
    capsys.readouterr()
    assert main(["runs", "diff", "a", "b", "--runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == {"lr": [0.01, 0.02]}
    assert main(["runs", "diff", "a", "c", "--runs", str(tmp_path)]) == 0
    # a config that is not TOML is named in one line, exit 2
    assert main(["runs", "show", "d", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.toml: not valid TOML" in err and err.count("\n") == 1


def test_a_runs_root_that_is_a_file_or_absent_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["runs", "list", "--runs", str(tmp_path / "file")]) == 0
    assert "no runs under" in capsys.readouterr().out
    assert main(["runs", "show", "x", "--runs", str(tmp_path / "absent")]) == 2
    assert "x: no such run" in capsys.readouterr().err
    for args in (["--runs", str(tmp_path / "file"), "--run-id", "r"], ["--runs", str(tmp_path / "file")]):
        assert main(["train", "custom", "examples/spirals.py", *args]) == 2
        err = capsys.readouterr().err
        assert "exists and is not a folder" in err and err.count("\n") == 1
