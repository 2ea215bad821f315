"""Injection-recovery: how much of what is there does the search find, and how accurately?

Random bursts (DM 50-2000 log-uniform, width 0.2-20 ms log-uniform, S/N 6-30) are injected into
synthetic Gaussian noise and into the real Apertif background (../shared/data/radio/apertif_noise.fil,
tiled), searched, and matched to the truth. Printed per case, as JSON lines: recall per S/N bin; recall
at S/N >= 10 with |dDM| <= max(2, 2 %) against the goal of 98 % (the reference) and their ratio, and
beside it the fraction within 3 of the candidates' stated DM errors; median DM and time errors; the
recovered over injected (ideal) S/N, by width and DM, in our definition and in heimdall's (the
boxcar-filtered series over its own robust rms, Barsdell et al. 2012), measured on the same
dedispersed data; and false alarms per hour (candidates >= 7 and >= 8 sigma) on pure noise.

    python benchmarks/radio_injection.py [--quick] [--device auto|cpu|cuda] [--data DIR] [--seed N] [--case NAME]
                                         [--noise-only]

``--quick`` runs small cases in a minute on a 2-core CPU (so the script stays tested); the full run is
meant for the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cudalab.radio.constants import dispersion_delay_s
from cudalab.radio.dedispersion.direct import dedisperse
from cudalab.radio.evaluate import dm_tolerance, recovery
from cudalab.radio.io.observation import Observation, open_observation
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.search import search_file
from cudalab.radio.simulate import SimConfig, planned_header, random_bursts, simulate
from cudalab.radio.single_pulse.candidates import Candidate
from cudalab.radio.single_pulse.refine import CleanSpan, inside
from cudalab.radio.single_pulse.search import running_median

GOAL_RECALL = 0.98
GOAL_SNR_RATIO = 0.93
SNR_BINS = [(6, 8), (8, 10), (10, 15), (15, 30.1)]
WIDTH_BINS_MS = [(0.2, 1.0), (1.0, 4.0), (4.0, 20.1)]
DM_BINS = [(50, 200), (200, 700), (700, 2001)]


def heimdall_snr(obs: Observation, cand: Candidate, search: SearchConfig) -> float:
    """The candidate's S/N as heimdall defines it: the data dedispersed at its DM (cleaned as the search
    cleans them), less a running median, filtered with its boxcar, and the filtered series' peak near
    the candidate over that series' own robust rms (1.4826 x MAD), not over sqrt(width) x the
    unfiltered series' rms as ours. The two agree on white noise; heimdall's is lower where the noise
    is red."""
    h = obs.header
    w = cand.width_samples
    delays = np.rint(dispersion_delay_s(cand.dm, h.freqs_mhz, h.fmax_mhz, search.k_dm) / h.tsamp_s).astype(
        np.int64
    )
    half = max(8192, 16 * w)
    start, count = cand.sample - half, 2 * half + int(delays.max())
    span = CleanSpan.read(obs, start, count, search.rfi, torch.device("cpu"))
    series = dedisperse(span.data, torch.from_numpy(delays[None]), 2 * half, weights=(~span.mask).float())
    # only the outputs that read the file: its edge's fill has no noise (the pulse's own window is
    # kept whatever the file)
    v0, v1 = inside(start, 2 * half, int(delays.max()), h.nsamples)
    v0, v1 = min(v0, max(0, half - 3 * w - 4)), max(v1, min(2 * half, half + 3 * w + 5))
    series = series[:, v0:v1]
    series = series - running_median(series, max(8, int(search.baseline_s / h.tsamp_s)))
    c = torch.nn.functional.pad(torch.cumsum(series[0].double(), 0), (1, 0))
    f = (c[w:] - c[:-w]).numpy()  # boxcar sums starting at each sample
    rms = 1.4826 * np.median(np.abs(f - np.median(f)))
    centre = half - v0 - w // 2
    return float(f[max(0, centre - 2 * w - 4) : centre + 2 * w + 5].max() / rms)


@dataclass(frozen=True)
class Case:
    name: str
    sim: SimConfig
    bursts: int
    dm_range: tuple[float, float]
    search: SearchConfig


def cases(quick: bool, data: Path | None, device: str) -> list[Case]:
    synth = SimConfig(nchans=1024, tsamp_s=128e-6, fch1_mhz=1500.0, foff_mhz=-300.0 / 1024, duration_s=60.0)
    dm_range = (50.0, 2000.0)
    n = 80
    if quick:
        synth = replace(synth, nchans=128, foff_mhz=-300.0 / 128, tsamp_s=256e-6, duration_s=12.0)
        dm_range, n = (50.0, 500.0), 16
    search = SearchConfig(dm_max=dm_range[1] * 1.05, device=device, cutouts=0)  # type: ignore[arg-type]
    out = [Case("synthetic", synth, n, dm_range, search)]
    bg = (
        data or Path(os.environ.get("CUDALAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ) / ("radio/apertif_noise.fil")
    if bg.is_file():
        apertif = SimConfig(background=str(bg), duration_s=2.0 if quick else 60.0)
        a_range = (50.0, 150.0) if quick else dm_range
        out.append(
            Case("apertif", apertif, 2 if quick else 60, a_range, replace(search, dm_max=a_range[1] * 1.05))
        )
    return out


def run_case(case: Case, workdir: Path, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    header = planned_header(case.sim)
    bursts = random_bursts(
        case.bursts,
        rng,
        header=header,
        dm_range=case.dm_range,
        width_range_s=(0.2e-3, 20e-3),
        snr_range=(6.0, 30.0),
        spacing_s=0.6 if case.sim.background is None else 0.25,
    )
    path = workdir / f"{case.name}.fil"
    truth = simulate(replace(case.sim, bursts=tuple(bursts), seed=seed), path)
    t0 = time.perf_counter()
    res = search_file(path, case.search)
    seconds = time.perf_counter() - t0
    rows = recovery(res.candidates, truth, snr_min=0.0)["rows"]
    obs = open_observation(path)
    for r in rows:  # the matched candidate's S/N in heimdall's definition, on the same data
        c = r.pop("candidate", None)
        r["heimdall_snr"] = heimdall_snr(obs, c, case.search) if c is not None else None
    by_bin = {}
    for lo, hi in SNR_BINS:
        sel = [r for r in rows if lo <= r["snr"] < hi]
        by_bin[f"{lo}-{hi:g}"] = {
            "n": len(sel),
            "recall": (sum(r["dm_ok"] for r in sel) / len(sel)) if sel else None,
        }
    strong = [r for r in rows if r["snr"] >= 10]
    recall10 = sum(r["dm_ok"] for r in strong) / len(strong) if strong else float("nan")
    # The physical reference: an unbiased estimator at the Cramer-Rao bound meets |dDM| <= tol with
    # probability erf(tol / (sqrt(2) sigma_CR)); its expected recall on these very bursts, and ours on
    # the bursts whose bound is at most a third of the tolerance (where it would be 99.7 %).
    for r in strong:
        r["p_ideal"] = math.erf(dm_tolerance(r["dm"]) / (math.sqrt(2) * r["dm_cramer_rao"]))
    ideal10 = float(np.mean([r["p_ideal"] for r in strong])) if strong else float("nan")
    resolvable = [r for r in strong if 3 * r["dm_cramer_rao"] <= dm_tolerance(r["dm"])]
    found = [r for r in rows if r["found"]]
    within = [r["within_3_sigma"] for r in found]

    def ratio(sel: list[dict[str, Any]], key: str) -> float | None:
        v = [r[key] / r["snr"] for r in sel if r[key] is not None]
        return round(float(np.median(v)), 3) if v else None

    strong_found = [r for r in strong if r["found"]]
    snr_study = {
        "median_ours_over_ideal": ratio(strong_found, "found_snr"),
        "median_heimdall_over_ideal": ratio(strong_found, "heimdall_snr"),
        "by_width_ms": {
            f"{lo}-{hi:g}": {
                "n": len(sel := [r for r in strong_found if lo <= r["width_s"] * 1e3 < hi]),
                "ours": ratio(sel, "found_snr"),
                "heimdall": ratio(sel, "heimdall_snr"),
            }
            for lo, hi in WIDTH_BINS_MS
        },
        "by_dm": {
            f"{lo}-{hi:g}": {
                "n": len(sel := [r for r in strong_found if lo <= r["dm"] < hi]),
                "ours": ratio(sel, "found_snr"),
                "heimdall": ratio(sel, "heimdall_snr"),
            }
            for lo, hi in DM_BINS
        },
    }
    return {
        "benchmark": "radio_injection",
        "case": case.name,
        "device": res.device,
        "nchans": header.nchans,
        "duration_s": header.duration_s,
        "dm_range": list(case.dm_range),
        "injected": len(rows),
        "recall_snr_ge_10": recall10,
        "reference": f"goal {GOAL_RECALL:.0%} recall at S/N >= 10 with |dDM| <= max(2, 2%)",
        "reference_value": GOAL_RECALL,
        "ratio": recall10 / GOAL_RECALL if strong else None,
        "ideal_recall_snr_ge_10": ideal10,
        "ratio_to_ideal": recall10 / ideal10 if strong else None,
        "expected_misses_ideal": float(sum(1 - r["p_ideal"] for r in strong)),
        "resolvable_snr_ge_10": len(resolvable),
        "recall_resolvable": sum(r["dm_ok"] for r in resolvable) / len(resolvable) if resolvable else None,
        "detected_snr_ge_10": sum(r["found"] for r in strong) / len(strong) if strong else None,
        "dm_within_3_stated_sigma": sum(within) / len(within) if within else None,
        "snr_ratio_goal": GOAL_SNR_RATIO,
        "snr_study": snr_study,
        "recall_by_snr": by_bin,
        # the bursts of S/N >= 10 that miss the goal's DM accuracy, to see what limits it
        "misses": [
            {
                "dm": round(r["dm"], 2),
                "width_ms": round(r["width_s"] * 1e3, 3),
                "snr": round(r["snr"], 1),
                "dm_error": None if r["dm_error"] is None else round(r["dm_error"], 2),
                "cramer_rao": round(r["dm_cramer_rao"], 2),
                "p_miss_ideal": round(1 - r["p_ideal"], 3),
            }
            for r in strong
            if not r["dm_ok"]
        ],
        "median_abs_dm_error": float(np.median([abs(r["dm_error"]) for r in found])) if found else None,
        "median_abs_dm_error_frac": float(np.median([abs(r["dm_error"]) / r["dm"] for r in found]))
        if found
        else None,
        "median_abs_time_error_ms": float(np.median([abs(r["time_error_s"]) * 1e3 for r in found]))
        if found
        else None,
        "search_s": seconds,
        "realtime_factor": header.duration_s / seconds,
    }


def false_alarms(case: Case, workdir: Path, seed: int) -> dict[str, object]:
    path = workdir / f"{case.name}-noise.fil"
    simulate(replace(case.sim, bursts=(), pulsars=(), rfi=(), seed=seed + 1), path)
    res = search_file(path, case.search)
    n8 = sum(c.snr >= 8.0 for c in res.candidates)
    n7 = sum(c.snr >= 7.0 for c in res.candidates)
    hours = res.header.duration_s / 3600
    return {
        "benchmark": "radio_false_alarms",
        "case": case.name,
        "device": res.device,
        "duration_s": res.header.duration_s,
        "candidates_ge_8": n8,
        "candidates_ge_7": n7,
        "max_snr": max((c.snr for c in res.candidates), default=None),
        "false_alarms_per_hour": n8 / hours,
        "candidates_ge_6": len(res.candidates),
        "threshold": case.search.snr_threshold,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case", action="append", choices=["synthetic", "apertif"], help="only these cases")
    ap.add_argument("--noise-only", action="store_true", help="only the false alarms on pure noise")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(args.quick, args.data, args.device):
            if args.case and case.name not in args.case:
                continue
            if not args.noise_only:
                r = run_case(case, Path(tmp), args.seed)
                print(json.dumps(r), flush=True)
                results.append(r)
            if case.sim.background is None:
                fa = false_alarms(case, Path(tmp), args.seed)
                print(json.dumps(fa), flush=True)
                results.append(fa)
    print(
        f"\n{'case':<11} {'injected':>8} {'recall S/N>=10':>15} {'goal':>6} {'detected':>9} {'dDM<3sig':>9} "
        f"{'|dDM|/DM':>9} {'|dt| ms':>8} {'x real time':>11}"
    )
    for r in results:
        if r["benchmark"] == "radio_injection":
            print(
                f"{r['case']:<11} {r['injected']:>8} {r['recall_snr_ge_10']:>15.3f} {GOAL_RECALL:>6.2f} "
                f"{(r['detected_snr_ge_10'] or 0):>9.3f} {(r['dm_within_3_stated_sigma'] or 0):>9.3f} "
                f"{(r['median_abs_dm_error_frac'] or 0):>9.4f} {(r['median_abs_time_error_ms'] or 0):>8.2f} "
                f"{r['realtime_factor']:>11.2f}"
            )
            print(
                f"{'':<11} DM accuracy against physics: an estimator at the Cramer-Rao bound would reach "
                f"{r['ideal_recall_snr_ge_10']:.3f} on these bursts ({r['expected_misses_ideal']:.1f} misses expected); "
                f"ours / ideal {r['ratio_to_ideal']:.3f}; on the {r['resolvable_snr_ge_10']} whose bound is <= 1/3 "
                f"of the tolerance, ours {r['recall_resolvable']}"
            )
            st = r["snr_study"]
            print(
                f"{'':<11} S/N recovered / ideal (S/N >= 10, median): ours {st['median_ours_over_ideal']}, "
                f"heimdall's {st['median_heimdall_over_ideal']} (goal {GOAL_SNR_RATIO}); by width (ms) "
                + ", ".join(
                    f"{k}: {v['ours']} / {v['heimdall']} (n={v['n']})" for k, v in st["by_width_ms"].items()
                )
                + "; by DM "
                + ", ".join(
                    f"{k}: {v['ours']} / {v['heimdall']} (n={v['n']})" for k, v in st["by_dm"].items()
                )
            )
        else:
            print(
                f"{r['case']:<11} pure noise {r['duration_s']:.0f} s: {r['candidates_ge_7']} candidates >= 7 sigma, "
                f"{r['candidates_ge_8']} >= 8 sigma "
                f"({r['false_alarms_per_hour']:.0f} per hour)"
            )


if __name__ == "__main__":
    main()
