"""A search as a run: its folder, written whole or not at all.

::

    config.toml        the resolved SearchConfig (``--config`` reads it back)
    manifest.json      kind ``radio-search``, the searched file, environment fingerprint, command line
    summary.json       candidates, giants, the brightest candidate, wall time, real-time factor
    candidates.csv     every candidate (and heimdall's .cand), with the classifier's probability when one
                       scored them, most likely real first; FETCH cutouts in cands/*.h5
    rfi_mask.json      channels masked at least once
    search.json        the search's own record: header, plan, memory bound, stage times
    report.html        the visual report, with plots/

The folder is checked before the search starts (a file in the way, or a folder that cannot be
written, is refused at once rather than after hours of work), assembled beside its destination and
renamed into place, so it appears complete or not at all (:func:`cudalab.runs.rundir.staged`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cudalab._io import atomic_write_json
from cudalab.errors import CudalabError
from cudalab.radio.io.observation import open_observation
from cudalab.radio.pipeline.config import SearchConfig
from cudalab.radio.pipeline.search import Progress, SearchResult, search_file
from cudalab.radio.single_pulse.candidates import rank_key, write_candidates
from cudalab.runs.rundir import MANIFEST, RunDir, check_output_dir, now, staged

if TYPE_CHECKING:
    from cudalab.radio.classify.score import Classifier
    from cudalab.radio.single_pulse.cutouts import Cutout

KIND = "radio-search"
#: The files that mark a folder as a previous search's, which a new search may replace.
OWNED = (MANIFEST, "search.json", "candidates.csv")


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an output folder that a search could not write or must not replace."""
    try:
        check_output_dir(out_dir, owned=OWNED)
    except ValueError as exc:
        raise CudalabError(f"--out {exc}") from None


def search_summary(result: SearchResult) -> dict[str, Any]:
    """The run's summary.json: what ``cudalab runs list`` and ``runs diff`` show of a search."""
    best = result.candidates[0] if result.candidates else None
    return {
        "kind": KIND,
        "file": result.header.path,
        "candidates": len(result.candidates),
        "giants": len(result.giants),
        "best_snr": best.snr if best else None,
        "best_dm": best.dm if best else None,
        "best_time_s": best.time_s if best else None,
        "dm_trials": len(result.plan.dms),
        "masked_channels": len(result.masked_channels),
        "masked_impulses": len(result.impulses),
        "nonfinite_samples": result.nonfinite_samples,
        "trials_not_searched": result.unsearched()["trials_not_searched"],
        "supported_dm_max": round(result.supported_dm_max, 2),
        "seconds": round(result.seconds, 3),
        "realtime_factor": round(result.realtime_factor, 4),
        "device": result.device,
        "kernel": result.kernel,
        "classifier": result.classification,
        "headline": {
            "metric": "candidates",
            "value": len(result.candidates),
            "unit": f"(best S/N {best.snr:.1f} at DM {best.dm:.1f})" if best else "",
        },
    }


def run_search(
    path: str | Path,
    out_dir: str | Path,
    cfg: SearchConfig,
    progress: Progress | None = None,
    truth: dict[str, Any] | None = None,
) -> SearchResult:
    """Search ``path`` and write the run folder ``out_dir`` (see the module)."""
    from cudalab.env.fingerprint import fingerprint
    from cudalab.radio.report import write_report
    from cudalab.radio.single_pulse.cutouts import (
        SeriesCutout,
        make_cutout,
        make_series_cutout,
        write_fetch_h5,
    )

    out = Path(out_dir)
    check_out_dir(out)
    classifier = resolve_classifier(cfg)  # a bad classifier file fails before the search
    started = now()
    result = search_file(path, cfg, progress)
    made: dict[int, Cutout] = {}  # the classifier's cutouts of the first candidates, reused below
    if classifier is not None and not result.header.is_time_series:
        made = classify_result(result, path, classifier, progress)
    with staged(out, owned=OWNED) as stage:
        run = RunDir(stage)
        run.start(
            cfg,
            kind=KIND,
            subject=Path(result.header.path).name,
            seed=None,
            environment=fingerprint(),
            run_id=out.name,
            started_at=started,
            extra={"file": str(path), "device": result.device, "kernel": result.kernel},
        )
        write_candidates(stage, result.candidates)
        obs = open_observation(path)
        device = torch.device(result.device)
        cutouts: dict[int, Cutout] = {}
        series_cuts: dict[int, SeriesCutout] = {}
        if not result.header.is_time_series:
            top = result.candidates[: cfg.cutouts]  # the most likely real when classified
            for i, cand in enumerate(top):
                cut = made.get(i) or make_cutout(obs, cand, k_dm=cfg.k_dm, rfi=cfg.rfi, device=device)
                cand_id = f"cand_{i:04d}_t{cand.time_s:.4f}_dm{cand.dm:.1f}_snr{cand.snr:.1f}"
                write_fetch_h5(stage / "cands" / f"{cand_id}.h5", cut, cand, result.header, cand_id)
                cutouts[i] = cut
                if progress is not None:
                    progress("cutouts", i + 1, len(top))
        else:  # a series has no spectrum, so no FETCH cutout: the report shows its profile
            for i, cand in enumerate(result.candidates[: cfg.report_top]):
                series_cuts[i] = make_series_cutout(obs, cand)
        atomic_write_json(
            stage / "rfi_mask.json",
            {
                "masked_channels": result.masked_channels,
                "mean_masked_fraction": result.mask_fraction,
                "freqs_mhz": [float(f) for f in result.header.freqs_mhz[result.masked_channels]],
                # narrowband impulses masked in time and frequency: channels [first, stop), samples [first, stop)
                "impulses": [
                    {"channels": [c0, c1], "samples": [t0, t1]} for c0, c1, t0, t1 in result.impulses
                ],
            },
        )
        atomic_write_json(
            stage / "search.json",
            {
                "file": str(path),
                "header": result.header.summary(),
                "plan": result.plan.summary(),
                "config": asdict(cfg),
                "device": result.device,
                "kernel": result.kernel,
                "subbands": result.subbands,
                "memory_bound_bytes": result.memory.summary(),
                "peak_device_bytes": result.peak_device_bytes,
                "seconds": result.seconds,
                "realtime_factor": result.realtime_factor,
                "stages_s": result.stages,
                "cpu_threads": result.cpu_threads,
                "classifier": result.classification,
                "giants": len(result.giants),
                "giants_dropped": result.giants_dropped,
                "giants_floor_snr": result.giants_floor_snr,
                "candidates": len(result.candidates),
                "nonfinite_samples": result.nonfinite_samples,
                "unsearched": result.unsearched(),
                "warnings": result.warnings(),
                "time_reference": f"centre of the highest channel, {result.header.fmax_mhz:.6f} MHz",
            },
        )
        write_report(stage, result, {**cutouts, **series_cuts}, truth=truth)
        run.finish(search_summary(result))
    return result


