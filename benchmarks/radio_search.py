"""Speed of the single-pulse search against real time, for each dedispersion method, with recall.

For each case a SIGPROC file (8-bit) with injected bursts is simulated, read once so it sits in the
page cache, and searched (file -> candidates) with every method in the same run:

- ``naive``: the direct sum at full time resolution for every trial (no adaptive scrunching), on the
  torch reference: the deliberately simple baseline;
- ``direct``: the direct sum with adaptive time scrunching, on the torch reference;
- ``subband``: two-stage dedispersion (``--subbands``; ``cudalab.radio.dedispersion.subband``) with scrunching;
- on a GPU also ``direct-triton`` and ``subband-triton``: the same on the Triton kernel
  (``cudalab.radio.kernels.launch``), the fast path.

The Triton methods are run once on a file of one block first, so their compilation and autotuning
(once per process) are not timed. The methods run fastest first and each prints its record as soon as
it is done, so a run cut short by a time limit keeps what it measured (the naive reference, slowest,
comes last). Each record also gives the search's memory bound and, on a GPU, its measured peak of
device memory.

Printed per case and method, as JSON lines: ``realtime_factor_dedisp`` (observation seconds per
second of dedispersion), ``realtime_factor_search`` (end to end), channel-adds per second of data, the
brute-force floor (the naive method's adds over the FP32 rate: datasheet peak on a known GPU, marked
as such, since a measured add rate is not taken yet), and ``recall`` (injected bursts of S/N >= 10
found at a DM within max(1, 1 %)). Once the naive method has run, one ``radio_search_vs_naive``
record per method gives the naive factor measured in the same run and the ratio to it. Then a
short table.

    python benchmarks/radio_search.py                 # FAST-like 4096 ch and a 1024-ch case (GPU machine)
    python benchmarks/radio_search.py --case fast     # the FAST-like beam only (the GPU acceptance)
    python benchmarks/radio_search.py --quick         # small case, seconds on a CPU (keeps the script tested)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cudalab.radio.dedispersion.plan import make_plan
from cudalab.radio.dedispersion.subband import plan_subbands
from cudalab.radio.evaluate import recovery
from cudalab.radio.io.header import Header
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.memory import block_geometry
from cudalab.radio.pipeline.search import search_file, search_plan
from cudalab.radio.simulate import SimConfig, planned_header, random_bursts, simulate


@dataclass(frozen=True)
class Case:
    name: str
    sim: SimConfig
    dm_max: float
    bursts: int
    subbands: int


CASES = ("fast", "lband")


def cases(quick: bool, duration_s: float | None, names: tuple[str, ...] = CASES) -> list[Case]:
    if quick:
        sim = SimConfig(nchans=128, tsamp_s=256e-6, fch1_mhz=1500.0, foff_mhz=-300.0 / 128, duration_s=5.0)
        return [Case("quick-128ch", sim, 400.0, 4, 16)]
    fast = SimConfig(nchans=4096, tsamp_s=49.152e-6, fch1_mhz=1500.0, foff_mhz=-500.0 / 4096, duration_s=60.0)
    lband = SimConfig(nchans=1024, tsamp_s=64e-6, fch1_mhz=1500.0, foff_mhz=-300.0 / 1024, duration_s=60.0)
    known = {
        "fast": Case("fast-4096ch", fast, 3000.0, 40, 128),
        "lband": Case("lband-1024ch", lband, 2000.0, 40, 64),
    }
    out = [known[n] for n in names]
    if duration_s:
        out = [replace(c, sim=replace(c.sim, duration_s=duration_s)) for c in out]
    return out


def adds_per_second(case: Case, method: str) -> float:
    """Channel-adds the method makes per second of data (time scrunching and stages included)."""
    h = planned_header(case.sim)
    plan = make_plan(h, 0.0, case.dm_max, scrunch=method != "naive")
    total = 0.0
    for s, idx in plan.groups():
        adds = len(idx) * h.nchans
        if method == "subband":
            adds *= plan_subbands(plan.delays_scrunched(s, idx), min(case.subbands, h.nchans)).adds_ratio()
        total += adds / s
    return total / h.tsamp_s


def fp32_adds_per_second(device: str) -> tuple[float | None, str]:
    """The FP32 add rate of this device: its datasheet peak (an FMA slot per add), or None."""
    if not device.startswith("cuda"):
        return None, "no datasheet rate for a CPU"
    import torch

    from cudalab.env.peaks import lookup

    name = torch.cuda.get_device_name()
    peaks = lookup(name)
    if peaks is None or not peaks.fp32_tflops:
        return None, f"no datasheet FP32 rate for {name}"
    return peaks.fp32_tflops * 1e12 / 2, f"datasheet FP32 of {name} (not measured)"


def run_case(case: Case, workdir: Path, device: str, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    header = planned_header(case.sim)
    bursts = random_bursts(
        case.bursts,
        rng,
        header=header,
        dm_range=(50.0, case.dm_max * 0.95),
        width_range_s=(0.3e-3, 10e-3),
        snr_range=(10.0, 30.0),
        spacing_s=1.0,
    )
    path = workdir / f"{case.name}.fil"
    truth = simulate(replace(case.sim, bursts=tuple(bursts), seed=seed), path)
    path.read_bytes()  # into the page cache: the search is timed from memory, not from the disk
    base = SearchConfig(dm_max=case.dm_max, device=device, cutouts=0, refine=0, kernel="torch")  # type: ignore[arg-type]
    resolved = device if device != "auto" else _auto()
    methods: dict[str, SearchConfig] = {}  # fastest first: a run cut short keeps what it measured
    if resolved.startswith("cuda"):
        methods["subband-triton"] = replace(base, subbands=case.subbands, kernel="triton")
        methods["direct-triton"] = replace(base, kernel="triton")
    methods["subband"] = replace(base, subbands=case.subbands)
    methods["direct"] = base
    methods["naive"] = replace(base, scrunch=False)
    triton = [cfg for name, cfg in methods.items() if name.endswith("-triton")]
    if triton:  # compile and autotune on blocks of the timed run's sizes: one block and a bit
        warm = workdir / f"{case.name}-warmup.fil"
        warm_s = min(case.sim.duration_s, _one_block_s(triton[-1], header) * 1.1)
        simulate(replace(case.sim, duration_s=warm_s, bursts=(), seed=seed + 1), warm)
        for cfg in triton:
            search_file(warm, cfg)
    floor_rate, floor_source = fp32_adds_per_second(resolved)
    records: list[dict[str, Any]] = []
    naive_adds = adds_per_second(case, "naive")
    for method, cfg in methods.items():
        t0 = time.perf_counter()
        res = search_file(path, cfg)
        seconds = time.perf_counter() - t0
        rows = recovery(res.candidates, truth, snr_min=10.0)["rows"]
        factor = header.duration_s / seconds
        adds = adds_per_second(case, method.removesuffix("-triton"))
        records.append(
            {
                "benchmark": "radio_search",
                "config": case.name,
                "method": method,
                "device": res.device,
                "kernel": res.kernel,
                "nchans": header.nchans,
                "tsamp_us": header.tsamp_s * 1e6,
                "duration_s": header.duration_s,
                "ndm": len(res.plan.dms),
                "dm_max": float(res.plan.dms[-1]),
                "realtime_factor_dedisp": header.duration_s / max(res.stages.get("dedisperse", 0.0), 1e-9),
                "realtime_factor_search": factor,
                "stages_s": {k: round(v, 4) for k, v in res.stages.items()},
                "adds_per_s_of_data": adds,
                "floor_realtime_factor": floor_rate / naive_adds if floor_rate else None,
                "floor_source": floor_source,
                "recall": sum(r["dm_ok"] for r in rows) / len(rows) if rows else None,
                "injected": len(rows),
                "memory_bound_gb": round(res.memory.working / 1e9, 3),
                "pinned_gb": round(res.memory.pinned / 1e9, 3),
                "peak_device_gb": None
                if res.peak_device_bytes is None
                else round(res.peak_device_bytes / 1e9, 3),
            }
        )
        print(json.dumps(records[-1]), flush=True)
    naive = next(r for r in records if r["method"] == "naive")
    for r in records:
        r["naive_realtime_factor"] = naive["realtime_factor_search"]
        r["ratio_to_naive"] = r["realtime_factor_search"] / naive["realtime_factor_search"]
        keys = (
            "config",
            "method",
            "device",
            "realtime_factor_search",
            "naive_realtime_factor",
            "ratio_to_naive",
        )
        vs = {k: r[k] for k in keys}
        print(json.dumps({"benchmark": "radio_search_vs_naive", **vs}), flush=True)
    return records


def _one_block_s(cfg: SearchConfig, h: Header) -> float:
    """Seconds of data in one block of ``cfg``'s search of a file like ``h`` (gulp plus overlap)."""
    gulp, overlap = block_geometry(search_plan(h, cfg), cfg.gulp, cfg.max_width_s, h.tsamp_s, [])
    return (gulp + overlap) * h.tsamp_s


def _auto() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="A small case, seconds on a CPU.")
    ap.add_argument("--case", action="append", choices=CASES, help="Only these cases (repeatable).")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--duration", type=float, default=None, help="Seconds per file (default 60).")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="cudalab-radio-search-") as tmp:
        for case in cases(args.quick, args.duration, tuple(args.case or CASES)):
            rows += run_case(case, Path(tmp), args.device, args.seed)
    print(
        f"\n{'config':<14} {'method':<14} {'device':<6} {'x RT dedisp':>11} {'x RT search':>11} {'vs naive':>8} "
        f"{'recall':>6} {'mem GB':>7}"
    )
    for r in rows:
        recall = "-" if r["recall"] is None else f"{r['recall']:.2f}"
        print(
            f"{r['config']:<14} {r['method']:<14} {str(r['device'])[:6]:<6} {r['realtime_factor_dedisp']:>11.2f} "
            f"{r['realtime_factor_search']:>11.2f} {r['ratio_to_naive'] or 0:>8.2f} {recall:>6} "
            f"{r['peak_device_gb'] or r['memory_bound_gb']:>7}"
        )


if __name__ == "__main__":
    main()
