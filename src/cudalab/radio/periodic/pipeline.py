"""``cudalab radio periodic FILE``: the pulsar search as a job, from a file to a run folder.

1. A filterbank is dedispersed over the DM trials of :func:`cudalab.radio.dedispersion.plan.make_plan`
   (heimdall's grid, no time scrunching: a periodic signal needs every sample) with the search's own
   dedisperser; a time series (SIGPROC ``.tim``, PRESTO ``.dat``) is its one trial at its DM.
2. The Fourier search, the FFA and the sifting of :mod:`cudalab.radio.periodic.search`.
3. The best ``fold`` candidates are folded on the data: the DM refined by the folded chi-square over
   the neighbouring trials (the FFA's DM step either side, if wider), the true period chosen among the candidate's multiples, then the period
   optimised; phase-time sub-integrations, and phase-frequency sub-bands for a filterbank.
4. The run folder: ``candidates.csv`` (every sifted candidate; the folded ones with their fold),
   ``folds/cand_NN.png`` (prepfold's layout), ``folds/cand_NN.npz`` (profile, sub-integrations,
   sub-bands and the fold's parameters: numpy arrays, as no maintained Python writer of PSRCHIVE's
   format exists), ``report.html``, and the run's config and manifest. Written atomically.

Not yet here (issue 19): files larger than memory (the filterbank is held whole).
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab._io import atomic_write_bytes, atomic_write_text
from cudalab.errors import CudalabError
from cudalab.radio.io.observation import open_observation
from cudalab.radio.periodic.fold import Fold, baseline_window, fold, fold_bins, prepare, refine
from cudalab.radio.periodic.search import C_M_S, PeriodCandidate, PeriodicConfig, candidates, ffa_dm_step
from cudalab.runs.rundir import RunDir, now, staged

KIND = "radio-periodic"
OWNED = ("candidates.csv", "manifest.json")
TABLE_ROWS = 50
"""Candidates listed in the report's table (all are in candidates.csv)."""
MAX_SERIES_BYTES = 4 << 30
"""Dedispersed series held in memory at most (DM trials x samples x 4 bytes)."""


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """``cudalab radio periodic``'s settings."""

    dm_min: float = 0.0
    dm_max: float = 1000.0
    fold: int = 5
    """Candidates folded (the most significant)."""
    nbins: int = 64
    search: PeriodicConfig = field(default_factory=PeriodicConfig)


@dataclass(frozen=True, slots=True)
class Folded:
    cand: PeriodCandidate
    fold: Fold
    subbands: NDArray[np.float64] | None
    dm_curve: list[tuple[float, float]]
    period_curve: list[tuple[float, float]]


def dedispersed(
    path: Path, job: PeriodicJob, device: torch.device
) -> tuple[Any, torch.Tensor, NDArray[np.float64], Any, torch.Tensor | None]:
    """(header, series ``(ndm, n)``, DMs, the observation, and the cleaned filterbank the folds reuse
    (None for a time series)) of a file (see the module)."""
    from cudalab.radio.dedispersion.direct import dedisperse
    from cudalab.radio.dedispersion.plan import make_plan

    obs = open_observation(path)
    h = obs.header
    if h.is_time_series:
        return h, torch.from_numpy(obs.read()).to(device), np.array([float(h.refdm or 0.0)]), obs, None
    top = min(job.dm_max, _dm_limit(h))
    if top < job.dm_min:
        raise CudalabError(
            f"{path}: DMs above {top:.1f} sweep across more than half of the file; lower --dm-min"
        )
    plan = make_plan(h, job.dm_min, top, scrunch=False)
    nout = h.nsamples - plan.max_delay
    if nout < 1024:
        raise CudalabError(
            f"{path}: {h.nsamples} samples, too few for DMs up to {job.dm_max} (delay {plan.max_delay})"
        )
    if len(plan.dms) * nout * 4 > MAX_SERIES_BYTES:
        raise CudalabError(
            f"{path}: {len(plan.dms)} DM trials x {nout} samples exceed {MAX_SERIES_BYTES >> 30} GiB; narrow the DM range"
        )
    data = cleaned(obs, device)
    series = clip(dedisperse(data, torch.from_numpy(plan.delays).to(device), nout))
    return h, series, plan.dms, obs, data


