"""RFI mitigation: zero-DM subtraction, robust channel masking, and spectral kurtosis.

Interference differs from astrophysical signals in where it sits: broadband impulses arrive in every
channel at once (DM 0), narrowband carriers sit in a few channels all the time, and intermittent
carriers switch on and off. Each has its own test here; every test returns a channel mask or a
cleaned array, and the masks are saved with the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

#: MAD -> standard deviation for Gaussian data (1 / Phi^-1(3/4)).
MAD_TO_STD = 1.4826

#: Per-row robust statistics (median, MAD) use at most this many evenly spaced samples of a row
#: (:func:`stats_step`). A noise level from 65,536 samples is within 0.5 % (1 sigma) of the whole
#: row's, and a full-row median on a GPU reads the row about 16 times (radix select): this keeps the
#: statistics a small part of the work whatever the block's length.
STATS_SAMPLES = 1 << 16

#: Channels per pass where per-channel statistics need block-sized temporaries (medians, powers): the
#: temporaries are this many rows, not the block (4096 channels x 0.4 M samples is 7 GB in float32).
CHANNEL_CHUNK = 256


#: Samples beyond this many sigmas of the centre are left out of :func:`robust_location_scale`'s
#: clipped mean and standard deviation (pulses, interference); the scale is then corrected for the
#: Gaussian samples the clip removes (:data:`CLIP_STD_FACTOR`).
CLIP_SIGMAS = 3.5

#: The standard deviation of a unit Gaussian truncated at +-CLIP_SIGMAS:
#: sqrt(1 - 2 c phi(c) / (2 Phi(c) - 1)) = 0.99694 at c = 3.5.
CLIP_STD_FACTOR = math.sqrt(
    1
    - 2
    * CLIP_SIGMAS
    * math.exp(-0.5 * CLIP_SIGMAS**2)
    / math.sqrt(2 * math.pi)
    / math.erf(CLIP_SIGMAS / math.sqrt(2))
)


def row_median(y: torch.Tensor) -> torch.Tensor:
    """Each row's median of ``(rows, n)`` as ``(rows, 1)``, the lower of the middle two for even ``n``
    (torch's convention; NaN for a row holding one). On the CPU by selection (numpy's introselect,
    linear time): as fast as torch's median on idle cores and 2-3x faster beside busy processes (64 x
    5,000 samples: 2.0 against 6.1 ms, two busy processes on two cores); elsewhere torch's."""
    if y.device.type != "cpu" or y.dtype not in (torch.float32, torch.float64) or y.shape[1] == 0:
        return y.median(dim=1, keepdim=True).values
    a = y.detach().numpy()
    k = (a.shape[1] - 1) // 2
    med = np.partition(a, k, axis=1)[:, k : k + 1]
    nan = np.isnan(a).any(axis=1)
    if nan.any():
        med[nan] = np.nan
    return torch.from_numpy(med)


