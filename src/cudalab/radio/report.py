"""The search's visual report: one HTML page with PNG plots beside it in ``plots/``.

The page shows the observation, the search plan and RFI masking, a DM-time overview of every
candidate (heimdall-style: marker size and colour by S/N), a table of the brightest, and for each top
candidate its dedispersed waterfall, its pulse profile and its DM-time bow-tie.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cudalab._io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from cudalab.radio.pipeline.search import SearchResult
    from cudalab.radio.single_pulse.cutouts import Cutout


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def overview_png(result: SearchResult, truth: dict[str, Any] | None = None) -> bytes:
    """DM versus time of every candidate; injected pulses (when a truth table is given) as open circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    cands = result.candidates
    if cands:
        t = np.array([c.time_s for c in cands])
        dm = np.array([c.dm for c in cands])
        snr = np.array([c.snr for c in cands])
        sc = ax.scatter(
            t, dm, s=8 + 6 * (snr - snr.min()), c=snr, cmap="viridis", alpha=0.85, edgecolors="none"
        )
        fig.colorbar(sc, ax=ax, label="S/N")
        for i, c in enumerate(cands[: result.config.report_top]):
            ax.annotate(str(i), (c.time_s, c.dm), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if truth:
        pts = [(p["time_s"], p["dm"]) for p in truth.get("pulses", [])]
        if pts:
            tt, dd = zip(*pts, strict=True)
            ax.scatter(tt, dd, s=90, facecolors="none", edgecolors="red", linewidths=0.8, label="injected")
            ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(0, result.header.duration_s)
    ax.set_ylim(result.plan.dms[0], result.plan.dms[-1] * 1.02 + 1)
    ax.set_xlabel(f"time (s) at {result.header.fmax_mhz:.1f} MHz")
    ax.set_ylabel("DM (pc cm$^{-3}$)")
    ax.set_title(f"{len(cands)} candidates >= {result.config.snr_threshold:g} sigma")
    return _figure_png(fig)


def candidate_png(index: int, cand: Any, cut: Cutout, tsamp_s: float, fmax: float, fmin: float) -> bytes:
    """Profile, dedispersed waterfall and DM-time bow-tie of one candidate, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cudalab.radio.single_pulse.cutouts import resize_axis

    # Averaged to 64 sub-bands for display: a burst near threshold is invisible in single channels.
    ft = resize_axis(cut.freq_time.T, min(64, cut.freq_time.shape[1]), axis=0)  # (subband, time), top first
    n = ft.shape[1]
    dt_ms = cut.time_decimation * tsamp_s * 1e3
    extent_t = (-n / 2 * dt_ms, n / 2 * dt_ms)
    fig, axes = plt.subplots(
        3, 1, figsize=(5.2, 7.8), sharex=True, gridspec_kw={"height_ratios": [1, 2.2, 2.2]}
    )
    prof = ft.mean(axis=0)
    axes[0].plot(np.linspace(*extent_t, n), prof, color="k", lw=1)
    axes[0].set_ylabel("flux (a.u.)")
    axes[0].set_title(
        f"#{index}  S/N {cand.snr:.1f}  DM {cand.dm:.1f}  t {cand.time_s:.4f} s  w {cand.width_s * 1e3:.2f} ms",
        fontsize=9,
    )
    lim = np.percentile(np.abs(ft), 99) or 1.0
    axes[1].imshow(
        ft,
        aspect="auto",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        extent=(*extent_t, fmin, fmax),
        interpolation="nearest",
    )
    axes[1].set_ylabel("frequency (MHz)")
    lo, hi = np.percentile(cut.dm_time, [5, 99.9])
    axes[2].imshow(
        cut.dm_time,
        aspect="auto",
        cmap="viridis",
        origin="lower",
        vmin=lo,
        vmax=hi,
        extent=(*extent_t, float(cut.dms[0]), float(cut.dms[-1])),
        interpolation="nearest",
    )
    axes[2].axhline(cand.dm, color="w", lw=0.6, ls="--")
    axes[2].set_ylabel("DM (pc cm$^{-3}$)")
    axes[2].set_xlabel("time from candidate (ms)")
    fig.tight_layout()
    return _figure_png(fig)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def write_report(
    out_dir: Path, result: SearchResult, cutouts: dict[int, Cutout], truth: dict[str, Any] | None = None
) -> Path:
    """Write ``report.html`` and ``plots/*.png`` into ``out_dir``."""
    h = result.header
    plots = out_dir / "plots"
    atomic_write_bytes(plots / "overview.png", overview_png(result, truth))
    figs = []
    for i, cand in enumerate(result.candidates[: result.config.report_top]):
        if i in cutouts:
            name = f"cand_{i:04d}.png"
            atomic_write_bytes(
                plots / name, candidate_png(i, cand, cutouts[i], h.tsamp_s, h.fmax_mhz, h.fmin_mhz)
            )
            figs.append((i, cand, name))
    obs_rows = [
        ("file", h.path),
        ("format", f"{h.format}, {h.nbits}-bit, {h.npol_stored} pol stored"),
        ("source", h.source_name),
        ("channels", f"{h.nchans} x {abs(h.foff_mhz):.4f} MHz, {h.fmin_mhz:.2f}-{h.fmax_mhz:.2f} MHz"),
        ("sampling", f"{h.tsamp_s * 1e6:.3f} us, {h.nsamples} samples, {h.duration_s:.3f} s"),
        ("start (MJD)", f"{h.tstart_mjd:.8f}"),
    ]
    plan: dict[str, Any] = result.plan.summary()
    search_rows = [
        (
            "DM trials",
            f"{plan['ndm']} from {plan['dm_min']:.1f} to {plan['dm_max']:.1f} (tolerance {result.config.dm_tolerance})",
        ),
        ("time scrunching", ", ".join(f"x{k}: {v} trials" for k, v in plan["scrunch_factors"].items())),
        ("max dispersion delay", f"{plan['max_delay_s']:.3f} s"),
        (
            "threshold",
            f"S/N >= {result.config.snr_threshold:g}, boxcars to {result.config.max_width_s * 1e3:g} ms",
        ),
        (
            "RFI",
            f"{len(result.masked_channels)} channels masked at least once; mean masked fraction "
            f"{100 * result.mask_fraction:.1f} %; zero-DM {'on' if result.config.rfi.zero_dm else 'off'}",
        ),
        (
            "non-finite samples",
            f"{result.nonfinite_samples} NaN or infinite samples, each set to its channel's median (searched as absent)"
            if result.nonfinite_samples
            else "none",
        ),
        ("times refer to", f"the centre of the highest channel, {h.fmax_mhz:.4f} MHz"),
        (
            "device / wall time",
            f"{result.device}, {result.seconds:.2f} s ({result.realtime_factor:.2f} x real time)",
        ),
        ("giants / candidates", f"{len(result.giants)} / {len(result.candidates)}"),
    ]
    head = "<tr><th>#</th><th>S/N</th><th>DM</th><th>time (s)</th><th>width (ms)</th><th>members</th><th>DM range</th></tr>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{c.snr:.1f}</td><td>{c.dm:.2f}</td><td>{c.time_s:.5f}</td><td>{c.width_s * 1e3:.3f}</td>"
        f"<td>{c.members}</td><td>{c.dm_lo:.1f}-{c.dm_hi:.1f}</td></tr>"
        for i, c in enumerate(result.candidates[:50])
    )
    cards = "".join(
        f"<figure><img src='plots/{name}' alt='candidate {i}'><figcaption>#{i}: S/N {c.snr:.1f}, DM {c.dm:.1f}, "
        f"t = {c.time_s:.4f} s</figcaption></figure>"
        for i, c, name in figs
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cudalab radio search: {html.escape(Path(h.path).name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }} td, th {{ padding: 2px 10px; text-align: left; }}
table.cands td {{ font-variant-numeric: tabular-nums; }} table.cands tr:nth-child(even) {{ background: #f3f3f3; }}
.kv th {{ color: #555; font-weight: normal; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
figcaption {{ font-size: 0.85em; color: #444; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Single-pulse search: {html.escape(Path(h.path).name)}</h1>
<h2>Observation</h2>{_table(obs_rows)}
<h2>Search</h2>{_table(search_rows)}
<h2>Candidates in DM and time</h2><img src="plots/overview.png" alt="DM-time overview">
<h2>Brightest candidates</h2><table class="cands">{head}{rows}</table>
<p>All candidates: <a href="candidates.csv">candidates.csv</a> and heimdall's <a href="candidates.cand">candidates.cand</a>;
FETCH cutouts of the brightest {min(len(result.candidates), result.config.cutouts)} in <code>cands/</code>.</p>
<h2>Top candidates</h2>{cards or "<p>No candidate above threshold.</p>"}
</body></html>
"""
    return atomic_write_text(out_dir / "report.html", page)