def cleaned(obs: Any, device: torch.device) -> torch.Tensor:
    """The whole filterbank cleaned as the single-pulse search cleans a block (channels normalised,
    bad channels and narrowband impulses masked), without zero-DM: it would take a slow pulsar of low
    DM with the broadband interference."""
    from cudalab.radio.rfi import RfiConfig, clean_block

    h = obs.header
    if h.nchans * h.nsamples * 4 > MAX_SERIES_BYTES:
        raise CudalabError(
            f"{h.path}: {h.nchans} channels x {h.nsamples} samples exceed {MAX_SERIES_BYTES >> 30} GiB"
        )
    data = torch.from_numpy(obs.read()).to(device)
    return clean_block(data, replace(RfiConfig(), zero_dm=False), tsamp_s=h.tsamp_s, inplace=True).data


def clip(series: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Each dedispersed series with samples beyond ``threshold`` robust sigmas set to its median (what
    is left of broadband impulses: one pulsar pulse spread over its width stays far below), in place."""
    from cudalab.radio.rfi import robust_location_scale

    loc, scale = robust_location_scale(series[:, :: max(1, series.shape[1] // 65536)])
    series.sub_(loc).div_(scale.clamp_min(1e-6))
    series[series.abs() > threshold] = 0.0
    return series


def _sweep_per_dm(h: Any) -> float:
    """The single-pulse search's sweep per unit DM (seconds; 0 for a time series)."""
    from cudalab.radio.constants import DM_CONSTANT
    from cudalab.radio.pipeline.search import sweep_s_per_dm

    return 0.0 if h.is_time_series else sweep_s_per_dm(h, DM_CONSTANT)


def _delays_per_dm(h: Any) -> NDArray[np.float64]:
    """Each channel of a filterbank: its dispersion delay per unit DM below the band's top, s."""
    from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s

    return np.asarray(dispersion_delay_s(1.0, h.freqs_mhz, h.fmax_mhz, DM_CONSTANT), dtype=np.float64)


def _dm_limit(h: Any) -> float:
    """The largest DM whose sweep leaves half the observation."""
    return 0.5 * h.nsamples * h.tsamp_s / _sweep_per_dm(h)


def series_at(
    data: torch.Tensor, h: Any, dm: float, nchans_per_sub: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The cleaned filterbank ``data`` dedispersed at ``dm`` on its own device (and per sub-band when
    asked), as float64 numpy for the folds."""
    from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s
    from cudalab.radio.dedispersion.direct import dedisperse

    shift = np.rint(dispersion_delay_s(dm, h.freqs_mhz, h.fmax_mhz, DM_CONSTANT) / h.tsamp_s).astype(np.int64)
    nout = h.nsamples - int(shift.max())
    delays = torch.from_numpy(shift[None, :]).to(data.device)
    total = clip(dedisperse(data, delays, nout))[0].double().cpu().numpy()
    subs = None
    if nchans_per_sub:
        rows = []
        for lo in range(0, h.nchans, nchans_per_sub):
            w = torch.zeros(h.nchans, device=data.device)
            w[lo : lo + nchans_per_sub] = 1
            rows.append(clip(dedisperse(data, delays, nout, weights=w))[0].double().cpu().numpy())
        subs = np.stack(rows)
    return total, subs


def _peak(x: list[float], y: list[float]) -> float:
    """Where a parabola through the highest point and its neighbours peaks (the highest point at an end)."""
    k = int(np.argmax(y))
    if 0 < k < len(y) - 1:
        a, b, _ = np.polyfit(x[k - 1 : k + 2], y[k - 1 : k + 2], 2)
        if a < 0:
            return float(np.clip(-b / (2 * a), x[k - 1], x[k + 1]))
    return float(x[k])


def fold_candidate(
    obs: Any, data: torch.Tensor | None, cand: PeriodCandidate, dms: NDArray[np.float64], job: PeriodicJob
) -> Folded:
    """Fold one candidate (see the module); ``data`` is the cleaned filterbank (None for a time series)."""
    h = obs.header
    window = baseline_window(cand.period_s)
    pdot = cand.accel * cand.period_s / C_M_S
    subs = None
    if data is None:
        x = prepare(obs.read()[0], h.tsamp_s, window)
        dm_curve = [(cand.dm, float("nan"))]
        dm = cand.dm
    else:
        # refine the DM by the fold's S/N (its best boxcar: the chi-square of a weak pulsar's fold is
        # mostly noise, and picked a DM 28 off for one of S/N 11): over the trials around the best
        # one, or the FFA's DM step at this period if wider (its trials are far apart at long
        # periods), then around the best of those; a parabola through the highest
        i = cand.dm_index
        half = 1.5 * ffa_dm_step(cand.period_s, job.search, _sweep_per_dm(h)) if cand.search == "ffa" else 0.0
        lo = max(0.0, min(float(dms[max(0, i - 3)]), cand.dm - half))
        hi = max(float(dms[min(len(dms) - 1, i + 3)]), cand.dm + half)
        bins = fold_bins(cand.period_s, h.tsamp_s, job.nbins)  # as many as the final fold: DM narrows a pulse

        def snr_at(d: float) -> tuple[float, float]:
            s, _ = series_at(data, h, d)
            f = fold(prepare(s, h.tsamp_s, window), h.tsamp_s, cand.period_s, pdot, nbins=bins, nsub=8)
            return d, f.snr

        coarse = np.linspace(lo, hi, 13)
        dm_curve = [snr_at(float(d)) for d in coarse]
        step = coarse[1] - coarse[0] if hi > lo else 0.0
        best = dm_curve[int(np.argmax([c for _, c in dm_curve]))][0]
        if step > 0:
            fine = np.linspace(max(0.0, best - step), best + step, 9)
            dm_curve = sorted(dm_curve + [snr_at(float(d)) for d in fine if not np.isclose(coarse, d).any()])
        near = [(d, c) for d, c in dm_curve if abs(d - best) <= step * 1.01] if step > 0 else dm_curve
        dm = _peak([d for d, _ in near], [c for _, c in near])
        s, subs = series_at(data, h, dm, max(1, h.nchans // 16))
        x = prepare(s, h.tsamp_s, window)
    f = refine(x, h.tsamp_s, cand.period_s, cand.accel, nbins=job.nbins)
    tobs = len(x) * h.tsamp_s
    dp = f.period_s**2 / tobs * 0.25
    period_curve = [
        (float(p), fold(x, h.tsamp_s, float(p), f.pdot, nbins=job.nbins, nsub=4).chi2_r)
        for p in f.period_s + np.linspace(-8 * dp, 8 * dp, 33)
    ]
    subbands = None
    if subs is not None:
        subbands = np.stack(
            [
                fold(
                    prepare(row, h.tsamp_s, window),
                    h.tsamp_s,
                    f.period_s,
                    f.pdot,
                    nbins=len(f.profile),
                    nsub=1,
                ).profile
                for row in subs
            ]
        )
        if h.foff_mhz < 0:  # rows from the lowest frequency up, as the plot draws them
            subbands = subbands[::-1].copy()
    return Folded(replace(cand, dm=dm), replace(f, dm=dm), subbands, dm_curve, period_curve)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_fold(fd: Folded, header: Any, title: str) -> bytes:
    """prepfold's layout: two turns of the profile over phase-time (and phase-frequency), with the
    chi-square against period and the S/N against DM beside them, and the fold's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = fd.fold
    nb = len(f.profile)
    phase = np.arange(2 * nb) / nb
    fig = plt.figure(figsize=(10, 7.5))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 2.2, 1.2], width_ratios=[1.2, 1.2, 1])
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(phase, np.tile(f.profile, 2), color="k", lw=1)
    ax.set_xlim(0, 2)
    ax.set_title("profile (2 turns)", fontsize=9)
    ax.set_yticks([])
    ax = fig.add_subplot(grid[1, 0])
    ax.imshow(
        np.tile(f.subints, 2), aspect="auto", origin="lower", cmap="Greys", extent=(0, 2, 0, len(f.subints))
    )
    ax.set_xlabel("phase")
    ax.set_ylabel("sub-integration")
    ax.set_title("phase-time", fontsize=9)
    if fd.subbands is not None:
        ax = fig.add_subplot(grid[1, 1])
        ax.imshow(np.tile(fd.subbands, 2), aspect="auto", origin="lower", cmap="Greys",
                  extent=(0, 2, header.fmin_mhz, header.fmax_mhz))  # fmt: skip
        ax.set_xlabel("phase")
        ax.set_ylabel("frequency (MHz)")
        ax.set_title("phase-frequency", fontsize=9)
    ax = fig.add_subplot(grid[2, 0])
    pc = np.array(fd.period_curve)
    ax.plot((pc[:, 0] - f.period_s) * 1e6, pc[:, 1], color="k")
    ax.set_xlabel(f"period - {f.period_s * 1e3:.6f} ms (us)")
    ax.set_ylabel("reduced chi2")
    dc = np.array(fd.dm_curve)
    if len(dc) > 1:
        ax = fig.add_subplot(grid[2, 1])
        ax.plot(dc[:, 0], dc[:, 1], "o-", color="k", ms=3)
        ax.set_xlabel("DM (pc cm^-3)")
        ax.set_ylabel("fold S/N")
    ax = fig.add_subplot(grid[:2, 2])
    ax.axis("off")
    c = fd.cand
    text = (f"{title}\n\nP      {f.period_s * 1e3:.6f} ms\nPdot   {f.pdot:.3g}\nDM     {f.dm:.2f}\n"
            f"chi2_r {f.chi2_r:.1f}\nS/N    {f.snr:.1f}\nduty   {f.duty:.3f}\n\n{c.search.upper()}: {c.sigma:.1f} sigma,\n"
            + (f"{c.harmonics} harmonics,\n" if c.search == "fourier" else "")
            + f"at {len(c.dms)} DM trial(s)")  # fmt: skip
    ax.text(0, 1, text, va="top", family="monospace", fontsize=10)
    fig.tight_layout()
    return _png(fig)


