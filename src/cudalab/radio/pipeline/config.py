"""The search's one config: every dial of ``cudalab radio search``, typed, with its unit.

Read and overridden like every config (:mod:`cudalab.runs.config`): ``--config FILE``, ``--set
dm_max=2000``, ``--set rfi.zero_dm=false``; the command's flags (``--dm-max``, ``--snr``, ...) map onto
these fields and add no defaults of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cudalab.env.device import Device
from cudalab.radio.constants import DM_CONSTANT
from cudalab.radio.kernels import Kernel
from cudalab.radio.rfi import RfiConfig
from cudalab.runs.config import check_finite, check_literals

#: ``subbands=-1`` on a CPU: this many sub-bands for files of at least AUTO_SUBBAND_MIN_CHANNELS.
AUTO_SUBBANDS = 32
AUTO_SUBBAND_MIN_CHANNELS = 256


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Every dial of the search.  Presets: :func:`default_config`.

    Attributes
    ----------
    dm_min, dm_max
        DM range, pc cm^-3.
    dm_max_auto
        Choose ``dm_max`` from the file instead: the largest DM whose dispersion sweep leaves half
        the file searchable (at most 10,000; ``--dm-max auto``).
    dm_tolerance
        heimdall's DM-grid tolerance (1.25).
    pulse_width_us
        Intrinsic width assumed for the DM grid, microseconds (heimdall: 40).
    snr_threshold
        Boxcar S/N above which a sample is a giant.
    max_width_s
        Widest boxcar, seconds (rounded down to the nearest width searched: powers of two samples and
        three times them).
    baseline_s
        Running-median window for each DM trial's baseline, seconds.
    scrunch, scrunch_tolerance, max_scrunch
        Adaptive time scrunching (see :mod:`cudalab.radio.dedispersion.plan`).
    subbands, subband_tolerance
        0: direct dedispersion. N: two stages with N sub-bands
        (:mod:`cudalab.radio.dedispersion.subband`), each trial's delays within ``subband_tolerance + 1`` (scrunched) samples of its own.
        -1 (the default): :data:`AUTO_SUBBANDS` on a CPU for files of at least
        :data:`AUTO_SUBBAND_MIN_CHANNELS` channels (as PRESTO's prepsubband: on a 1024-channel file to DM
        1000, 18 s instead of 42 s on 2 cores), direct otherwise (the GPU's kernel is fast enough
        direct; few channels save few adds).
    kernel
        Dedispersion kernel: ``auto`` (Triton on a GPU, the torch reference on a CPU), ``torch`` or
        ``triton`` (:mod:`cudalab.radio.kernels`).
    gulp
        Native samples advanced per block, at least twice the overlap (memory: :class:`~cudalab.radio.pipeline.memory.MemoryBound`).
    rfi
        Interference mitigation.
    time_tol, dm_index_tol, width_tol
        Friends-of-friends separations: boxcar widths, DM trials, factors of two in width (less than).
    max_giant_rate
        Giants kept per second of data at most, the brightest in each second
        (:func:`~cudalab.radio.single_pulse.cluster.cap_giants`; 0: all). What is set aside is
        counted in search.json and warned of.
    refine
        Refine the DM of the brightest N candidates from the data
        (:mod:`cudalab.radio.single_pulse.refine`): at the S/N peak between the neighbouring trials, or, for a pulse wide enough that its S/N is flat
        there, from its arrival times across the band.
    cutouts
        FETCH cutouts for the brightest N candidates.
    report_top
        Candidates shown with plots in the report.
    classify
        Score every candidate with a CNN (:mod:`cudalab.radio.classify`) and rank by its probability:
        ``auto`` when a classifier is at hand (``classifier``, or the weights shipped in the package),
        ``on`` (an error without one) or ``off``.
    classifier
        A classifier file (``cudalab radio export-classifier``); empty: the shipped one.
    min_prob
        Keep only candidates the classifier scores at least this likely real; -1: its own operating
        threshold (chosen to keep 99 % of real candidates of S/N >= 7 on its validation set).
    device
        ``auto`` (GPU when usable), ``cpu`` or ``cuda``.
    k_dm
        Dispersion constant, s MHz^2 pc^-1 cm^3.
    """

    dm_min: float = 0.0
    dm_max: float = 1000.0
    dm_max_auto: bool = False
    dm_tolerance: float = 1.25
    pulse_width_us: float = 40.0
    snr_threshold: float = 6.0
    max_width_s: float = 0.05
    baseline_s: float = 2.0
    scrunch: bool = True
    scrunch_tolerance: float = 1.15
    max_scrunch: int = 16
    subbands: int = -1
    subband_tolerance: int = 1
    kernel: Kernel = "auto"
    gulp: int = 1 << 15
    rfi: RfiConfig = field(default_factory=RfiConfig)
    time_tol: float = 3.0
    dm_index_tol: int = 20
    width_tol: int = 3
    max_giant_rate: float = 20_000.0
    refine: int = 50
    cutouts: int = 20
    report_top: int = 8
    classify: Literal["auto", "on", "off"] = "auto"
    classifier: str = ""
    min_prob: float = 0.0
    device: Device = "auto"
    k_dm: float = DM_CONSTANT

    def __post_init__(self) -> None:
        check_finite(self)
        check_literals(self)
        if not 0 <= self.dm_min <= self.dm_max:
            raise ValueError(f"need 0 <= dm_min <= dm_max, got {self.dm_min}, {self.dm_max}")
        if self.snr_threshold <= 0 or self.max_width_s <= 0 or self.baseline_s <= 0:
            raise ValueError("snr_threshold, max_width_s and baseline_s must be > 0")
        if self.subbands < -1 or self.subband_tolerance < 0:
            raise ValueError("subbands must be >= -1 (-1: automatic) and subband_tolerance >= 0")
        if self.gulp < 256:
            raise ValueError(f"gulp must be >= 256 samples, not {self.gulp}")
        if self.dm_tolerance <= 1 or self.scrunch_tolerance < 1:
            raise ValueError("dm_tolerance must be > 1 and scrunch_tolerance >= 1")
        if self.pulse_width_us <= 0 or self.k_dm <= 0 or self.time_tol <= 0:
            raise ValueError("pulse_width_us, k_dm and time_tol must be > 0")
        if self.max_giant_rate < 0:
            raise ValueError(f"max_giant_rate must be >= 0 (0: no cap), not {self.max_giant_rate}")
        if self.max_scrunch < 1 or self.dm_index_tol < 0 or self.width_tol < 0:
            raise ValueError("max_scrunch must be >= 1, dm_index_tol and width_tol >= 0")
        if self.cutouts < 0 or self.report_top < 0 or self.refine < 0:
            raise ValueError("refine, cutouts and report_top must be >= 0")
        if not (self.min_prob == -1.0 or 0.0 <= self.min_prob <= 1.0):
            raise ValueError(
                f"min_prob must lie in [0, 1] (or -1: the classifier's threshold), not {self.min_prob}"
            )


def default_config() -> SearchConfig:
    """DM 0-1000, S/N >= 6, boxcars to 50 ms: a general FRB and pulsar single-pulse search."""
    return SearchConfig()
