"""Our single-pulse search against PRESTO's on the same files, quiet and beside a competing CPU load.

PRESTO (Ransom 2001; https://github.com/scottransom/presto) is the field's reference: ``rfifind``
(an RFI mask), ``DDplan.py`` (the DM plan), ``prepsubband`` (dedispersion, one call per plan step)
and ``single_pulse_search.py`` (boxcar search per DM trial). ``scripts/build_presto.sh SRC PREFIX``
builds it here; pass ``--presto PREFIX``. Without it the script says so and exits 0.

Cases (each searched by both, DM 0 to the case's maximum, threshold 6, boxcars to 50 ms):

- ``tutorial``: the shared 60 s, 64-channel, 2-bit file with a P = 250 ms, DM 30 pulsar: rotations
  with a single pulse found at S/N >= 7 (PRESTO's events, ours candidates; any DM);
- ``bursts``: a simulated 1024-channel L-band observation (``simulate.acceptance_config``: six bursts
  of S/N 10-20 at DM 95-960, broadband impulses, carriers) and one of 256 channels with eight bright
  bursts: per burst both find, the S/N of each (PRESTO's brightest event within 20 ms and 10 % of the
  DM, ours the matching candidate) and the ratio.

Each search is timed by wall clock from the file to the list (PRESTO: its four programs as
subprocesses; ours: ``search_file`` in a subprocess, including Python's and torch's start), quiet and
with ``--load`` busy processes (default: one per core) competing for the cores; each tool runs
``--repeats`` times per case, alternating with the other, and the medians are compared (a shared
machine's slow spells then fall on both). PRESTO's own limits
on short files are left as they are (prepsubband works in fixed blocks; single_pulse_search in
chunks of 8000 samples, detrended in blocks of 1000) and reported rather than hidden.

    python benchmarks/radio_vs_presto.py --presto /opt/presto [--data ../shared/data] [--load N]
        [--repeats 3] [--cases tutorial,acceptance,bright]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cudalab.radio.io.observation import open_observation
from cudalab.radio.simulate import Burst, SimConfig, acceptance_config, simulate

MAX_WIDTH_S = 0.05
THRESHOLD = 6.0
PULSAR_PERIOD_S = 0.25


def _spin() -> None:  # a competing CPU load
    while True:
        pass


class Load:
    """``n`` busy processes for the duration of a ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[mp.Process] = []

    def __enter__(self) -> Load:
        self.procs = [mp.Process(target=_spin, daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
            p.join()


def presto_env(prefix: Path) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(p) for p in (prefix / "lib" / "x86_64-linux-gnu", prefix / "lib") if p.exists()]
    env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = f"{prefix / 'bin'}:{env['PATH']}"
    return env


def ddplan(prefix: Path, fil: Path, dm_max: float, nsub: int) -> list[dict[str, float]]:
    """DDplan.py's plan for ``fil`` from DM 0 to ``dm_max``: rows of its table."""
    h = open_observation(fil).header
    bw = abs(h.foff_mhz) * h.nchans
    fctr = (h.fmin_mhz + h.fmax_mhz) / 2
    out = subprocess.run(
        [str(prefix / "py" / "bin" / "python"), str(prefix / "bin" / "DDplan.py"),
         "-l", "0", "-d", str(dm_max), "-n", str(h.nchans), "-b", f"{bw:.6f}", "-t", f"{h.tsamp_s:.9g}",
         "-f", f"{fctr:.6f}", "-s", str(nsub), "-o", str(fil.parent / "ddplan.eps")],
        capture_output=True, text=True, env=presto_env(prefix), check=True,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 9 and all(re.fullmatch(r"[0-9.]+", p) for p in parts):
            lo, _hi, ddm, ds, dsub, ndm, per_call, calls, _ = (float(p) for p in parts)
            rows.append({"lodm": lo, "dmstep": ddm, "downsamp": ds, "dsubdm": dsub, "per_call": per_call, "calls": calls, "ndm": ndm})  # fmt: skip
    if not rows:
        raise RuntimeError(f"DDplan.py gave no plan:\n{out}")
    return rows


def run_presto(prefix: Path, fil: Path, dm_max: float, work: Path) -> tuple[float, np.ndarray]:
    """rfifind, DDplan, prepsubband and single_pulse_search on ``fil``: ``(wall seconds, events)`` with
    events ``(dm, sigma, time_s)``."""
    h = open_observation(fil).header
    nsub = min(h.nchans, 128 if h.nchans >= 512 else 32)
    env = presto_env(prefix)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["rfifind", "-time", "2.0", "-o", "rfi", str(fil)], cwd=work, env=env, check=True, capture_output=True)  # fmt: skip
    for row in ddplan(prefix, fil, dm_max, nsub):
        for call in range(int(row["calls"])):
            subprocess.run(
                ["prepsubband", "-nobary", "-lodm", f"{row['lodm'] + call * row['dsubdm']:.3f}",
                 "-dmstep", f"{row['dmstep']:.3f}", "-numdms", str(int(row["per_call"])), "-nsub", str(nsub),
                 "-downsamp", str(int(row["downsamp"])), "-mask", "rfi_rfifind.mask", "-o", "sp", str(fil)],
                cwd=work, env=env, check=True, capture_output=True,
            )  # fmt: skip
    dats = sorted(str(p.name) for p in work.glob("sp_DM*.dat"))
    subprocess.run(
        [str(prefix / "py" / "bin" / "python"), str(prefix / "bin" / "single_pulse_search.py"),
         "-t", str(THRESHOLD), "-m", str(MAX_WIDTH_S), "-p", *dats],
        cwd=work, env=env, check=True, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    events = []
    for p in work.glob("sp_DM*.singlepulse"):
        rows = [line.split()[:3] for line in p.read_text().splitlines() if line and not line.startswith("#")]
        if rows:
            events.append(np.array(rows, dtype=np.float64))
    return wall, np.vstack(events) if events else np.zeros((0, 3))


OURS = """
import json, sys, time
t0 = time.perf_counter()
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.search import search_file
r = search_file(sys.argv[1], SearchConfig(dm_max=float(sys.argv[2]), device=sys.argv[3],
                snr_threshold=float(sys.argv[4]), max_width_s=float(sys.argv[5])))
print(json.dumps({"wall_s": time.perf_counter() - t0, "search_s": r.seconds,
                  "cands": [[c.dm, c.snr, c.time_s] for c in r.candidates]}))
"""


def run_ours(fil: Path, dm_max: float, device: str) -> tuple[float, float, np.ndarray]:
    """Our search of ``fil`` in a fresh process: ``(wall seconds, search seconds, candidates)`` with
    candidates ``(dm, snr, time_s)``."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", OURS, str(fil), str(dm_max), device, str(THRESHOLD), str(MAX_WIDTH_S)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, float(r["search_s"]), np.array(r["cands"]).reshape(-1, 3)


def rotations(t: np.ndarray) -> int:
    """Rotations of the tutorial pulsar with a detection: the on-pulse phase found from the detections'
    histogram (5 % of a turn either side of its peak), then distinct rotation numbers."""
    if not len(t):
        return 0
    phase = (t / PULSAR_PERIOD_S) % 1.0
    peak = (np.argmax(np.histogram(phase, bins=20, range=(0, 1))[0]) + 0.5) / 20
    on = np.abs((phase - peak + 0.5) % 1.0 - 0.5) < 0.05
    return len(set(np.round(t[on] / PULSAR_PERIOD_S - peak).astype(int)))


def best_near(rows: np.ndarray, dm: float, t: float) -> float | None:
    """The brightest of ``rows`` ``(dm, snr, time_s)`` within 20 ms and 10 % (at least 2) of DM."""
    if not len(rows):
        return None
    near = (np.abs(rows[:, 2] - t) <= 0.02) & (np.abs(rows[:, 0] - dm) <= max(2.0, 0.1 * dm))
    return float(rows[near, 1].max()) if near.any() else None


def bright_bursts() -> SimConfig:
    bursts = tuple(
        Burst(time_s=0.6 + 1.5 * i, dm=dm, snr=snr, width_s=w)
        for i, (dm, snr, w) in enumerate(
            [(60, 15, 1e-3), (150, 25, 2e-3), (300, 12, 0.5e-3), (450, 20, 4e-3),
             (600, 30, 1e-3), (800, 14, 8e-3), (250, 40, 2e-3), (120, 10, 3e-3)]
        )
    )  # fmt: skip
    return SimConfig(
        nchans=256, foff_mhz=-300.0 / 256, tsamp_s=256e-6, duration_s=13.0, seed=3, bursts=bursts
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presto", type=Path, default=Path(os.environ.get("PRESTO_PREFIX", "/opt/presto")))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CUDALAB_DATA", "../shared/data")))
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2, help="competing busy processes")
    ap.add_argument(
        "--repeats", type=int, default=3,
        help="runs of each tool per case, alternating; wall times are their medians",
    )  # fmt: skip
    ap.add_argument(
        "--cases", default="tutorial,acceptance,bright", help="comma-separated subset of the cases"
    )
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - {"tutorial", "acceptance", "bright"}
    if unknown or args.repeats < 1:
        print(f"radio_vs_presto: unknown case {sorted(unknown)} or --repeats < 1", file=sys.stderr)
        return 2
    if (
        not (args.presto / "bin" / "prepsubband").exists()
        or not (args.presto / "py" / "bin" / "python").exists()
    ):
        print(
            f"PRESTO is not installed in {args.presto}: build it with scripts/build_presto.sh SRC {args.presto}"
        )
        return 0
    tutorial = args.data.resolve() / "radio" / "tutorial.fil"  # PRESTO's tools run in a work folder
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cudalab-vs-presto-") as tmp:
        work = Path(tmp)
        files: list[tuple[str, Path, float, list[dict[str, Any]]]] = []
        if "tutorial" in cases:
            files.append(("tutorial", tutorial, 100.0, []))
        for name, cfg, dm_max in (
            ("acceptance", acceptance_config(), 1000.0),
            ("bright", bright_bursts(), 1000.0),
        ):
            if name in cases:
                truth = simulate(cfg, work / f"{name}.fil")
                files.append((name, work / f"{name}.fil", dm_max, truth["pulses"]))
        for load in (0, args.load) if args.load else (0,):  # --load 0: the quiet runs only
            with Load(load):
                for name, fil, dm_max, pulses in files:
                    # alternating runs, so that a slow spell of a shared machine hits both tools
                    p_walls, o_walls, o_searches = [], [], []
                    for _ in range(args.repeats):
                        shutil.rmtree(work / "presto", ignore_errors=True)
                        p_wall, events = run_presto(args.presto, fil, dm_max, work / "presto")
                        o_wall, o_search, cands = run_ours(fil, dm_max, args.device)
                        p_walls.append(p_wall)
                        o_walls.append(o_wall)
                        o_searches.append(o_search)
                    p_wall, o_wall = float(np.median(p_walls)), float(np.median(o_walls))
                    row: dict[str, Any] = {
                        "case": name, "load": load, "repeats": args.repeats,
                        "presto_s": round(p_wall, 2), "ours_s": round(o_wall, 2),
                        "ours_search_s": round(float(np.median(o_searches)), 2),
                        "time_ratio": round(o_wall / p_wall, 3),
                        "presto_runs_s": [round(t, 2) for t in p_walls],
                        "ours_runs_s": [round(t, 2) for t in o_walls],
                    }  # fmt: skip
                    if name == "tutorial":
                        row["presto_rotations_ge_7"] = rotations(events[events[:, 1] >= 7, 2])
                        row["ours_rotations_ge_7"] = rotations(cands[cands[:, 1] >= 7, 2])
                        row["presto_rotations_ge_6"] = rotations(events[:, 2])
                        row["ours_rotations_ge_6"] = rotations(cands[:, 2])
                    else:
                        both = []
                        for p in pulses:
                            a, b = (
                                best_near(cands, p["dm"], p["time_s"]),
                                best_near(events, p["dm"], p["time_s"]),
                            )
                            if a is not None and b is not None:
                                both.append((p["snr"], a, b))
                        ratios = [a / b for _, a, b in both]
                        row |= {
                            "injected": len(pulses),
                            "ours_found": sum(best_near(cands, p["dm"], p["time_s"]) is not None for p in pulses),
                            "presto_found": sum(best_near(events, p["dm"], p["time_s"]) is not None for p in pulses),
                            "snr_ratio_median": round(float(np.median(ratios)), 3) if ratios else None,
                            "snr_ratio_min": round(float(np.min(ratios)), 3) if ratios else None,
                            "pairs": [[round(x, 2) for x in t] for t in both],
                        }  # fmt: skip
                    rows.append(row)
                    print(json.dumps({"benchmark": "radio_vs_presto", **row}), flush=True)
    print("\n| case | load | ours (s) | PRESTO (s) | ratio | sensitivity |\n|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] == "tutorial":
            sens = (
                f"rotations >= 7 sigma: {r['ours_rotations_ge_7']} vs {r['presto_rotations_ge_7']}; "
                f">= 6: {r['ours_rotations_ge_6']} vs {r['presto_rotations_ge_6']}"
            )
        else:
            sens = (
                f"found {r['ours_found']} vs {r['presto_found']} of {r['injected']}; "
                f"S/N ours/PRESTO median {r['snr_ratio_median']}, min {r['snr_ratio_min']}"
            )
        print(f"| {r['case']} | {r['load']} | {r['ours_s']} | {r['presto_s']} | {r['time_ratio']} | {sens} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