FIELDS = ("rank", "period_ms", "freq_hz", "dm", "search", "sigma", "harmonics", "dm_hits", "folded_period_ms",
          "pdot", "folded_dm", "chi2_r", "fold_snr", "duty")  # fmt: skip


def write_candidates(out: Path, sifted: list[PeriodCandidate], folded: dict[int, Folded]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for i, c in enumerate(sifted):
        fd = folded.get(i)
        f = fd.fold if fd else None
        w.writerow([i, f"{c.period_s * 1e3:.6f}", f"{c.freq_hz:.6f}", f"{c.dm:.2f}", c.search, f"{c.sigma:.2f}", c.harmonics,
                    len(c.dms), f"{f.period_s * 1e3:.6f}" if f else "", f"{f.pdot:.3g}" if f else "",
                    f"{f.dm:.2f}" if f else "", f"{f.chi2_r:.2f}" if f else "", f"{f.snr:.2f}" if f else "",
                    f"{f.duty:.3f}" if f else ""])  # fmt: skip
    atomic_write_text(out / "candidates.csv", buf.getvalue())


def write_report(
    out: Path,
    h: Any,
    sifted: list[PeriodCandidate],
    folded: dict[int, Folded],
    summary: dict[str, Any],
    job: PeriodicJob,
) -> None:
    """``report.html`` in the single-pulse report's style: the observation, the search, the candidate
    table (the folded first) and each folded candidate's plot."""
    from cudalab.radio.report import PAGE_STYLE, kv_table, observation_rows

    c = job.search
    ffa = (
        f"{c.ffa_period_min_s * 1e3:g} ms to {c.ffa_period_max_s:g} s, kept from fold S/N {c.ffa_snr:g}"
        if c.ffa_period_min_s
        else "off"
    )
    accel = f"up to {c.accel_max:g} m/s^2" if c.accel_max > 0 else "off"
    search_rows = [
        (
            "DM trials",
            f"{summary['dm_trials']} from {summary['dm_min']:.1f} to {summary['dm_max']:.1f}",
        ),
        (
            "Fourier search",
            f"{summary['samples']} samples; harmonics summed {', '.join(map(str, c.harmonics))}; kept from "
            f"{c.sigma:g} sigma after the trials within a DM trial; acceleration {accel}",
        ),
        ("FFA", ffa),
        (
            "candidates",
            f"{summary['fourier_candidates']} Fourier and {summary['ffa_candidates']} FFA, sifted to "
            f"{len(sifted)}; {len(folded)} folded",
        ),
        ("device / wall time", f"{summary['device']}, {summary['seconds']:.1f} s"),
    ]
    head = (
        "<tr><th>#</th><th>period (ms)</th><th>DM</th><th>search</th><th>sigma</th><th>harmonics</th>"
        "<th>fold S/N</th><th>chi2_r</th><th>duty</th><th>DMs seen</th></tr>"
    )

    def row(i: int, cand: PeriodCandidate) -> str:
        fd = folded.get(i)
        f = fd.fold if fd else None
        return (
            f"<tr><td>{i}</td><td>{(f.period_s if f else cand.period_s) * 1e3:.6f}</td>"
            f"<td>{(f.dm if f else cand.dm):.2f}</td><td>{cand.search}</td><td>{cand.sigma:.1f}</td>"
            f"<td>{cand.harmonics or ''}</td><td>{f'{f.snr:.1f}' if f else ''}</td>"
            f"<td>{f'{f.chi2_r:.1f}' if f else ''}</td><td>{f'{f.duty:.3f}' if f else ''}</td>"
            f"<td>{len(cand.dms)}</td></tr>"
        )

    rows = "".join(row(i, cand) for i, cand in enumerate(sifted[:TABLE_ROWS]))
    more = f"<p class='note'>The first {TABLE_ROWS} of {len(sifted)}.</p>" if len(sifted) > TABLE_ROWS else ""
    cards = "".join(
        f"<figure><img src='folds/cand_{i:02d}.png' alt='candidate {i}'><figcaption>#{i}: P = "
        f"{fd.fold.period_s * 1e3:.6f} ms, DM {fd.fold.dm:.2f}, fold S/N {fd.fold.snr:.1f} "
        f"({fd.cand.search})</figcaption></figure>"
        for i, fd in sorted(folded.items())
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cudalab radio periodic: {html.escape(Path(h.path).name)}</title>
{PAGE_STYLE}</head><body>
<h1>Periodicity search: {html.escape(Path(h.path).name)}</h1>
<h2>Observation</h2>{kv_table(observation_rows(h))}
<h2>Search</h2>{kv_table(search_rows)}
<h2>Candidates</h2>{more}<table class="cands">{head}{rows}</table>
<p>All candidates: <a href="candidates.csv">candidates.csv</a>; each fold's arrays in
<code>folds/cand_NN.npz</code>.</p>
<h2>Folded candidates</h2><p class="note">Each in prepfold's layout: the profile (twice), phase against
time, phase against frequency (a filterbank), the fold's reduced chi-square against trial period and its
S/N against trial DM.</p>
{cards or "<p>Nothing was folded.</p>"}
</body></html>
"""
    atomic_write_text(out / "report.html", page)


def run_periodic(path: Path, out: Path, job: PeriodicJob, device: torch.device) -> dict[str, Any]:
    """Search ``path`` and write the run folder ``out`` (see the module); returns the summary."""
    from cudalab.env.fingerprint import fingerprint

    started, t0 = now(), time.perf_counter()
    h, series, dms, obs, data = dedispersed(path, job, device)
    n = series.shape[1] - series.shape[1] % 2
    delays = None if h.is_time_series else _delays_per_dm(h)
    sifted, n_fourier, n_ffa = candidates(series, h.tsamp_s, dms, job.search, delays)
    del series
    done = [fold_candidate(obs, data, c, dms, job) for c in sifted[: job.fold]]
    done.sort(key=lambda fd: -fd.fold.snr)  # the folded ones first, by what folding shows
    sifted = [fd.cand for fd in done] + sifted[job.fold :]
    folded = dict(enumerate(done))
    summary = {
        "file": str(path), "dm_trials": len(dms), "dm_min": float(dms.min()), "dm_max": float(dms.max()),
        "samples": int(n), "tsamp_s": h.tsamp_s, "fourier_candidates": n_fourier, "ffa_candidates": n_ffa,
        "candidates": len(sifted), "device": str(device),
        "seconds": time.perf_counter() - t0,
        "best": {"period_ms": folded[0].fold.period_s * 1e3, "dm": folded[0].fold.dm, "snr": folded[0].fold.snr}
        if folded else None,
    }  # fmt: skip
    with staged(out, owned=OWNED) as stage:
        run = RunDir(stage)
        run.start(job, kind=KIND, subject=path.name, seed=None, environment=fingerprint(), run_id=out.name,
                  started_at=started, extra={"file": str(path), "device": str(device)})  # fmt: skip
        write_candidates(stage, sifted, folded)
        (stage / "folds").mkdir()
        for i, fd in folded.items():
            title = f"{path.name}: candidate {i}"
            atomic_write_bytes(stage / "folds" / f"cand_{i:02d}.png", plot_fold(fd, h, title))
            buf = io.BytesIO()
            np.savez(buf, profile=fd.fold.profile, subints=fd.fold.subints,
                     subbands=fd.subbands if fd.subbands is not None else np.zeros((0, 0)),
                     meta=json.dumps({**asdict(fd.cand), "period_s": fd.fold.period_s, "pdot": fd.fold.pdot,
                                      "dm": fd.fold.dm, "chi2_r": fd.fold.chi2_r, "snr": fd.fold.snr,
                                      "tsamp_s": h.tsamp_s}))  # fmt: skip
            atomic_write_bytes(stage / "folds" / f"cand_{i:02d}.npz", buf.getvalue())
        write_report(stage, h, sifted, folded, summary, job)
        run.finish(summary)
    return summary


__all__ = ["PeriodicJob", "cleaned", "fold_candidate", "run_periodic", "series_at"]
