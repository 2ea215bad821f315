"""The search's visual report: one HTML page with PNG plots beside it in ``plots/``.

The page says what was observed, how it was searched and what could not be (shaded in the plots, in
words above them), then shows:

- an overview, as heimdall's and ``your``'s candidate plots do: the count of candidates per DM, S/N
  against DM, the S/N histogram, and every candidate in DM and time (colour and area by S/N, the
  brightest numbered, the unsearched end of each DM trial shaded); a square-root DM axis when the
  trials reach DM 100 or more, so that a pulsar at DM 30 is not crowded against the axis by a search
  to DM 1000; a one-trial search (a dedispersed time series) shows S/N against time and width;
- for each of the brightest candidates: its profile; its dedispersed waterfall with its spectrum on
  the pulse beside it (channels the RFI cleaning masked shaded); and its DM-time bow-tie with the
  peak against DM beside it. Images use sequential colour scales with colour bars and limits from
  the 1st and 99.5th percentiles of the pixels that are data; pixels outside the file are hatched,
  never painted as data. A time series' candidates get their profile.

Times are at the centre of the highest channel, as everywhere in the search's outputs.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cudalab._io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cudalab.radio.io.header import Header
    from cudalab.radio.pipeline.search import SearchResult
    from cudalab.radio.single_pulse.candidates import Candidate
    from cudalab.radio.single_pulse.cutouts import Cutout, SeriesCutout

#: Sequential colour maps: an image's values are intensities, not signs.
IMAGE_CMAP = "viridis"
SNR_CMAP = "plasma"
#: Colour of pixels that are not data (outside the file, masked channels), hatched over.
NO_DATA = "0.82"
#: A DM axis becomes a square-root axis when the trials reach this DM.
SQRT_DM_FROM = 100.0
#: Marker area (points^2) of a candidate at the threshold; it grows as (S/N / threshold)^2, to a cap.
MARKER_MIN, MARKER_MAX = 22.0, 320.0
#: Rows of the candidate table (all are in candidates.csv).
TABLE_ROWS = 25
#: Sub-bands the waterfall is averaged to for display (a burst near threshold is invisible in one channel).
DISPLAY_SUBBANDS = 64


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def utc_ms(mjd: float) -> str:
    """An MJD as UTC, to the millisecond, for people ("2019-02-09 08:15:01.234")."""
    from cudalab.radio.single_pulse.cutouts import utc_of

    return utc_of(mjd).replace("T", " ")[:-3]


def _masked_mean(a: NDArray[Any], keep: NDArray[np.bool_], axis: int) -> NDArray[np.float64]:
    """The mean of ``a`` where ``keep`` along ``axis``; NaN where nothing is kept."""
    count = keep.sum(axis=axis)
    total = np.where(keep, a, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _masked_max(a: NDArray[Any], keep: NDArray[np.bool_], axis: int) -> NDArray[np.float64]:
    """The maximum of ``a`` where ``keep`` along ``axis``; NaN where nothing is kept."""
    m = np.where(keep, a, -np.inf).max(axis=axis)
    return np.where(np.isfinite(m), m, np.nan)


def robust_limits(values: NDArray[Any], valid: NDArray[np.bool_] | None = None) -> tuple[float, float]:
    """Colour limits from the 1st and 99.5th percentiles of the finite ``values`` (where ``valid``);
    ``(0, 1)`` when there are none, and never an empty range."""
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) if valid is None else (np.isfinite(v) & valid)
    if not keep.any():
        return 0.0, 1.0
    lo, hi = np.percentile(v[keep], [1.0, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def marker_sizes(snr: NDArray[np.float64], threshold: float) -> NDArray[np.float64]:
    """Marker areas: :data:`MARKER_MIN` at the threshold, growing as the square of S/N over it (so the
    area reads as brightness), capped at :data:`MARKER_MAX`; a lone candidate is as visible as any."""
    return np.clip(MARKER_MIN * (np.asarray(snr) / max(threshold, 1e-6)) ** 2, MARKER_MIN, MARKER_MAX)


def snr_norm(snr: NDArray[np.float64], threshold: float) -> Any:
    """The S/N colour scale: linear from the threshold, logarithmic when the brightest is more than five
    times it (one bright impulse would otherwise leave every other candidate one colour)."""
    from matplotlib.colors import LogNorm, Normalize

    top = max(float(np.max(snr)) if len(snr) else 0.0, threshold + 1.0)
    return LogNorm(threshold, top) if top > 5 * threshold else Normalize(threshold, top)


def uses_sqrt_dm(dms: NDArray[np.float64]) -> bool:
    """Whether a DM axis over ``dms`` is drawn as a square root (see :data:`SQRT_DM_FROM`)."""
    return len(dms) > 1 and float(dms[0]) >= 0 and float(dms[-1]) >= SQRT_DM_FROM


def sqrt_ticks(top: float, most: int = 7) -> list[float]:
    """Round DMs (1, 2, 5 x 10^k and 0) for a square-root axis to ``top``, at least a ``1 / most`` of
    the axis apart (equal steps in the square root of DM)."""
    nice = [0.0] + [m * 10.0**k for k in range(-1, 6) for m in (1, 2, 5)]
    ticks: list[float] = []
    for v in nice:
        if v > top * 1.0001:
            break
        if not ticks or np.sqrt(v) - np.sqrt(ticks[-1]) >= np.sqrt(top) / most:
            ticks.append(v)
    return ticks


def _sqrt_scale(ax: Axes, axis: str, top: float) -> None:
    forward: Callable[[Any], Any] = lambda x: np.sqrt(np.clip(x, 0, None))  # noqa: E731
    inverse: Callable[[Any], Any] = np.square
    most = 7 if axis == "y" or top <= 0 else 5
    if axis == "y":
        ax.set_yscale("function", functions=(forward, inverse))
        ax.set_yticks(sqrt_ticks(top, most))
    else:
        ax.set_xscale("function", functions=(forward, inverse))
        ax.set_xticks(sqrt_ticks(top, most))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter("{x:g}")


def _dm_limits(dms: NDArray[np.float64]) -> tuple[float, float]:
    lo, hi = float(dms[0]), float(dms[-1])
    return (lo, hi * 1.02 + 1.0) if hi > lo else (lo - 1.0, hi + 1.0)  # one trial: a range around it


def _nothing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.45", fontsize=9)


def _hatch_no_data(ax: Axes, valid: NDArray[Any], extent: tuple[float, float, float, float]) -> None:
    """Hatch the pixels of an image that are not (wholly) data (``valid`` with its first row at the
    bottom of ``extent``)."""
    bad = np.asarray(valid) < 0.999
    if bad.any():
        ax.contourf(bad.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"], extent=extent)


def overview_png(result: SearchResult, truth: dict[str, Any] | None = None) -> bytes:
    """Count against DM, S/N against DM, the S/N histogram, and every candidate in DM and time (see the
    module); injected pulses, when a truth table is given, as open red circles."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    h, cfg, dms = result.header, result.config, result.plan.dms
    cands = result.candidates
    thr = cfg.snr_threshold
    t = np.array([c.time_s for c in cands])
    dm = np.array([c.dm for c in cands])
    snr = np.array([c.snr for c in cands])
    width_ms = np.array([c.width_s * 1e3 for c in cands])
    one_trial = len(dms) == 1
    fig = plt.figure(figsize=(11, 7.4))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.55], hspace=0.38, wspace=0.3)
    a_count, a_snr_dm, a_hist = (fig.add_subplot(grid[0, i]) for i in range(3))
    main = fig.add_subplot(grid[1, :])
    sqrt_dm = uses_sqrt_dm(dms)
    norm = snr_norm(snr, thr)
    empty = f"no candidate >= {thr:g} sigma"

    # top left: how many candidates per DM (per width for a single trial)
    if one_trial:
        a_count.set_xlabel("boxcar width (ms)")
        if len(cands):  # widths about sqrt(2) apart: one bar each, on a log axis
            widths, counts = np.unique(width_ms, return_counts=True)
            a_count.bar(widths, counts, width=widths * 0.25, color="0.3")
            a_count.set_xscale("log")
        else:
            _nothing(a_count, empty)
    else:
        a_count.set_xlabel("DM (pc cm$^{-3}$)")
        edges = np.linspace(np.sqrt(max(dms[0], 0)), np.sqrt(dms[-1]), 41) ** 2 if sqrt_dm else 40
        if len(cands):
            a_count.hist(dm, bins=edges, color="0.3")
        else:
            _nothing(a_count, empty)
        a_count.set_xlim(*_dm_limits(dms))
        if sqrt_dm:
            _sqrt_scale(a_count, "x", float(dms[-1]))
    a_count.set_ylabel("candidates")
    a_count.yaxis.set_major_locator(MaxNLocator(integer=True))

    # top middle: S/N against DM (against width for a single trial)
    if len(cands):
        x = width_ms if one_trial else dm
        a_snr_dm.scatter(
            x, snr, s=marker_sizes(snr, thr) / 2, c=snr, cmap=SNR_CMAP, norm=norm, lw=0.3, ec="k"
        )
    else:
        _nothing(a_snr_dm, empty)
    a_snr_dm.axhline(thr, color="0.5", ls="--", lw=0.8)
    a_snr_dm.set_ylabel("S/N")
    if one_trial:
        a_snr_dm.set_xlabel("boxcar width (ms)")
        a_snr_dm.set_xscale("log")
    else:
        a_snr_dm.set_xlabel("DM (pc cm$^{-3}$)")
        a_snr_dm.set_xlim(*_dm_limits(dms))
        if sqrt_dm:
            _sqrt_scale(a_snr_dm, "x", float(dms[-1]))

    # top right: the S/N histogram
    if len(cands):
        counts, _, _ = a_hist.hist(
            snr, bins=np.linspace(thr, max(float(snr.max()), thr + 1), 31), color="0.3"
        )
        if counts.max() >= 20:  # the tail of many faint candidates stays visible beside the peak
            a_hist.set_yscale("log")
        else:
            a_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _nothing(a_hist, empty)
    a_hist.axvline(thr, color="0.5", ls="--", lw=0.8)
    a_hist.set_xlabel("S/N")
    a_hist.set_ylabel("candidates")

    # bottom: every candidate in time, against DM (S/N for a single trial)
    top = cands[: cfg.report_top]
    if one_trial:
        if len(cands):
            main.vlines(t, thr, snr, color="0.6", lw=0.6)
            sc = main.scatter(
                t, snr, s=marker_sizes(snr, thr), c=snr, cmap=SNR_CMAP, norm=norm, lw=0.4, ec="k"
            )
            _snr_colorbar(fig, sc, main)
            for i, c in enumerate(top):
                main.annotate(
                    str(i), (c.time_s, c.snr), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
        else:
            _nothing(main, empty)
        main.axhline(thr, color="0.5", ls="--", lw=0.8)
        main.set_ylabel(f"S/N at DM {float(dms[0]):.4g}")
    else:
        lost = result.unsearched_s
        if np.any(lost > 0):
            main.fill_betweenx(
                dms, h.duration_s - lost, h.duration_s, color=NO_DATA, lw=0, label="not searched", zorder=0
            )
        if len(cands):
            order = np.argsort(snr)  # the brightest drawn last, on top
            sc = main.scatter(
                t[order],
                dm[order],
                s=marker_sizes(snr[order], thr),
                c=snr[order],
                cmap=SNR_CMAP,
                norm=norm,
                lw=0.4,
                ec="k",
                alpha=0.9,
            )
            _snr_colorbar(fig, sc, main)
            for i, c in enumerate(top):
                main.annotate(str(i), (c.time_s, c.dm), textcoords="offset points", xytext=(5, 5), fontsize=8)
        else:
            _nothing(main, empty)
        if truth:
            pts = [(p["time_s"], p["dm"]) for p in truth.get("pulses", [])]
            if pts:
                tt, dd = zip(*pts, strict=True)
                main.scatter(
                    tt, dd, s=110, facecolors="none", edgecolors="red", linewidths=0.9, label="injected"
                )
        main.set_ylim(*_dm_limits(dms))
        if sqrt_dm:
            _sqrt_scale(main, "y", float(dms[-1]))
        main.set_ylabel("DM (pc cm$^{-3}$)" + (", square-root axis" if sqrt_dm else ""))
        if main.get_legend_handles_labels()[0]:
            main.legend(loc="upper right", fontsize=8, framealpha=0.9)
    main.set_xlim(0, h.duration_s)
    main.set_xlabel(f"time (s) from MJD {h.tstart_mjd:.6f}, at {h.fmax_mhz:.1f} MHz")
    main.set_title(f"{len(cands)} candidates >= {thr:g} sigma", fontsize=10)
    return _figure_png(fig)


def _snr_colorbar(fig: Figure, mappable: Any, ax: Axes) -> None:
    bar = fig.colorbar(mappable, ax=ax, label="S/N", pad=0.01)
    bar.ax.yaxis.set_major_formatter("{x:g}")
    bar.ax.yaxis.set_minor_formatter("{x:g}")  # a log scale labels 20, 30, ... as plain numbers too


def _title(index: int, cand: Candidate) -> str:
    p = f"P(real) {cand.prob:.3f}  " if not math.isnan(cand.prob) else ""
    return (
        f"#{index}  {p}S/N {cand.snr:.1f}  DM {cand.dm:.2f}  width {cand.width_s * 1e3:.3g} ms\n"
        f"t = {cand.time_s:.4f} s   MJD {cand.mjd:.8f}   {utc_ms(cand.mjd)} UTC"
    )


def display_waterfall(
    cut: Cutout, subbands: int = DISPLAY_SUBBANDS
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """The cutout's waterfall as shown: ``(sub-band, time)`` with the highest frequency first, each
    sub-band the mean of its live channels (a masked channel's 0 would dim it); the fraction of each
    pixel that is data; and the fraction of each sub-band that is masked."""
    from cudalab.radio.single_pulse.cutouts import resize_axis

    nsub = min(subbands, cut.freq_time.shape[1])
    live = 1.0 - cut.masked_freq
    live_frac = resize_axis(live, nsub, axis=0)
    ft = resize_axis(cut.freq_time.T * live[:, None], nsub, axis=0) / np.maximum(live_frac, 1e-6)[:, None]
    valid = resize_axis(cut.valid_freq_time.T, nsub, axis=0)
    return ft.astype(np.float32), valid, (1.0 - live_frac).astype(np.float32)


def candidate_png(index: int, cand: Candidate, cut: Cutout, header: Header) -> bytes:
    """Profile; dedispersed waterfall and on-pulse spectrum; DM-time bow-tie and peak against DM."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ft, ft_valid, masked_frac = display_waterfall(cut)
    nsub = ft.shape[0]
    masked = masked_frac > 0.999  # a sub-band with no live channel
    n = ft.shape[1]
    dt_ms = cut.time_decimation * header.tsamp_s * 1e3
    t0, t1 = -n / 2 * dt_ms, n / 2 * dt_ms
    times = (np.arange(n) - n / 2 + 0.5) * dt_ms
    fmin, fmax = header.fmin_mhz, header.fmax_mhz
    sub_freqs = np.linspace(fmax, fmin, nsub)  # display sub-band centres, top first
    data = (ft_valid > 0.999) & ~masked[:, None]

    fig = plt.figure(figsize=(8.2, 8.4))
    grid = fig.add_gridspec(
        3, 3, height_ratios=[1, 2.2, 2.2], width_ratios=[4, 1.2, 0.13], hspace=0.08, wspace=0.06
    )
    a_prof = fig.add_subplot(grid[0, 0])
    a_ft = fig.add_subplot(grid[1, 0], sharex=a_prof)
    a_spec = fig.add_subplot(grid[1, 1], sharey=a_ft)
    a_dmt = fig.add_subplot(grid[2, 0], sharex=a_prof)
    a_curve = fig.add_subplot(grid[2, 1], sharey=a_dmt)
    cb_ft, cb_dmt = fig.add_subplot(grid[1, 2]), fig.add_subplot(grid[2, 2])

    # profile: the band average of the sub-bands with data
    prof = _masked_mean(ft, data, axis=0)  # NaN (a gap in the line) where no sub-band is data
    a_prof.plot(times, prof, color="k", lw=1, drawstyle="steps-mid")
    off = ft_valid.min(axis=0) < 0.999
    if off.any():
        a_prof.fill_between(
            times, 0, 1, where=off, transform=a_prof.get_xaxis_transform(), color=NO_DATA, lw=0
        )
    a_prof.set_ylabel("mean (sigma)")
    a_prof.set_title(_title(index, cand), fontsize=9, loc="left")
    a_prof.tick_params(labelbottom=False)

    # waterfall
    cmap = plt.get_cmap(IMAGE_CMAP).with_extremes(bad=NO_DATA)
    vmin, vmax = robust_limits(ft, data)
    extent = (t0, t1, fmin, fmax)
    im = a_ft.imshow(
        np.ma.masked_where(~data, ft),
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        interpolation="nearest",
    )
    _hatch_no_data(a_ft, ft_valid[::-1], extent)  # contourf counts rows from the bottom
    fig.colorbar(im, cax=cb_ft, label="sigma")
    a_ft.set_ylabel("frequency (MHz)")
    a_ft.tick_params(labelbottom=False)

    # spectrum on the pulse: the mean over the boxcar's pixels around the centre
    half = max(1, int(np.ceil(cand.width_samples / cut.time_decimation / 2)))
    on = slice(n // 2 - half, n // 2 + half + 1)
    spec = _masked_mean(ft[:, on], data[:, on], axis=1)
    a_spec.plot(spec, sub_freqs, color="k", lw=0.9, drawstyle="steps-mid")
    a_spec.axvline(0, color="0.6", lw=0.6)
    step = (fmax - fmin) / nsub
    for f, frac in zip(sub_freqs, masked_frac, strict=True):  # shaded as deep as the share masked
        if frac > 0.001:
            a_spec.axhspan(f - step / 2, f + step / 2, color="tab:red", alpha=0.1 + 0.25 * frac, lw=0)
    a_spec.xaxis.set_major_locator(MaxNLocator(2))
    a_spec.xaxis.tick_top()  # below, its labels would run into the DM-time row
    a_spec.xaxis.set_label_position("top")
    a_spec.set_xlabel("on-pulse mean (sigma)", fontsize=8)
    a_spec.tick_params(labelleft=False)
    if masked_frac.max() > 0.001:
        a_spec.text(
            0.97, 0.01, "red: masked", transform=a_spec.transAxes, ha="right", fontsize=7, color="tab:red"
        )

    # DM-time
    dmt, dmt_valid = cut.dm_time, cut.valid_dm_time  # (dm, time), on the waterfall's time axis
    dmt_data = dmt_valid > 0.999
    vmin, vmax = robust_limits(dmt, dmt_data)
    extent = (t0, t1, float(cut.dms[0]), float(cut.dms[-1]))
    im = a_dmt.imshow(
        np.ma.masked_where(~dmt_data, dmt),
        aspect="auto",
        cmap=cmap,
        origin="lower",
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        interpolation="nearest",
    )
    _hatch_no_data(a_dmt, dmt_valid, extent)
    a_dmt.axhline(cand.dm, color="w", lw=0.7, ls="--")
    fig.colorbar(im, cax=cb_dmt, label="sigma")
    a_dmt.set_ylabel("DM (pc cm$^{-3}$)")
    a_dmt.set_xlabel("time from candidate (ms)")

    # peak against DM, near the candidate's time
    near = slice(max(0, n // 2 - 2 * half), n // 2 + 2 * half + 1)
    peak = _masked_max(dmt[:, near], dmt_data[:, near], axis=1)
    a_curve.plot(peak, cut.dms, color="k", lw=0.9)
    a_curve.axhline(cand.dm, color="0.5", lw=0.7, ls="--")
    a_curve.xaxis.set_major_locator(MaxNLocator(2))
    a_curve.set_xlabel("peak (sigma)", fontsize=8)
    a_curve.tick_params(labelleft=False)
    a_dmt.set_xlim(t0, t1)
    return _figure_png(fig)


def series_png(index: int, cand: Candidate, cut: SeriesCutout, tsamp_s: float) -> bytes:
    """A time series' candidate: the series around it, the boxcar shaded, what lies outside the file grey."""
    plt = _pyplot()
    n = len(cut.series)
    dt_ms = cut.time_decimation * tsamp_s * 1e3
    times = (np.arange(n) - n / 2 + 0.5) * dt_ms
    fig, ax = plt.subplots(figsize=(8.2, 2.8))
    ax.plot(times, cut.series, color="k", lw=0.9, drawstyle="steps-mid")
    ax.axvspan(0, cand.width_s * 1e3, color="tab:orange", alpha=0.3, lw=0, label="boxcar")
    off = cut.valid < 0.999
    if off.any():
        ax.fill_between(
            times,
            0,
            1,
            where=off,
            transform=ax.get_xaxis_transform(),
            color=NO_DATA,
            lw=0,
            label="outside the file",
        )
    ax.set_xlim(times[0], times[-1])
    ax.set_xlabel("time from candidate (ms)")
    ax.set_ylabel("sigma")
    ax.set_title(_title(index, cand), fontsize=9, loc="left")
    ax.legend(loc="upper right", fontsize=8)
    return _figure_png(fig)


#: The style of every radio report page (the single-pulse and the periodicity search's).
PAGE_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { padding: 2px 10px; text-align: left; }
table.cands td { font-variant-numeric: tabular-nums; } table.cands tr:nth-child(even) { background: #f3f3f3; }
.kv th { color: #555; font-weight: normal; } figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #444; } img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.4em 0.8em; }
</style>"""


def observation_rows(h: Header) -> list[tuple[str, Any]]:
    """The report's description of a file: format, source, band, sampling, start, position."""
    rows: list[tuple[str, Any]] = [
        ("file", h.path),
        ("format", f"{h.format}, {h.nbits}-bit, {h.npol_stored} pol stored"),
        ("source", h.source_name or "(not named)"),
        (
            "channels",
            f"{h.nchans} x {abs(h.foff_mhz):.4f} MHz, {h.fmin_mhz:.2f}-{h.fmax_mhz:.2f} MHz"
            if not h.is_time_series
            else f"a time series dedispersed at DM {h.refdm:g}",
        ),
        ("sampling", f"{h.tsamp_s * 1e6:.3f} us, {h.nsamples} samples, {h.duration_s:.3f} s"),
        ("start", f"MJD {h.tstart_mjd:.8f} ({utc_ms(h.tstart_mjd)} UTC)"),
    ]
    pos = h.position_deg
    if pos is not None:
        rows.append(("position (deg)", f"RA {pos[0]:.4f}, Dec {pos[1]:.4f}"))
    return rows


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    """Rows of (name, value) as the report's two-column table, escaped."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def rfi_mask_png(result: SearchResult) -> bytes:
    """Where the search masked data, channel against time: channels masked in at least one block
    (horizontal bands) and the narrowband impulses masked in time and frequency (boxes)."""
    plt = _pyplot()
    h = result.header
    fig, ax = plt.subplots(figsize=(10, 2.8), layout="constrained")
    for c in result.masked_channels:
        ax.axhspan(
            h.freqs_mhz[c] - abs(h.foff_mhz) / 2, h.freqs_mhz[c] + abs(h.foff_mhz) / 2, color="0.6", lw=0
        )
    for c0, c1, t0, t1 in result.impulses:
        f = h.freqs_mhz[[c0, c1 - 1]]
        ax.add_patch(
            plt.Rectangle(
                (t0 * h.tsamp_s, f.min() - abs(h.foff_mhz) / 2),
                max((t1 - t0) * h.tsamp_s, h.duration_s / 500),  # at least a visible sliver
                abs(f[1] - f[0]) + abs(h.foff_mhz),
                color="tab:red",
                lw=0,
            )
        )
    ax.set_xlim(0, h.duration_s)
    ax.set_ylim(h.fmin_mhz - abs(h.foff_mhz) / 2, h.fmax_mhz + abs(h.foff_mhz) / 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (MHz)")
    ax.set_title(
        f"masked: {len(result.masked_channels)} channels (grey), "
        f"{len(result.impulses)} narrowband impulses (red)",
        fontsize=10,
    )
    return _figure_png(fig)


def score_time_png(result: SearchResult, truth: dict[str, Any] | None = None) -> bytes:
    """The classifier's probability of every candidate against its time over the observation (colour
    and area by S/N), the kept ones ringed, the ``min_prob`` line and, with a truth table, the injected
    pulses' times marked."""
    plt = _pyplot()
    cls = result.classification or {}
    scored = result.scored or result.candidates
    fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
    if scored:
        t = np.array([c.time_s for c in scored])
        p = np.array([c.prob for c in scored])
        snr = np.array([c.snr for c in scored])
        thr = result.config.snr_threshold
        order = np.argsort(snr)
        sc = ax.scatter(
            t[order], p[order], s=marker_sizes(snr[order], thr) / 2, c=snr[order], cmap=SNR_CMAP,
            norm=snr_norm(snr, thr), lw=0.3, ec="k",
        )  # fmt: skip
        kept = p >= cls.get("min_prob", 0.0)
        ax.scatter(
            t[kept],
            p[kept],
            s=marker_sizes(snr[kept], thr),
            facecolors="none",
            edgecolors="tab:green",
            lw=0.8,
        )
        _snr_colorbar(fig, sc, ax)
    if truth:
        for q in truth.get("pulses", []):
            ax.axvline(q["time_s"], color="tab:red", lw=0.5, alpha=0.4)
    floor = cls.get("min_prob", 0.0)
    if floor > 0:
        ax.axhline(floor, color="tab:green", lw=0.8, ls="--")
    ax.axhline(cls.get("threshold", 0.5), color="0.4", lw=0.6, ls=":")
    ax.set_xlim(0, result.header.duration_s)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(real)")
    ax.set_title(
        f"classifier {cls.get('model', '')}: {cls.get('scored', len(scored))} candidates scored, "
        f"{cls.get('removed', 0)} below min_prob {floor:g} removed (dotted: its threshold {cls.get('threshold', 0.5):.3g})",
        fontsize=10,
    )
    return _figure_png(fig)


def _coverage(result: SearchResult) -> str:
    """What could not be searched, in words: the warnings and, per DM range, the seconds lost."""
    u = result.unsearched()
    h = result.header
    warn = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in result.warnings())
    worst = float(result.unsearched_s.max(initial=0.0))
    if worst <= 0:
        return warn + "<p>Every DM trial was searched over the whole file.</p>"
    if worst < 0.01 * h.duration_s:
        return (
            f"{warn}<p>Every DM trial was searched to within {worst:.3g} s of the file's end (its sweep "
            "across the band: the last samples of a trial cannot be searched).</p>"
        )
    rows = "".join(
        f"<tr><td>{r['dm'][0]:.4g} - {r['dm'][1]:.4g}</td><td>{r['unsearched_s'][0]:.3g} - "
        f"{r['unsearched_s'][1]:.3g} s</td><td>{100 * r['unsearched_s'][1] / h.duration_s:.3g} %</td></tr>"
        for r in u["ranges"]
    )
    return (
        f"{warn}<p>A trial's last samples cannot be searched: its sweep across the band reaches past the "
        "file's end. Shaded grey in the overview.</p><table class='cands'><tr><th>DM trials</th>"
        f"<th>unsearched at the end</th><th>of the file, at most</th></tr>{rows}</table>"
    )


def write_report(
    out_dir: Path,
    result: SearchResult,
    cutouts: dict[int, Cutout | SeriesCutout],
    truth: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.html`` and ``plots/*.png`` into ``out_dir``."""
    from cudalab.radio.single_pulse.cutouts import Cutout

    h, cfg = result.header, result.config
    plots = out_dir / "plots"
    atomic_write_bytes(plots / "overview.png", overview_png(result, truth))
    masked = bool(result.masked_channels or result.impulses)
    if not h.is_time_series and masked:
        atomic_write_bytes(plots / "rfi_mask.png", rfi_mask_png(result))
    cls = result.classification
    if cls is not None:
        atomic_write_bytes(plots / "score_time.png", score_time_png(result, truth))
    figs = []
    for i, cand in enumerate(result.candidates[: cfg.report_top]):
        cut = cutouts.get(i)
        if cut is None:
            continue
        name = f"cand_{i:04d}.png"
        png = (
            candidate_png(i, cand, cut, h) if isinstance(cut, Cutout) else series_png(i, cand, cut, h.tsamp_s)
        )
        atomic_write_bytes(plots / name, png)
        figs.append((i, cand, name))
    obs_rows = observation_rows(h)
    plan: dict[str, Any] = result.plan.summary()
    rfi = cfg.rfi
    zero_dm = (
        "off"
        if not rfi.zero_dm
        else f"on for trials sweeping >= {rfi.zero_dm_min_sweep_s * 1e3:g} ms"
        if rfi.zero_dm_min_sweep_s > 0
        else "on"
    )
    search_rows = [
        (
            "DM trials",
            f"{plan['ndm']} from {plan['dm_min']:.1f} to {plan['dm_max']:.1f} (tolerance {cfg.dm_tolerance})",
        ),
        ("time scrunching", ", ".join(f"x{k}: {v} trials" for k, v in plan["scrunch_factors"].items())),
        ("max dispersion delay", f"{plan['max_delay_s']:.3f} s"),
        ("threshold", f"S/N >= {cfg.snr_threshold:g}, boxcars to {cfg.max_width_s * 1e3:g} ms"),
        (
            "RFI",
            f"{len(result.masked_channels)} channels masked at least once; mean masked fraction "
            f"{100 * result.mask_fraction:.1f} %; {len(result.impulses)} narrowband impulses masked in time "
            f"and frequency (cells of {', '.join(f'{s * 1e3:g}' for s in rfi.impulse_scales_s)} ms beyond "
            f"{rfi.impulse_threshold:g} sigma); zero-DM {zero_dm}",
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
        (
            "giants / candidates",
            f"{len(result.giants)} / {len(result.candidates)}"
            + (f" ({result.giants_dropped} giants set aside: see Coverage)" if result.giants_dropped else ""),
        ),
    ]
    if cls is not None:
        search_rows.append(
            (
                "classifier",
                f"{cls['model']} ({html.escape(Path(cls['file']).name) if cls['file'] else 'shipped'}): "
                f"{cls['scored']} scored in {cls['seconds']:.1f} s, {cls['removed']} below P(real) "
                f"{cls['min_prob']:g} removed; operating threshold {cls['threshold']:.3g}",
            )
        )
    p_head = "<th>P(real)</th>" if cls is not None else ""
    head = (
        f"<tr><th>#</th>{p_head}<th>S/N</th><th>DM</th><th>time (s)</th><th>MJD</th><th>width (ms)</th>"
        "<th>members</th><th>DM range</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{i}</td>{f'<td>{c.prob:.3f}</td>' if cls is not None else ''}<td>{c.snr:.1f}</td><td>{c.dm:.2f} &plusmn; {c.dm_err:.2f}</td><td>{c.time_s:.5f}</td><td>{c.mjd:.8f}</td>"
        f"<td>{c.width_s * 1e3:.3f}</td><td>{c.members}</td><td>{c.dm_lo:.1f}-{c.dm_hi:.1f}</td></tr>"
        for i, c in enumerate(result.candidates[:TABLE_ROWS])
    )
    cards = "".join(
        f"<figure><img src='plots/{name}' alt='candidate {i}'><figcaption>#{i}: "
        f"{f'P(real) {c.prob:.3f}, ' if cls is not None else ''}S/N {c.snr:.1f}, DM {c.dm:.2f}, "
        f"t = {c.time_s:.4f} s</figcaption></figure>"
        for i, c, name in figs
    )
    axis_note = (
        "The DM axes are square-root axes (equal steps in the square root of DM), so low DMs are not crowded. "
        if uses_sqrt_dm(result.plan.dms)
        else ""
    )
    cand_note = (
        "Each: the profile; the waterfall dedispersed at the candidate's DM (the band in "
        f"{DISPLAY_SUBBANDS} sub-bands) and the spectrum on the pulse, masked channels shaded; the DM-time "
        "image from 0 to twice its DM and the peak against DM. Colour limits: 1st to 99.5th percentile "
        "of the pixels that are data; hatched grey: outside the file or masked."
        if not h.is_time_series
        else "Each: the dedispersed series around the pulse, the boxcar shaded."
    )
    table_note = (
        f"<p class='note'>The first {TABLE_ROWS} of {len(result.candidates)}.</p>"
        if len(result.candidates) > TABLE_ROWS
        else ""
    )
    if len(result.candidates) > cfg.cutouts:
        cutout_note = f"FETCH cutouts of the first {cfg.cutouts} in <code>cands/</code>."
    elif not h.is_time_series and result.candidates:
        cutout_note = "FETCH cutouts of each in <code>cands/</code>."
    else:
        cutout_note = ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cudalab radio search: {html.escape(Path(h.path).name)}</title>
{PAGE_STYLE}</head><body>
<h1>Single-pulse search: {html.escape(Path(h.path).name)}</h1>
<h2>Observation</h2>{kv_table(obs_rows)}
<h2>Search</h2>{kv_table(search_rows)}
<h2>Coverage</h2>{_coverage(result)}
{"" if h.is_time_series else "<h2>RFI mask</h2>" + ('<img src="plots/rfi_mask.png" alt="masked channels and impulses">' if masked else "<p>Nothing was masked.</p>")}
<h2>Candidates</h2><img src="plots/overview.png" alt="candidates: count and S/N against DM, S/N histogram, DM against time">
<p class="note">Colour and marker area: S/N (area grows as its square); the first candidates numbered as in the table below.
{axis_note}Grey: not searched.{" Red circles: injected pulses." if truth else ""}</p>
{'<h2>Classifier</h2><img src="plots/score_time.png" alt="classifier probability against time"><p class="note">Green rings: kept. Red lines: injected pulses.</p>' if cls is not None else ""}
<h2>{"Most likely real" if cls is not None else "Brightest"} candidates</h2>{table_note}<table class="cands">{head}{rows}</table>
<p>All candidates: <a href="candidates.csv">candidates.csv</a> and heimdall's <a href="candidates.cand">candidates.cand</a>.
{cutout_note}</p>
<h2>Top candidates</h2><p class="note">{cand_note}</p>{cards or "<p>No candidate above threshold.</p>"}
</body></html>
"""
    return atomic_write_text(out_dir / "report.html", page)