#: Candidates cut out and scored at once by ``--classify``: memory holds this many cutouts (about 1 MB
#: each) besides the ``cutouts`` kept for the run folder.
CLASSIFY_BATCH = 64


def resolve_classifier(cfg: SearchConfig) -> Classifier | None:
    """The classifier ``cfg`` asks for (None when ``classify`` is off, or ``auto`` without one)."""
    from cudalab.env.device import resolve_device
    from cudalab.radio.classify.score import default_classifier_available, load_classifier

    if cfg.classify == "off":
        return None
    if cfg.classify == "auto" and not cfg.classifier and not default_classifier_available():
        return None
    device, _ = resolve_device(cfg.device)
    try:
        return load_classifier(cfg.classifier or None, device)
    except ValueError as exc:
        raise CudalabError(f"--classifier {exc}") from None


def classify_result(
    result: SearchResult, path: str | Path, clf: Classifier, progress: Progress | None = None
) -> dict[int, Cutout]:
    """Score every candidate of ``result`` (cut out and scored in batches), rank them by the
    probability and keep those at ``min_prob`` or above; record what was done in ``result``.

    Returns the cutouts of the first ``config.cutouts`` candidates in the new order (kept while
    scoring, so the run folder's FETCH files need no second cutout)."""
    from cudalab.radio.classify.data import planes
    from cudalab.radio.single_pulse.cutouts import make_cutout

    t0 = time.perf_counter()
    cfg = result.config
    obs = open_observation(path)
    cands = result.candidates
    probs: list[float] = []
    held: dict[int, Cutout] = {}  # by index into cands: the best cfg.cutouts scored so far
    for start in range(0, len(cands), CLASSIFY_BATCH):
        chunk = cands[start : start + CLASSIFY_BATCH]
        x = []
        for k, c in enumerate(chunk):
            cut = make_cutout(obs, c, k_dm=cfg.k_dm, rfi=cfg.rfi, device=clf.device)
            held[start + k] = cut
            x.append(planes(cut.freq_time.T, cut.dm_time, clf.size))
            if progress is not None:
                progress("classify", start + len(x), len(cands))
        probs.extend(float(p) for p in clf.score_planes(np.stack(x)))
        scored = [replace(c, prob=p) for c, p in zip(cands, probs, strict=False)]  # so far
        held = {j: held[j] for j in sorted(held, key=lambda j: rank_key(scored[j]))[: cfg.cutouts]}
    scored = [replace(c, prob=p) for c, p in zip(cands, probs, strict=True)]
    order = sorted(range(len(scored)), key=lambda j: rank_key(scored[j]))  # ranked()'s order
    floor = clf.threshold if cfg.min_prob == -1.0 else cfg.min_prob
    result.scored = [scored[j] for j in order]
    result.candidates = [c for c in result.scored if c.prob >= floor]
    result.classification = {
        "file": str(clf.path) if clf.path else None,
        "model": clf.name,
        "threshold": clf.threshold,
        "min_prob": floor,
        "scored": len(scored),
        "removed": len(scored) - len(result.candidates),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return {rank: held[j] for rank, j in enumerate(order[: cfg.cutouts]) if j in held}
