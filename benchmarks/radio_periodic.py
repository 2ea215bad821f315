"""The pulsar search's sensitivity: injection-recovery of simulated pulsars, ours beside riptide's FFA.

Each case is a white-noise time series (``--seconds`` at ``--tsamp``) holding a train of Gaussian
pulses of period ``P`` and duty cycle ``d`` (FWHM over period), scaled so that its ideal S/N (the
matched filter's, ``sqrt(sum s_i^2)`` over unit noise) is the grid value. Ours is the pipeline's
search of a time series: the Fourier search, and the FFA from 0.1 s, sifted together. A case is *found* by us when
a folded candidate among the first ``--fold`` lies within a quarter turn of drift of ``P``
(``|P' - P| < P^2 / 4T``); the detection S/N is that fold's. riptide (``riptide-ffa``, the FFA) searches
the same series in the same run, over periods from ``--riptide-min-period`` (0.1 s: the FFA is made
for long periods; shorter cases are left to ours) to 10 s (or an eighth of the series), and finds a
case when its highest peak within 5 % of ``P`` lies within the same tolerance and reaches 7; its S/N
is that peak's. riptide runs in the interpreter ``--riptide-python`` (it
needs a compiler to install; ``python -m venv /tmp/rip && /tmp/rip/bin/pip install riptide-ffa``).

Each case also has its *true* fold S/N: the series folded at exactly the injected period, whitened
and binned as the pipeline's folds are. The issue's goal counts by it ("found when the folded S/N is
>= 10"), not by the injected ideal: a fold recovers less than the ideal (a wide pulse's mean level
is lost to the baseline, a boxcar over bins is not the matched filter), the more so at short periods.

**Filterbanks** (``--filterbank-snrs``; the whole pipeline, ``run_periodic``, on a file): pulsars at
DM 10-1000 simulated by :mod:`cudalab.radio.simulate` (256 channels over 1200-1500 MHz, 256 us,
``--filterbank-seconds``; equal pulses, no jitter) are dedispersed, searched, sifted and folded as
``cudalab radio periodic FILE`` does with its defaults. Found: a folded candidate within the period
tolerance and within ``max(2, 10 %)`` of the DM. Its true fold S/N is the cleaned filterbank
dedispersed at the injected DM and folded at the injected period.

Printed as JSON lines: one per case (``radio_periodic_case``), then one summary per method and S/N
(``radio_periodic``: fraction found, median recovered / ideal S/N, seconds per series, real-time
factor), three binary MSPs (2.3 and 4.6 ms, 50-150 m/s^2, 268 s) searched without and with the
acceleration search (``radio_periodic_binary``), one line per filterbank case
(``radio_periodic_filterbank``), and the goal (``radio_periodic_goal``: the fraction found among the
cases whose true fold S/N is >= 10, time series and filterbanks apart).

    python benchmarks/radio_periodic.py [--snrs 8,10,15,20,30] [--seconds 60] [--tsamp 1e-4]
                                        [--filterbank-snrs 10,15,20] [--filterbank-seconds 60] [--no-binaries]
                                        [--riptide-python /tmp/rip/bin/python] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cudalab.radio.periodic.fold import baseline_window, fold, fold_bins, prepare, refine
from cudalab.radio.periodic.search import C_M_S, PeriodicConfig, candidates

PERIODS = (0.0015, 0.0057, 0.033, 0.25, 1.3, 5.0)
DUTIES = (0.01, 0.05, 0.2)
#: Filterbank cases: (period s, duty, DM), DM 10-1000; an MSP at low DM, slow pulsars at high DM.
FILTERBANK_CASES = (
    (0.0023, 0.08, 10.0),
    (0.0057, 0.05, 60.0),
    (0.033, 0.05, 200.0),
    (0.25, 0.03, 500.0),
    (0.714, 0.02, 1000.0),
)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def pulse_train(
    n: int, tsamp: float, period: float, duty: float, snr: float, rng: np.random.Generator
) -> np.ndarray:
    t = np.arange(n) * tsamp
    phase = np.mod(t / period + rng.uniform(), 1.0) - 0.5
    shape = np.exp(-0.5 * (phase / (duty / 2.355)) ** 2)
    shape *= snr / np.sqrt(np.sum(shape**2))  # ideal (matched-filter) S/N = snr in unit noise
    return (rng.normal(size=n) + shape).astype(np.float32)


def ours(
    x: np.ndarray, tsamp: float, period: float, n_fold: int, accel_max: float = 0.0
) -> tuple[float | None, float]:
    t0 = time.perf_counter()
    cfg = PeriodicConfig(f_min=min(0.5, 0.5 / period), accel_max=accel_max, accel_ref_hz=250.0)
    # the pipeline's search of a time series (the FFA from 0.1 s)
    cands, _, _ = candidates(torch.from_numpy(x[None]), tsamp, np.array([100.0]), cfg)
    tol = period**2 / (4 * len(x) * tsamp)
    best = None
    # folded as the pipeline folds a time series, but with Pdot searched for accelerated candidates only
    for c in cands[:n_fold]:
        f = refine(
            prepare(x, tsamp, baseline_window(c.period_s)),
            tsamp,
            c.period_s,
            c.accel,
            pdots=5 if c.accel else 1,
        )
        mid = f.period_s + f.pdot * len(x) * tsamp / 2  # an accelerated one's mid-observation period
        if min(abs(f.period_s - period), abs(mid - period)) < max(tol, tsamp) and (
            best is None or f.snr > best
        ):
            best = f.snr
    return best, time.perf_counter() - t0


def true_fold_snr(x: np.ndarray, tsamp: float, period: float) -> float:
    """The series folded at exactly the injected period, with the pipeline's whitening and bins."""
    return fold(
        prepare(x, tsamp, baseline_window(period)), tsamp, period, 0.0, nbins=fold_bins(period, tsamp)
    ).snr


