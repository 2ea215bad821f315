"""Candidates: the search's product, written as CSV and in heimdall's ``.cand`` column order."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from cudalab._io import atomic_write_text
from cudalab.errors import CudalabError


@dataclass(frozen=True, slots=True)
class Candidate:
    """One clustered detection.

    Attributes
    ----------
    snr
        Boxcar S/N of the brightest member; for the brightest candidates (those refined), measured
        again at the refined DM (:func:`cudalab.radio.single_pulse.refine.refine_dm`).
    dm
        DM, pc cm^-3.
    dm_err
        Its standard error (:func:`dm_error`; from the arrival times' fit where that measured the DM).
    time_s
        Arrival time at the centre of the highest-frequency channel, seconds from the file's start.
    width_s
        Boxcar width, seconds.
    sample
        ``time_s`` in native samples.
    dm_index
        Index of the DM trial that found it.
    dm_trial
        That trial's DM; ``dm`` is refined from the data between the neighbouring trials
        (:mod:`cudalab.radio.single_pulse.refine`) for the brightest candidates, and equals ``dm_trial`` otherwise.
    members
        Giants merged into this candidate.
    width_samples
        Boxcar width in native samples (a power of two or three times one).
    dm_lo, dm_hi
        DM range spanned by the members.
    begin_sample, end_sample
        Sample range spanned by the members.
    mjd
        Topocentric MJD of ``time_s`` (at the top channel).
    fref_mhz
        The reference frequency of ``time_s`` (the top channel's centre).
    prob
        The classifier's probability that the candidate is real (:mod:`cudalab.radio.classify`);
        NaN when not classified.
    """

    snr: float
    dm: float
    dm_err: float
    time_s: float
    width_s: float
    sample: int
    dm_index: int
    dm_trial: float
    members: int
    width_samples: int
    dm_lo: float
    dm_hi: float
    begin_sample: int
    end_sample: int
    mjd: float
    fref_mhz: float
    prob: float = math.nan


CSV_COLUMNS = tuple(f.name for f in fields(Candidate))


def dm_error(snr: float, width_s: float, sweep_s_per_dm: float, step: float = 0.0) -> float:
    """The standard error of a DM found as the S/N peak over DM, with the DM trials ``step`` apart (0:
    refined between them).

    A pulse of width W dedispersed at a DM off by d smears over d x sweep (the sweep across the band
    per unit DM), and the matched filter's normalised response falls as (1 + (d sweep / W)^2)^(-1/4),
    curvature (sweep / W)^2 / 2 at its peak; the peak of a response of amplitude S/N in unit noise
    then lies within sqrt(2) W / (sweep S/N) (1 sigma; Cramer-Rao for a matched filter). A DM from
    the trial grid adds the step's rounding, step / sqrt(12). 0 where the band has no sweep (a time
    series: its DM is given).
    """
    if sweep_s_per_dm <= 0:
        return 0.0
    stat = math.sqrt(2.0) * width_s / (sweep_s_per_dm * max(snr, 1e-6))
    return math.hypot(stat, step / math.sqrt(12.0))


#: heimdall's candidate file: S/N, sample, time (s), boxcar filter (log2 width, rounded down: heimdall's
#: widths are powers of two, ours also three times them), DM trial, DM,
#: members, first sample, last sample.
CAND_COLUMNS = (
    "snr",
    "sample",
    "time_s",
    "filter",
    "dm_index",
    "dm",
    "members",
    "begin_sample",
    "end_sample",
)


def to_csv(cands: Sequence[Candidate]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in cands:
        row = asdict(c)
        w.writerow([_fmt(row[k]) for k in CSV_COLUMNS])
    return buf.getvalue()


def _fmt(v: object) -> str:
    # repr: the shortest text that reads back to the same float (an MJD needs ~15 digits for microseconds).
    return repr(v) if isinstance(v, float) else str(v)


def to_cand(cands: Sequence[Candidate]) -> str:
    """heimdall's whitespace-separated ``.cand`` text (no header line, as heimdall writes it)."""
    lines = []
    for c in cands:
        filt = int(np.log2(max(c.width_samples, 1)))
        lines.append(
            f"{c.snr:.6g}\t{c.sample}\t{c.time_s:.9g}\t{filt}\t{c.dm_index}\t{c.dm:.6g}\t{c.members}\t"
            f"{c.begin_sample}\t{c.end_sample}"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def rank_key(c: Candidate) -> tuple[bool, float, float]:
    """The order of :func:`ranked`: by probability when classified, then by S/N."""
    return (math.isnan(c.prob), -c.prob if not math.isnan(c.prob) else 0.0, -c.snr)


def ranked(cands: Sequence[Candidate]) -> list[Candidate]:
    """Most likely real first when classified (by probability, then S/N), else brightest first."""
    return sorted(cands, key=rank_key)


def write_candidates(
    out_dir: Path, cands: Sequence[Candidate], stem: str = "candidates"
) -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.cand`` atomically, in :func:`ranked` order."""
    ordered = ranked(cands)
    return (
        atomic_write_text(out_dir / f"{stem}.csv", to_csv(ordered)),
        atomic_write_text(out_dir / f"{stem}.cand", to_cand(ordered)),
    )


#: Columns that files written before them lack, and what they read as there.
OPTIONAL = {"dm_err": math.nan, "prob": math.nan}


def read_candidates(path: str | Path) -> list[Candidate]:
    """Read a ``candidates.csv`` written by :func:`write_candidates`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CudalabError(f"{p}: {exc.strerror}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    types = {f.name: f.type for f in fields(Candidate)}
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            values: dict[str, Any] = {
                k: int(row[k]) if types[k] == "int" else float(row[k])
                for k in CSV_COLUMNS
                if k not in OPTIONAL or k in row
            }
            values |= {k: v for k, v in OPTIONAL.items() if k not in row}
            out.append(Candidate(**values))
        except (KeyError, ValueError) as exc:
            raise CudalabError(f"{p}: line {i}: bad candidate row ({exc})") from None
    return out