def robust_location_scale(y: torch.Tensor, iterations: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row centre and noise standard deviation of mostly Gaussian samples with outliers: shape
    ``(rows, n)`` -> two ``(rows, 1)``.

    Starts from the median and 1.4826 x MAD (the row's std where the MAD is 0), then ``iterations``
    times (the second is within 0.1 % of the fixed point even from a MAD 12 % off) takes the mean and
    standard deviation of the samples within :data:`CLIP_SIGMAS` of the
    centre, the latter divided by :data:`CLIP_STD_FACTOR`. On continuous data this agrees with the
    MAD; on coarsely quantised data it does not, and it is right where the MAD is not: the median and
    MAD of integer-valued samples are integers or halves, so a series summed from 1- or 2-bit channels
    (the PRESTO tutorial's 64 channels: values 86-120, sigma 3.96) gets a MAD-based sigma of 4.45, 12 %
    too high, and every S/N 12 % too low.
    """
    med = row_median(y)
    scale = row_median((y - med).abs()) * MAD_TO_STD
    # the standard deviation only where the MAD is 0: on the CPU only when a row needs it (it costs a
    # pass); on a GPU always, since asking whether one does would wait for the device
    flat = scale <= 0
    if y.device.type != "cpu" or bool(flat.any()):
        scale = torch.where(flat, y.std(dim=1, keepdim=True), scale)
    scale = scale.clamp_min(1e-12)
    centre = med
    for _ in range(iterations):
        d = y - centre
        inside = d.abs() <= CLIP_SIGMAS * scale
        n = inside.sum(dim=1, keepdim=True).clamp_min(2)
        d = torch.where(inside, d, 0.0)
        shift = d.sum(dim=1, keepdim=True) / n  # the clipped mean, relative to the old centre
        var = (d.square().sum(dim=1, keepdim=True) / n - shift.square()) * (n / (n - 1))
        centre = centre + shift
        scale = (var.clamp_min(0).sqrt() / CLIP_STD_FACTOR).clamp_min(1e-12)
    return centre, scale


def stats_step(n: int) -> int:
    """The stride that leaves at most :data:`STATS_SAMPLES` of ``n`` samples (``row[::step]``)."""
    return max(1, -(-n // STATS_SAMPLES))


def _chunks(data: torch.Tensor) -> list[torch.Tensor]:
    """Views of ``CHANNEL_CHUNK`` rows of ``data``: per-row results are those of the whole."""
    return [data[lo : lo + CHANNEL_CHUNK] for lo in range(0, data.shape[0], CHANNEL_CHUNK)]


def detrend_channels(stat: torch.Tensor, window: int) -> torch.Tensor:
    """Subtract a running median over ``window`` neighbouring channels from a per-channel statistic,
    so that a bandpass's slow shape (band edges, filter roll-off) is not mistaken for interference."""
    n = stat.numel()
    window = max(3, min(window | 1, (n | 1) - 2 if n > 3 else 3))
    if n <= window:
        return stat - stat.median()
    pad = window // 2
    padded = torch.nn.functional.pad(stat[None, None], (pad, pad), mode="replicate")[0, 0]
    return stat - padded.unfold(0, window, 1).median(dim=1).values


def zero_dm(data: torch.Tensor, *, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract each time sample's mean over channels (Eatough et al. 2009): removes DM-0 impulses.

    Shape: ``(nchans, ntime)`` -> same (``data`` itself when ``inplace``), and the ``(ntime,)`` series
    subtracted. A pulse occupies ``nchans x width / sweep`` channels at any instant, so it loses that
    fraction of its power: little for a pulse dispersed over many widths, all of it for one whose sweep
    is shorter than its width.
    """
    mean = data.mean(dim=0)
    return (data.sub_(mean) if inplace else data - mean), mean


def _channel_z(stat: torch.Tensor, window: int) -> torch.Tensor:
    """Robust z-score of a per-channel statistic against its neighbours.

    The scale is the largest of three: the MAD of the detrended statistic; the noise of the statistic,
    from the robust spread of its second differences / sqrt(6) (they cancel a linear trend); and the
    bandpass's typical change per channel, median |first difference|. The last bounds the running
    median's own bias, which on a sloped band moves by one channel's change per outlier in its window.
    (A running median of a smooth monotonic band reproduces most channels exactly, so the MAD alone
    can be 0 and would make every z-score 0, or tiny and flag the neighbours of every outlier.)
    """
    resid = detrend_channels(stat, window)
    scale = (resid - resid.median()).abs().median() * MAD_TO_STD
    if stat.numel() >= 5:
        d1 = stat[1:] - stat[:-1]
        d2 = d1[1:] - d1[:-1]
        scale = torch.maximum(scale, (d2 - d2.median()).abs().median() * MAD_TO_STD / 6**0.5)
        scale = torch.maximum(scale, d1.abs().median())
    return (resid - resid.median()) / scale.clamp_min(1e-12)


def channel_mask_mad(data: torch.Tensor, threshold: float = 5.0, window: int = 33) -> torch.Tensor:
    """Channels whose mean or standard deviation is an outlier among their neighbours.

    Both statistics are detrended across frequency and turned into robust z-scores (``_channel_z``);
    |z| > ``threshold`` in either flags the channel, as does a channel without variance (dead or clipped).
    Returns a bool mask, True = bad.  Shape: ``(nchans,)``.
    """
    mean = data.mean(dim=1)
    std = data.std(dim=1)
    dead = std <= 1e-6 * std.abs().max().clamp_min(1e-30)
    return dead | (_channel_z(mean, window).abs() > threshold) | (_channel_z(std, window).abs() > threshold)


def spectral_kurtosis_mask(data: torch.Tensor, threshold: float = 5.0) -> torch.Tensor:
    """Channels whose samples are distributed unlike the rest of the band: intermittent carriers, bursty RFI.

    The per-channel excess kurtosis of the block (the spectral-kurtosis test of Nita & Gary 2010, in the
    form for already-integrated, offset and scaled filterbank data where the power-domain estimator's d is
    unknown), judged against the band's median kurtosis rather than the Gaussian 0: coarsely quantised
    data (1-4 bits) have a kurtosis far from 0 in *every* channel. The scale is the larger of the Gaussian
    standard error sqrt(24 / M) and the robust spread across channels. A carrier switching on and off
    makes the kurtosis strongly positive; a steady sinusoid, negative.
    Returns a bool mask, True = bad.  Shape: ``(nchans,)``.
    """
    m = data.shape[1]
    if m < 16:
        return torch.zeros(data.shape[0], dtype=torch.bool, device=data.device)
    var_parts, m4_parts = [], []
    for rows in _chunks(data):
        x = rows - rows.mean(dim=1, keepdim=True)
        var_parts.append((x * x).mean(dim=1))
        m4_parts.append((x**4).mean(dim=1))
    var, m4 = torch.cat(var_parts), torch.cat(m4_parts)
    live = var > 0
    if not bool(live.any()):
        return torch.zeros(data.shape[0], dtype=torch.bool, device=data.device)
    kurt = m4 / var.clamp_min(1e-30) ** 2 - 3.0
    ref = kurt[live].median()
    spread = (kurt[live] - ref).abs().median() * MAD_TO_STD
    scale = torch.maximum(spread, torch.tensor((24.0 / m) ** 0.5, device=data.device))
    return ((kurt - ref).abs() > threshold * scale) & live


#: A region of outlying cells spanning more than this fraction of the live channels is not masked
#: in time and frequency: broadband impulses are zero-DM's (which spares low DMs, where a pulse's
#: sweep is as short as an impulse), and a dispersed pulse bright enough to make outlying cells
#: crosses the band as one such region.
IMPULSE_MAX_BAND_FRACTION = 0.25

#: Regions narrower than this many live channels are not masked: a dispersed pulse bright enough to
#: make outlying cells, whose sweep crosses more than a cell per channel, makes one-channel regions
#: (channels at steps in time, not touching); a slower sweep makes one region across the band.
IMPULSE_MIN_CHANNELS = 2

#: Outlying cells are one region when in neighbouring channels within this many cells in time (and
#: one more): a dispersed pulse steps from channel to channel by less than that (one region across
#: the band) or by more (one-channel regions); neither is narrowband.
IMPULSE_LINK_CELLS = 4

#: Cells per channel below which a scale is not tested (its robust statistics need that many).
IMPULSE_MIN_CELLS = 16


def impulse_mask(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    threshold: float,
    scales: list[int],
    max_band_fraction: float = IMPULSE_MAX_BAND_FRACTION,
) -> list[tuple[int, int, int, int]]:
    """Narrowband interference in time and frequency: what rfifind's interval-by-channel statistics
    find, in cells of a channel over each of ``scales`` samples.

    ``x`` is the normalised block ``(nchans, ntime)``; ``mask`` the channels already masked. At each
    scale, the cell means of every live channel, less each cell's median over channels (broadband
    impulses are zero-DM's), are turned into robust z-scores against that channel's other cells
    (:func:`robust_location_scale`), and cells beyond ``threshold`` are grouped into connected
    regions (among live channels: a masked carrier does not cut a region in two). A region spanning
    at least :data:`IMPULSE_MIN_CHANNELS` and at most ``max_band_fraction`` of the live channels,
    with an instant outlying in every one of them (not dispersed), is interference: an impulse in
    tens of channels for tens of milliseconds, which dedispersion would spread into a track of
    candidates along its own sweep, and which channel masks (whole channels) and zero-DM (broadband)
    miss. Other regions are left alone (see
    :data:`IMPULSE_MAX_BAND_FRACTION` and :data:`IMPULSE_MIN_CHANNELS`). A dispersed pulse makes
    outlying cells only where its S/N per channel exceeds ``threshold`` (an S/N above ``threshold x
    sqrt(live channels)``: 190 on 1024 channels), and then as one region across the band or as
    one-channel regions. What is missed: a narrowband impulse in a single channel, and a band-limited
    pulse of that brightness that spans under a quarter of the band with a sweep slower than a cell
    per channel (it is masked).

    The outlying cells of each such region are set to 0 (the channel's centre) in place; returned are
    the regions' bounding boxes, ``(first channel, stop channel, first sample, stop sample)``. Costs
    one reduction of the block per scale and a host copy of the cell grid (``nchans x ntime / scale``
    booleans) where a cell is outlying.
    """
    from scipy import ndimage

    nchans, n = x.shape
    live = ~mask
    nlive = int(live.sum())
    if nlive == 0 or threshold <= 0:
        return []
    # Regions are found among the live channels only: a masked carrier must not cut a broadband
    # impulse into two "narrowband" halves.
    live_idx = torch.nonzero(live)[:, 0]
    live_np = live_idx.cpu().numpy()
    found: list[tuple[int, NDArray[np.bool_], int, int]] = []  # (scale, cells, first cell, first live row)
    for scale in scales:
        # Cells overlap by half: a pulse that a cell boundary would split is whole in the cell offset
        # from it, so a dispersed pulse's outlying cells do not come and go from channel to channel.
        # The grid is of half-cells, each outlying when either cell holding it is.
        half = max(1, scale // 2)
        nhalf = n // half
        if nhalf - 1 < IMPULSE_MIN_CELLS:
            continue
        h = x[:, : nhalf * half].reshape(nchans, nhalf, half).mean(dim=2)[live_idx]
        m = (h[:, :-1] + h[:, 1:]) / 2  # cell i: half-cells i and i + 1
        # less each cell's median over channels: a broadband impulse (zero-DM's) leaves no outlier
        # here, so none of its channels is cut out of it one cell at a time
        m = m - m.median(dim=0, keepdim=True).values
        centre, spread = robust_location_scale(m)
        out_cell = ((m - centre) / spread).abs() > threshold
        if not bool(out_cell.any()):
            continue
        flag = torch.zeros(nlive, nhalf, dtype=torch.bool, device=x.device)
        flag[:, :-1] |= out_cell
        flag[:, 1:] |= out_cell
        grid = flag.cpu().numpy()
        # widened by IMPULSE_LINK_CELLS // 2 each way in time and one channel each way in frequency,
        # then 8-connected: cells within IMPULSE_LINK_CELLS + 1 in time and three channels join (a
        # channel or two where noise kept a bright pulse under the threshold does not cut it)
        wide = ndimage.binary_dilation(
            grid, structure=np.ones((3, IMPULSE_LINK_CELLS // 2 * 2 + 1), dtype=bool)
        )
        labels, _ = ndimage.label(wide, structure=np.ones((3, 3), dtype=bool))
        for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            cells = (labels[rows, cols] == k) & grid[rows, cols]
            used = np.flatnonzero(cells.any(axis=1))
            if not IMPULSE_MIN_CHANNELS <= used[-1] - used[0] + 1 <= max_band_fraction * nlive:
                continue
            # simultaneous: some instant is outlying in every channel of it (an undispersed impulse);
            # a dispersed pulse's outlying cells move on from channel to channel
            on = cells[used]
            first = on.argmax(axis=1)
            last = on.shape[1] - 1 - on[:, ::-1].argmax(axis=1)
            if first.max() > last.min():
                continue
            span = np.flatnonzero(on.any(axis=0))  # trimmed to the outlying cells (not the widening)
            found.append(
                (
                    half,
                    cells[used[0] : used[-1] + 1, span[0] : span[-1] + 1],
                    cols.start + span[0],
                    rows.start + used[0],
                )
            )
    regions = []
    for scale, cells, t0, r0 in found:
        t1 = t0 + cells.shape[1]
        chans = torch.from_numpy(live_np[r0 : r0 + cells.shape[0]]).to(x.device)
        block = x[chans, t0 * scale : t1 * scale].view(len(chans), t1 - t0, scale)  # a copy (fancy index)
        block.masked_fill_(torch.from_numpy(cells).to(x.device)[:, :, None], 0.0)
        x[chans, t0 * scale : t1 * scale] = block.view(len(chans), -1)
        regions.append((int(chans[0]), int(chans[-1]) + 1, int(t0 * scale), int(t1 * scale)))
    return regions


@dataclass(frozen=True, slots=True)
class RfiConfig:
    """Which tests run, and their thresholds (robust sigmas).

    Attributes
    ----------
    zero_dm
        Subtract the DM-0 time series (broadband impulses) from trials whose dispersion sweep across
        the band is at least ``zero_dm_min_sweep_s``.
    zero_dm_min_sweep_s
        Trials of a shorter sweep are searched without zero-DM: it would subtract a pulse as wide as
        their sweep with the DM-0 series (a low DM on a narrow band), and it empties the DM-0 trial
        itself, whose collapsed noise then makes residuals look significant. 30 ms, chosen by
        ``benchmarks/radio_zero_dm.py``: it keeps the tutorial pulsar's and low-DM bursts' pulses as
        zero-DM off does, and removes most broadband impulses' fragments as zero-DM on does (what
        stays lies at DMs whose sweep is under 30 ms).
    mad_threshold
        Channel mean/std outlier threshold; 0 disables.
    sk_threshold
        Spectral-kurtosis threshold in units of its Gaussian standard error; 0 disables.
    window
        Channels in the running median that detrends the bandpass.
    impulse_threshold
        Time-frequency cells (a channel over ``impulse_scales_s``) whose mean is an outlier by this
        many robust sigmas are set to the channel's centre when they form narrowband interference
        (:func:`impulse_mask`); 0 disables.
    impulse_scales_s
        The cells' durations.
    """

    zero_dm: bool = True
    zero_dm_min_sweep_s: float = 0.03
    mad_threshold: float = 5.0
    sk_threshold: float = 8.0
    window: int = 33
    impulse_threshold: float = 6.0
    impulse_scales_s: tuple[float, ...] = (0.002, 0.008, 0.032)

    def __post_init__(self) -> None:
        if (
            self.mad_threshold < 0
            or self.sk_threshold < 0
            or self.zero_dm_min_sweep_s < 0
            or self.impulse_threshold < 0
            or any(t <= 0 for t in self.impulse_scales_s)
        ):
            raise ValueError(
                "thresholds and zero_dm_min_sweep_s must be >= 0 (0 disables a test), impulse scales > 0"
            )
        if self.window < 3:
            raise ValueError(f"window must be >= 3 channels, not {self.window}")


#: A channel is masked outright when more than this fraction of its samples in a block are not finite.
DEAD_FRACTION = 0.5


class Cleaned(NamedTuple):
    """What :func:`clean_block` returns."""

    data: torch.Tensor
    """``(nchans, ntime)``: each channel at zero centre and unit robust std; masked channels and
    non-finite samples 0."""
    mask: torch.Tensor
    """``(nchans,)`` bool, True = masked."""
    nonfinite: int
    """Samples that were NaN or infinite (set to their channel's median, so they add nothing)."""
    zero_dm: torch.Tensor | None
    """``(ntime,)``: what zero-DM subtracted from every live channel at each sample (None when off):
    adding it back gives the block as cleaned without zero-DM."""
    impulses: list[tuple[int, int, int, int]]
    """Narrowband interference masked in time and frequency (:func:`impulse_mask`): ``(first channel,
    stop channel, first sample, stop sample)`` of each region, samples counted in this block."""


def fill_nonfinite(x: torch.Tensor, counted: tuple[int, int] | None = None) -> tuple[int, torch.Tensor]:
    """Replace NaN and infinite samples of ``x`` (in place) by their channel's median of finite ones.

    Returns how many there were among the samples ``counted[0]:counted[1]`` of each channel (all by
    default; a search counts a block's new samples only, so each is counted once) and the channels more
    than :data:`DEAD_FRACTION` of whose samples were (``(nchans,)`` bool: masked by the caller). The
    count costs one device sync per call: the statistics that follow would all be NaN otherwise.
    Temporaries: :data:`CHANNEL_CHUNK` rows.
    """
    counts = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    head = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for lo, rows in zip(range(0, x.shape[0], CHANNEL_CHUNK), _chunks(x), strict=True):
        bad = ~torch.isfinite(rows)
        counts[lo : lo + rows.shape[0]] = bad.sum(dim=1)
        window = bad if counted is None else bad[:, counted[0] : counted[1]]
        head[lo : lo + rows.shape[0]] = window.sum(dim=1)
    any_bad, total = (int(v) for v in torch.stack([counts.sum(), head.sum()]).tolist())  # the one sync
    if any_bad == 0:  # almost every block
        return 0, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    step = stats_step(x.shape[1])
    for rows in _chunks(x):
        bad = ~torch.isfinite(rows)
        rows.masked_fill_(bad, float("nan"))
        med = rows[:, ::step].nanmedian(dim=1, keepdim=True).values
        med = torch.nan_to_num(med, nan=0.0)  # a channel with no finite sample: 0
        rows.copy_(torch.where(bad, med, rows))
    return total, counts > DEAD_FRACTION * x.shape[1]


def clean_block(
    data: torch.Tensor,
    cfg: RfiConfig,
    *,
    tsamp_s: float,
    inplace: bool = False,
    counted: tuple[int, int] | None = None,
) -> Cleaned:
    """Normalise each channel, mask bad channels and narrowband impulses, subtract zero-DM.

    ``tsamp_s``, the sampling time, sets the time-frequency cells of :func:`impulse_mask`.

    Order matters: the mean/std outlier test runs on the raw data (normalising would erase a carrier's
    offset); the time-frequency test runs on the normalised data, before zero-DM (which would spread a
    narrowband impulse's mean over every channel); the kurtosis test runs after zero-DM subtraction (a
    broadband impulse has high kurtosis in *every* channel and would otherwise mask the whole band);
    the final zero-DM series is recomputed from the unmasked channels only.

    NaN and infinite samples (a corrupt float file, a flagged PSRFITS row) are first set to their
    channel's median (:func:`fill_nonfinite`), which normalises to about 0: the rest of the block is
    cleaned and searched as if they were not there, and they are counted. A channel mostly
    non-finite is masked.

    Returns :class:`Cleaned`: the data, each channel at zero centre and unit robust std
    (:func:`robust_location_scale` of at most :data:`STATS_SAMPLES` evenly spaced samples; so every channel weighs the same
    whatever its gain), masked channels set to 0; the bool mask ``(nchans,)``, True = masked; and the
    count of non-finite samples (among the columns ``counted``, as :func:`fill_nonfinite` counts them).

    Memory: the block itself (``inplace=True`` cleans it where it lies: the search's own blocks) or one
    copy, plus temporaries of :data:`CHANNEL_CHUNK` rows.
    """
    x = data if inplace else data.clone()
    nonfinite, dead = fill_nonfinite(x, counted)
    mask = dead
    if cfg.mad_threshold > 0:
        mask |= channel_mask_mad(x, cfg.mad_threshold, cfg.window)
    step = stats_step(x.shape[1])
    for rows in _chunks(x):
        # robust statistics from at most STATS_SAMPLES per channel; a clipped mean and std, not the
        # median and MAD, which are quantised on data of few bits (robust_location_scale)
        med, scale = robust_location_scale(rows[:, ::step])
        rows.sub_(med).div_(scale.clamp_min(1e-6))
    impulses: list[tuple[int, int, int, int]] = []
    if cfg.impulse_threshold > 0:
        scales = sorted({max(4, round(s / tsamp_s)) for s in cfg.impulse_scales_s})
        impulses = impulse_mask(x, mask, threshold=cfg.impulse_threshold, scales=scales)
    subtracted = None
    if cfg.zero_dm:
        x, subtracted = zero_dm(x, inplace=True)
    if cfg.sk_threshold > 0:
        mask |= spectral_kurtosis_mask(x, cfg.sk_threshold)
    x[mask] = 0.0
    if cfg.zero_dm and bool(mask.any()):
        good = (~mask).sum().clamp_min(1)
        again = x.sum(dim=0) / good
        x.sub_(again)
        x[mask] = 0.0
        assert subtracted is not None
        subtracted += again
    return Cleaned(x, mask, nonfinite, subtracted, impulses)