def filterbank_case(
    period: float, duty: float, dm: float, snr: float, seconds: float, seed: int, tmp: Path
) -> dict[str, Any]:
    """One pulsar simulated into a filterbank and searched by the whole pipeline (see the module)."""
    import csv

    from cudalab.radio.io.observation import open_observation
    from cudalab.radio.periodic.pipeline import PeriodicJob, cleaned, run_periodic, series_at
    from cudalab.radio.simulate import Pulsar, SimConfig, simulate

    nch, tsamp = 256, 256e-6
    rotations = int((seconds - 0.05) / period) + 1
    psr = Pulsar(period_s=period, dm=dm, snr=snr / np.sqrt(rotations), width_s=duty * period, first_s=0.05,
                 jitter=0.0)  # fmt: skip
    cfg = SimConfig(nchans=nch, tsamp_s=tsamp, fch1_mhz=1500.0, foff_mhz=-300.0 / nch, duration_s=seconds,
                    seed=seed, pulsars=(psr,))  # fmt: skip
    path = tmp / f"psr_{period * 1e3:g}ms_dm{dm:g}_snr{snr:g}.fil"
    simulate(cfg, path)
    t0 = time.perf_counter()
    summary = run_periodic(path, tmp / "run", PeriodicJob(), torch.device("cpu"))
    seconds_search = time.perf_counter() - t0
    with (tmp / "run" / "candidates.csv").open(newline="") as fh:
        folded = [r for r in csv.DictReader(fh) if r.get("fold_snr")]
    tol = max(period**2 / (4 * seconds), tsamp)
    hits = [
        r for r in folded
        if abs(float(r["folded_period_ms"]) / 1e3 - period) < tol and abs(float(r["folded_dm"]) - dm) <= max(2.0, 0.1 * dm)
    ]  # fmt: skip
    best = max(hits, key=lambda r: float(r["fold_snr"])) if hits else None
    obs = open_observation(path)
    series, _ = series_at(cleaned(obs, torch.device("cpu")), obs.header, dm)
    true_snr = true_fold_snr(series, tsamp, period)
    path.unlink()
    return {"benchmark": "radio_periodic_filterbank", "period_s": period, "duty": duty, "dm": dm, "snr": snr,
            "true_fold_snr": true_snr, "found": best is not None,
            "fold_snr": float(best["fold_snr"]) if best else None, "fold_dm": float(best["folded_dm"]) if best else None,
            "candidates": summary["candidates"], "dm_trials": summary["dm_trials"], "channels": nch,
            "seconds_observed": seconds, "search_s": seconds_search, "realtime_factor": seconds / seconds_search,
            "device": "cpu"}  # fmt: skip


RIPTIDE = """
import json, sys, time
import numpy as np
from riptide import TimeSeries, ffa_search
x = np.load(sys.argv[1]); tsamp, period, pmin, pmax = (float(v) for v in sys.argv[2:6])
t0 = time.perf_counter()
ts = TimeSeries.from_numpy_array(x, tsamp=tsamp)
_, pg = ffa_search(ts, period_min=pmin, period_max=pmax, bins_min=240, bins_max=260)
best = pg.snrs.max(axis=1)
near = np.abs(pg.periods - period) < 0.05 * period  # its best peak near the injected period
i = int(np.flatnonzero(near)[np.argmax(best[near])]) if near.any() else int(np.argmax(best))
print(json.dumps({"period": float(pg.periods[i]), "snr": float(best[i]), "seconds": time.perf_counter() - t0}))
"""


