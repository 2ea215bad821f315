"""CpuShare: torch's CPU threads follow the cores other processes leave free."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

import pytest
import torch

from cudalab.env import cpushare
from cudalab.env.cpushare import CpuShare, busy_seconds


def _spin() -> None:
    while True:
        pass


def test_busy_seconds_reads_proc_stat_per_cpu(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy = user + nice + system + irq + softirq + steal
    stat.write_text(
        "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 100 1 10 500 7 2 3 4 0 0\ncpu1 200 0 20 400 0 0 0 0 0 0\n"
    )
    tick = os.sysconf("SC_CLK_TCK")
    assert busy_seconds([0], stat) == pytest.approx(120 / tick)
    assert busy_seconds([0, 1], stat) == pytest.approx(340 / tick)
    assert busy_seconds([0], tmp_path / "missing") is None


def test_threads_follow_the_measured_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # Four CPUs; between updates others use 0, 2.2, 2.5, 4 and 0.2 cores' worth: a core counts as free
    # when 0.7 of it is, so 4, 2, 1, 1 and 4 threads.
    clock = {"wall": 0.0, "busy": 0.0}
    monkeypatch.setattr(cpushare, "_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(cpushare.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(cpushare.time, "process_time", lambda: 0.0)
    monkeypatch.setattr(cpushare, "busy_seconds", lambda cpus: clock["busy"])
    before = torch.get_num_threads()
    with CpuShare(max_threads=4) as share:
        for others, want in ((0.0, 4), (2.2, 2), (2.5, 1), (4.0, 1), (0.2, 4)):
            clock["wall"] += 1.0
            clock["busy"] += others
            assert share.update() == want == torch.get_num_threads()
        clock["wall"] += 0.01  # too short to judge: unchanged
        assert share.update() == 4
    assert torch.get_num_threads() == before
    assert share.history == [4, 2, 1, 1, 4, 4]


def test_the_probe_waits_only_what_the_interval_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work done since the share was made counts towards the interval (its own CPU time is left
    out): a probe 0.07 s later waits 0.03 s, one after 0.2 s not at all, and both measure."""
    clock = {"wall": 0.0, "busy": 0.0, "own": 0.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        clock["wall"] += s
        clock["busy"] += 2.0 * s  # two other processes busy throughout

    monkeypatch.setattr(cpushare, "_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpushare.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(cpushare.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(cpushare.time, "sleep", sleep)
    monkeypatch.setattr(cpushare, "busy_seconds", lambda cpus: clock["busy"])
    with CpuShare(max_threads=2) as share:
        clock["wall"] += 0.07  # planning: this process busy, the two others too
        clock["own"] += 0.07
        clock["busy"] += 0.07 + 2 * 0.07
        assert share.probe() == 1 and slept == [0.03]
    with CpuShare(max_threads=2) as share:
        clock["wall"] += 0.2
        clock["own"] += 0.2
        clock["busy"] += 0.2  # only this process: both cores free
        assert share.probe() == 2 and slept == [0.03]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_machine_gets_one_thread() -> None:
    ncpu = len(os.sched_getaffinity(0))
    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(ncpu)]
    for p in procs:
        p.start()
    try:
        with CpuShare(max_threads=ncpu) as share:
            assert share.probe(0.3) == 1
    finally:
        for p in procs:
            p.terminate()
            p.join()