def riptide(
    python: str, x: np.ndarray, tsamp: float, period: float, pmin: float, pmax: float
) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)
        r = subprocess.run([python, "-c", RIPTIDE, str(path), str(tsamp), str(period), str(pmin), str(pmax)], capture_output=True,
                           text=True, timeout=600, check=False)  # fmt: skip
    if r.returncode:
        print(f"riptide failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--snrs", default="8,10,15,20,30")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--tsamp", type=float, default=1e-4)
    p.add_argument("--fold", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--riptide-python", default=os.environ.get("RIPTIDE_PYTHON", ""))
    p.add_argument("--riptide-min-period", type=float, default=0.1)
    p.add_argument("--filterbank-snrs", default="10,15,20",
                   help="ideal S/N of the filterbank cases ('' for none)")  # fmt: skip
    p.add_argument("--filterbank-seconds", type=float, default=60.0)
    p.add_argument("--no-binaries", action="store_true", help="skip the binary MSPs")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    snrs = [float(s) for s in a.snrs.split(",") if s]  # '' for no time-series cases
    periods, duties = PERIODS, DUTIES
    fb_snrs = [float(v) for v in a.filterbank_snrs.split(",") if v]
    fb_cases = FILTERBANK_CASES
    if a.quick:
        snrs, periods, duties, a.seconds = [20.0], (0.033, 0.25), (0.05,), 10.0
        fb_snrs, fb_cases, a.filterbank_seconds = [20.0], ((0.033, 0.05, 200.0),), 10.0
    n = int(a.seconds / a.tsamp)
    rng = np.random.default_rng(a.seed)
    rows: list[dict[str, Any]] = []
    for snr in snrs:
        for period in periods:
            for duty in duties:
                if duty * period < 2 * a.tsamp:  # narrower than two samples: not resolvable here
                    continue
                x = pulse_train(n, a.tsamp, period, duty, snr, rng)
                found, seconds = ours(x, a.tsamp, period, a.fold)
                row = {"benchmark": "radio_periodic_case", "snr": snr, "period_s": period, "duty": duty,
                       "true_fold_snr": true_fold_snr(x, a.tsamp, period),
                       "ours_found": found is not None, "ours_snr": found, "ours_s": seconds}  # fmt: skip
                if a.riptide_python and period >= a.riptide_min_period:
                    pmax = min(10.0, a.seconds / 8)
                    r = riptide(a.riptide_python, x, a.tsamp, period, a.riptide_min_period, pmax)
                    if r is not None:
                        ok = (
                            abs(r["period"] - period) < max(period**2 / (4 * a.seconds), a.tsamp)
                            and r["snr"] >= 7
                        )
                        row |= {
                            "riptide_found": ok,
                            "riptide_snr": r["snr"] if ok else None,
                            "riptide_s": r["seconds"],
                        }
                emit(row)
                rows.append(row)
    # binary MSPs: 268 s at 256 us, where an acceleration drifts them by bins
    if not (a.quick or a.no_binaries):
        tsamp, n_b = 2.56e-4, 1 << 20
        t = np.arange(n_b) * tsamp
        for period, accel, snr in ((0.0023, 50.0, 30.0), (0.0023, 150.0, 30.0), (0.0046, 150.0, 20.0)):
            phase = np.mod((t - accel * t**2 / (2 * C_M_S)) / period + rng.uniform(), 1.0) - 0.5
            pulse = np.exp(-0.5 * (phase / (0.05 / 2.355)) ** 2)
            x = (rng.normal(size=n_b) + pulse * snr / np.sqrt((pulse**2).sum())).astype(np.float32)
            mid = period * (1 + accel * n_b * tsamp / (2 * C_M_S))
            plain, s0 = ours(x, tsamp, mid, a.fold)
            accel_found, s1 = ours(x, tsamp, mid, a.fold, accel_max=200.0)
            emit({"benchmark": "radio_periodic_binary", "period_s": period, "accel_m_s2": accel, "snr": snr,
                  "seconds": n_b * tsamp, "found_without_accel": plain is not None, "snr_without": plain,
                  "found_with_accel": accel_found is not None, "snr_with": accel_found,
                  "s_without": s0, "s_with": s1})  # fmt: skip
    fb_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for snr in fb_snrs:
            for period, duty, dm in fb_cases:
                fb_rows.append(
                    filterbank_case(period, duty, dm, snr, a.filterbank_seconds, a.seed + 1, Path(tmp))
                )
                emit(fb_rows[-1])
    for name, sel in (("time series", [(r["true_fold_snr"], r["ours_found"]) for r in rows]),
                      ("filterbank", [(r["true_fold_snr"], r["found"]) for r in fb_rows])):  # fmt: skip
        strong = [found for true, found in sel if true >= 10]
        if strong:
            emit({"benchmark": "radio_periodic_goal", "input": name, "cases_true_fold_snr_ge_10": len(strong),
                  "found_fraction": sum(strong) / len(strong), "goal": 0.95,
                  "ratio": sum(strong) / len(strong) / 0.95})  # fmt: skip
    for method in ("ours", "riptide"):
        for snr in snrs:
            sel = [r for r in rows if r["snr"] == snr and f"{method}_found" in r]
            if not sel:
                continue
            got = [r[f"{method}_snr"] / snr for r in sel if r[f"{method}_found"]]
            secs = statistics.fmean(r[f"{method}_s"] for r in sel)
            emit({"benchmark": "radio_periodic", "method": method, "snr": snr, "cases": len(sel),
                  "found_fraction": sum(r[f"{method}_found"] for r in sel) / len(sel),
                  "median_recovered_over_ideal": statistics.median(got) if got else None,
                  "seconds_per_series": secs, "realtime_factor": a.seconds / secs,
                  "device": "cpu", "samples": n})  # fmt: skip


if __name__ == "__main__":
    main()
