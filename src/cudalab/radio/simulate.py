"""Synthetic observations with a truth table: bursts, pulsars and RFI on Gaussian or real noise.

Every signal is built where it lands (channel by channel, a few hundred samples each) and added to
the noise as the file is written block by block, so memory stays bounded whatever the length. Burst
arrival times refer to the centre of the highest-frequency channel, like the search's; both use
:data:`~cudalab.radio.constants.DM_CONSTANT` (or the same ``k_dm``).

A burst's ``snr`` is its matched-filter S/N in the perfectly dedispersed time series: the most any
boxcar search can recover (a boxcar of the best width recovers about 90 % of it for a Gaussian pulse).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf

from cudalab._io import atomic_open, atomic_write_json, atomic_write_text
from cudalab.radio.constants import DM_CONSTANT, dispersion_delay_s, smearing_s
from cudalab.radio.io.header import Header
from cudalab.radio.io.sigproc import encode_header, encode_samples

#: FWHM of a Gaussian in units of its sigma: 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Scattering time scales as f^-4 (Kolmogorov turbulence gives -4.4; -4 is the usual simple model).
SCATTER_INDEX = -4.0
#: Fine time steps per sample used to integrate a pulse over each sample.
OVERSAMPLE = 8


@dataclass(frozen=True, kw_only=True, slots=True)
class Burst:
    """A dispersed pulse.

    Attributes
    ----------
    time_s
        Arrival of the pulse's peak at the centre of the highest channel, seconds from the start.
    dm
        Dispersion measure, pc cm^-3.
    snr
        Target matched-filter S/N after perfect dedispersion.
    width_s
        Intrinsic FWHM, seconds (before smearing and scattering).
    scatter_s
        Scattering time at 1 GHz, seconds; scales as f^-4.
    spectral_index
        Flux ~ f^index across the band.
    band_mhz
        ``(centre, fwhm)`` of a Gaussian spectral envelope (band-limited bursts), or None.
    """

    time_s: float
    dm: float
    snr: float
    width_s: float = 1e-3
    scatter_s: float = 0.0
    spectral_index: float = 0.0
    band_mhz: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.dm < 0 or self.snr <= 0 or self.width_s <= 0 or self.scatter_s < 0:
            raise ValueError(f"burst needs dm >= 0, snr > 0, width_s > 0, scatter_s >= 0: {self}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Pulsar:
    """A periodic source: one :class:`Burst` per rotation, amplitudes jittered log-normally.

    Attributes
    ----------
    period_s, dm, width_s
        Rotation period (s), dispersion measure, pulse FWHM (s).
    snr
        Mean single-pulse S/N.
    first_s
        Arrival of the first pulse at the top channel, seconds.
    jitter
        Standard deviation of the natural log of the pulse amplitudes (0: all equal).
    """

    period_s: float
    dm: float
    snr: float
    width_s: float = 5e-3
    first_s: float = 0.0
    jitter: float = 0.3


@dataclass(frozen=True, kw_only=True, slots=True)
class Rfi:
    """Interference.

    Attributes
    ----------
    kind
        ``impulse`` (broadband, zero-DM), ``narrowband`` (an impulse in ``channels`` only),
        ``carrier`` (narrowband, always on), ``intermittent`` (narrowband, switching on and off) or
        ``drifting`` (a narrow track, ``drift_channels`` wide, sweeping from the first channel of
        ``channels`` to the last over ``width_s``, as a chirped radar or a satellite's downlink does: a
        track going down in frequency mimics dispersion, though linear in frequency, not in f^-2).
    amplitude
        Per-channel amplitude in noise standard deviations.
    time_s, width_s
        Impulse, narrowband, drifting: start and duration. Intermittent: mean on-time (``width_s``).
    channels
        Narrowband kinds: ``(first, stop)`` channel range.
    duty
        Intermittent: fraction of time on.
    drift_channels
        Drifting: the track's width in channels.
    """

    kind: Literal["impulse", "narrowband", "carrier", "intermittent", "drifting"]
    amplitude: float
    time_s: float = 0.0
    width_s: float = 1e-3
    channels: tuple[int, int] = (0, 1)
    duty: float = 0.2
    drift_channels: int = 2


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """An observation to synthesise.  Presets: :func:`demo_config`.

    Attributes
    ----------
    nchans, tsamp_s, fch1_mhz, foff_mhz, duration_s, nbits
        The receiver (ignored where a ``background`` file supplies them, except ``duration_s``).
    level, sigma
        Mean and standard deviation of the quantised noise (8-bit: 128 and 16 leave 8 sigma each way).
    seed
        Everything random derives from it: the same seed writes the same file.
    bursts, pulsars, rfi
        The signals.
    background
        A SIGPROC or PSRFITS file whose real noise replaces the Gaussian one (tiled when too short).
    k_dm
        Dispersion constant.
    source_name
        Written to the header.
    """

    nchans: int = 1024
    tsamp_s: float = 128e-6
    fch1_mhz: float = 1500.0
    foff_mhz: float = -300.0 / 1024
    duration_s: float = 13.0
    nbits: int = 8
    level: float = 128.0
    sigma: float = 16.0
    seed: int = 0
    bursts: tuple[Burst, ...] = ()
    pulsars: tuple[Pulsar, ...] = ()
    rfi: tuple[Rfi, ...] = ()
    background: str | None = None
    k_dm: float = DM_CONSTANT
    source_name: str = "cudalab-sim"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nchans < 1 or self.tsamp_s <= 0 or self.duration_s <= 0:
            raise ValueError("nchans >= 1, tsamp_s > 0 and duration_s > 0 are required")
        if self.nbits not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"nbits must be one of 1, 2, 4, 8, 16, 32, not {self.nbits}")
        for r in self.rfi:
            c0, c1 = r.channels
            if r.kind != "impulse" and not 0 <= c0 < c1 <= self.nchans:
                raise ValueError(f"RFI channels {c0}-{c1} lie outside the {self.nchans} channels")

    def with_nchans(self, nchans: int) -> SimConfig:
        """The same band cut into ``nchans`` channels; RFI keeps its place in the band (its channel
        range scaled, at least one channel wide)."""
        if nchans < 1:
            raise ValueError(f"nchans must be >= 1, not {nchans}")
        scale = nchans / self.nchans

        def scaled(r: Rfi) -> Rfi:
            c0 = min(int(r.channels[0] * scale), nchans - 1)
            return replace(r, channels=(c0, max(c0 + 1, min(nchans, round(r.channels[1] * scale)))))

        return replace(
            self, nchans=nchans, foff_mhz=self.foff_mhz / scale, rfi=tuple(scaled(r) for r in self.rfi)
        )


# --------------------------------------------------------------------------------------------------
# signal construction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Patch:
    """A signal's values in a rectangle of the (chan, time) plane, in noise-sigma units."""

    chan0: int
    t0: int
    values: NDArray[np.float32]  # (nchan_patch, nt_patch)


def _channel_profiles(
    t_arrival: NDArray[np.float64],
    sigma_t: float,
    smear: NDArray[np.float64],
    tau: NDArray[np.float64],
    tsamp: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Every channel's pulse integrated over samples: (first samples, unit-area profiles), each
    profile zero-padded to the longest.

    Channel ``c``'s pulse is a Gaussian of ``sigma_t`` arriving at ``t_arrival[c]``, spread by a
    boxcar of ``smear[c]`` (dispersion within the channel) and an exponential of ``tau[c]``
    (scattering), all in seconds, integrated over ``OVERSAMPLE`` fine steps per sample. All channels
    in one array operation (a pulsar's thousands of pulses are each one), equal to rounding to a
    channel-by-channel reference (tested)."""
    half = 5 * sigma_t + smear / 2
    s0 = np.floor((t_arrival - half - tsamp) / tsamp).astype(np.int64)
    s1 = np.ceil((t_arrival + half + 8 * tau + tsamp) / tsamp).astype(np.int64) + 1
    n = s1 - s0
    dt = tsamp / OVERSAMPLE
    fine_t = (np.arange(int(n.max()) * OVERSAMPLE) + 0.5) / OVERSAMPLE
    x = (s0[:, None] + fine_t[None, :]) * tsamp - t_arrival[:, None]
    fine = np.empty_like(x)
    smeared = smear > dt
    if smeared.any():
        root2 = math.sqrt(2) * sigma_t
        half_smear = smear[smeared, None] / 2
        xs = x[smeared]
        fine[smeared] = (
            0.5 * (erf((xs + half_smear) / root2) - erf((xs - half_smear) / root2)) / smear[smeared, None]
        )
    if (~smeared).any():
        fine[~smeared] = np.exp(-0.5 * (x[~smeared] / sigma_t) ** 2) / (sigma_t * math.sqrt(2 * math.pi))
    for c in np.flatnonzero(tau > dt / 4):  # scattered channels: each its own exponential
        k = np.exp(-np.arange(math.ceil(8 * tau[c] / dt) + 1) * dt / tau[c])
        fine[c] = np.convolve(fine[c], k / k.sum())[: fine.shape[1]]
    prof = fine.reshape(len(s0), -1, OVERSAMPLE).mean(axis=2)
    prof[np.arange(prof.shape[1])[None, :] >= n[:, None]] = 0.0  # each channel's own window only
    total = prof.sum(axis=1, keepdims=True)
    return s0, np.divide(prof, total, out=prof, where=total > 0)


def burst_patch(
    b: Burst, header: Header, k_dm: float, noise_std: NDArray[np.float64] | None = None
) -> _Patch:
    """The burst as a patch scaled to its target S/N, in units of each channel's noise: unit std, or
    ``noise_std`` (a real background's). The S/N is that of the dedispersed sum of the channels each
    normalised to unit noise (as every search normalises them), so it does not depend on the
    background's levels; channels without noise (``noise_std`` 0: dead, flagged) carry no signal
    and do not count."""
    freqs = header.freqs_mhz
    tsamp = header.tsamp_s
    delays = dispersion_delay_s(b.dm, freqs, header.fmax_mhz, k_dm)
    smear = smearing_s(b.dm, header.foff_mhz, freqs, k_dm)
    tau = b.scatter_s * (freqs / 1000.0) ** SCATTER_INDEX
    spectrum = (freqs / freqs.mean()) ** b.spectral_index
    if b.band_mhz is not None:
        centre, fwhm = b.band_mhz
        spectrum = spectrum * np.exp(-0.5 * ((freqs - centre) / (fwhm / FWHM_PER_SIGMA)) ** 2)
    sigma_t = b.width_s / FWHM_PER_SIGMA
    s0, profs = _channel_profiles(b.time_s + delays, sigma_t, smear, tau, tsamp)
    t0 = int(s0.min())
    cols = (s0 - t0)[:, None] + np.arange(profs.shape[1])[None, :]
    width = int(cols[:, -1].max()) + 1
    values = spectrum[:, None] * profs
    # Matched-filter S/N of the dedispersed series for unit amplitude: shift each channel back by its
    # (rounded) delay, sum, and compare with the summed noise, sqrt(channels) in noise units.
    if noise_std is not None:
        std = np.asarray(noise_std, dtype=np.float64)
        values[std <= 0] = 0.0
    back = cols - np.maximum(np.rint(delays / tsamp).astype(np.int64), 0)[:, None]
    kept = back >= 0
    aligned = np.bincount(back[kept], weights=values[kept], minlength=width)
    live = header.nchans if noise_std is None else int(np.count_nonzero(std > 0))
    unit_snr = math.sqrt(float((aligned**2).sum())) / math.sqrt(max(live, 1))
    scale = b.snr / unit_snr if unit_snr > 0 else 0.0
    if noise_std is not None:  # from noise units to the background's own
        values *= std[:, None]
    vals = np.zeros((header.nchans, width), dtype=np.float32)
    vals[np.arange(header.nchans)[:, None], cols] = (values * scale).astype(np.float32)
    return _Patch(0, t0, vals)


def burst_span(b: Burst, header: Header, k_dm: float) -> tuple[int, int]:
    """Samples ``[first, stop)`` that hold all of :func:`burst_patch`'s patch of ``b`` (a bound,
    found without building it)."""
    freqs = header.freqs_mhz
    delays = dispersion_delay_s(b.dm, freqs, header.fmax_mhz, k_dm)
    smear = float(np.max(smearing_s(b.dm, header.foff_mhz, freqs, k_dm)))
    tau = b.scatter_s * float(np.max((freqs / 1000.0) ** SCATTER_INDEX))
    reach = 5 * b.width_s / FWHM_PER_SIGMA + smear / 2 + header.tsamp_s
    first = math.floor((b.time_s + float(delays.min()) - reach) / header.tsamp_s)
    return first, math.ceil((b.time_s + float(delays.max()) + reach + 8 * tau) / header.tsamp_s) + 2


def pulsar_bursts(p: Pulsar, duration_s: float, rng: np.random.Generator) -> list[Burst]:
    """The single pulses of ``p`` that arrive (at the top channel) within the observation."""
    n = math.floor((duration_s - p.first_s) / p.period_s) + 1
    amps = np.exp(rng.normal(0.0, p.jitter, size=max(n, 0)) - p.jitter**2 / 2)  # mean 1
    return [
        Burst(time_s=p.first_s + k * p.period_s, dm=p.dm, snr=max(float(p.snr * a), 1e-3), width_s=p.width_s)
        for k, a in enumerate(amps)
        if p.first_s + k * p.period_s < duration_s
    ]


def rfi_patches(r: Rfi, header: Header, nsamples: int, rng: np.random.Generator) -> list[_Patch]:
    """Interference as patches (noise-sigma units)."""
    tsamp = header.tsamp_s
    if r.kind == "impulse":
        s0 = round(r.time_s / tsamp)
        n = max(1, round(r.width_s / tsamp))
        return [_Patch(0, s0, np.full((header.nchans, n), r.amplitude, dtype=np.float32))]
    c0, c1 = r.channels
    if not 0 <= c0 < c1 <= header.nchans:
        raise ValueError(f"RFI channels {r.channels} outside 0..{header.nchans}")
    if r.kind == "narrowband":
        s0 = round(r.time_s / tsamp)
        n = max(1, round(r.width_s / tsamp))
        return [_Patch(c0, s0, np.full((c1 - c0, n), r.amplitude, dtype=np.float32))]
    if r.kind == "drifting":
        # channel c is lit while the track's centre passes it, from the first channel to the last
        span = max(1, c1 - c0 - 1)
        per = max(1, round(r.width_s / span / tsamp))  # samples per channel step
        s0 = round(r.time_s / tsamp)
        out = []
        for k in range(c1 - c0):
            lo = max(c0, c0 + k - r.drift_channels // 2)
            hi = min(c1, lo + max(1, r.drift_channels))
            out.append(_Patch(lo, s0 + k * per, np.full((hi - lo, per), r.amplitude, dtype=np.float32)))
        return out
    if r.kind == "carrier":
        # A carrier adds power with its own fluctuation (amplitude modulation of 20 %).
        vals = r.amplitude * (1 + 0.2 * rng.standard_normal((c1 - c0, nsamples)))
        return [_Patch(c0, 0, vals.astype(np.float32))]
    on_len = max(1, round(r.width_s / tsamp))
    patches = []
    t = int(rng.exponential(on_len / max(r.duty, 1e-3)))
    while t < nsamples:
        n = max(1, int(rng.exponential(on_len)))
        patches.append(_Patch(c0, t, np.full((c1 - c0, n), r.amplitude, dtype=np.float32)))
        t += n + int(rng.exponential(on_len * (1 - r.duty) / max(r.duty, 1e-3))) + 1
    return patches


# --------------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------------


def _header_for(cfg: SimConfig, background: Header | None, nsamples: int) -> Header:
    if background is not None:
        return background.with_(
            path="",
            format="sigproc",
            nsamples=nsamples,
            nbits=8 if background.nbits < 8 else background.nbits,
            npol_stored=1,
            data_type=1,
            source_name=cfg.source_name,
            extra={},
        )
    return Header(
        path="",
        format="sigproc",
        nchans=cfg.nchans,
        nsamples=nsamples,
        tsamp_s=cfg.tsamp_s,
        fch1_mhz=cfg.fch1_mhz,
        foff_mhz=cfg.foff_mhz,
        nbits=cfg.nbits,
        tstart_mjd=60000.0,
        source_name=cfg.source_name,
        extra={"telescope_id": 0, "machine_id": 0},
    )


def planned_header(cfg: SimConfig) -> Header:
    """The header :func:`simulate` writes for ``cfg``: the background file's receiver when one is given."""
    if cfg.background:
        from cudalab.radio.io.observation import open_observation

        base = open_observation(cfg.background).header
        return _header_for(cfg, base, round(cfg.duration_s / base.tsamp_s))
    return _header_for(cfg, None, round(cfg.duration_s / cfg.tsamp_s))


def truth_table(
    cfg: SimConfig,
    header: Header,
    bursts: Sequence[Burst],
    kinds: Sequence[str],
    dead_channels: Sequence[int] = (),
) -> dict[str, Any]:
    """The truth: every injected pulse (kind ``burst`` or ``pulsar``) and RFI event, and the
    background's channels without noise (which carry no signal and do not count in a pulse's S/N),
    JSON-ready."""
    rows = []
    for kind, b in zip(kinds, bursts, strict=True):
        d = asdict(b)
        d["band_mhz"] = list(b.band_mhz) if b.band_mhz else None
        rows.append({"kind": kind, **d})
    rfi = [{"kind": r.kind, **{k: v for k, v in asdict(r).items() if k != "kind"}} for r in cfg.rfi]
    return {
        "header": header.summary(),
        "time_reference": f"centre of the highest channel, {header.fmax_mhz:.6f} MHz",
        "k_dm": cfg.k_dm,
        "seed": cfg.seed,
        "pulses": rows,
        "rfi": rfi,
        "pulsars": [asdict(p) for p in cfg.pulsars],
        "background": cfg.background,
        "dead_channels": [int(c) for c in dead_channels],
    }


def _truth_csv(truth: dict[str, Any]) -> str:
    cols = ["kind", "time_s", "dm", "snr", "width_s", "scatter_s", "spectral_index"]
    lines = [",".join(cols)]
    for row in truth["pulses"]:
        lines.append(",".join(f"{row[c]:.10g}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    for r in truth["rfi"]:
        lines.append(f"rfi-{r['kind']},{r['time_s']:.10g},0,{r['amplitude']:.10g},{r['width_s']:.10g},0,0")
    return "\n".join(lines) + "\n"


def simulate(
    cfg: SimConfig, out: str | Path, *, block: int = 1 << 15, progress: Any = None
) -> dict[str, Any]:
    """Write the observation ``cfg`` to ``out`` (SIGPROC) and the truth beside it (``.truth.json/.csv``).

    The data file appears only when complete (written to a temporary file, then renamed).
    Returns the truth table.
    """
    from cudalab.radio.io.observation import open_observation

    out = Path(out)
    rng = np.random.default_rng([cfg.seed, 0])
    background = open_observation(cfg.background) if cfg.background else None
    bg_std: NDArray[np.float64] | None = None
    if background is not None:
        bg_std = background_noise(background)
    header = planned_header(cfg)
    nsamples = header.nsamples

    pulses: list[Burst] = list(cfg.bursts)
    kinds = ["burst"] * len(pulses)
    for p in cfg.pulsars:
        extra = pulsar_bursts(p, header.duration_s, rng)
        pulses += extra
        kinds += ["pulsar"] * len(extra)
    # pulses are built block by block (a pulsar's thousands would not fit in memory at once), each
    # in every block its span overlaps; the interference, a few patches, once
    spans = np.array([burst_span(b, header, cfg.k_dm) for b in pulses], dtype=np.int64).reshape(-1, 2)
    patches: list[_Patch] = []
    for r in cfg.rfi:
        rp = rfi_patches(r, header, nsamples, rng)
        if bg_std is not None:
            rp = [
                _Patch(
                    q.chan0,
                    q.t0,
                    q.values * bg_std[q.chan0 : q.chan0 + q.values.shape[0], None].astype(np.float32),
                )
                for q in rp
            ]
        patches += rp

    def block_bytes(i: int) -> bytes:
        """Block ``i`` as stored: noise (its own random stream) or background, plus the pulses and RFI
        that overlap it. Blocks are independent, so several are made at once in threads (NumPy's
        generators and array arithmetic release the GIL) and written in order: the same bytes for a
        seed whatever the number of threads."""
        start = i * block
        n = min(block, nsamples - start)
        if background is not None:
            data = _tiled(background, start, n)
        else:
            brng = np.random.default_rng([cfg.seed, 1, i])  # one stream per block: same file for a seed
            data = brng.standard_normal((header.nchans, n), dtype=np.float32)
        here = np.flatnonzero((spans[:, 0] < start + n) & (spans[:, 1] > start))
        for q in itertools.chain((burst_patch(pulses[j], header, cfg.k_dm, bg_std) for j in here), patches):
            lo, hi = max(start, q.t0), min(start + n, q.t0 + q.values.shape[1])
            if lo < hi:
                c0, c1 = q.chan0, q.chan0 + q.values.shape[0]
                data[c0:c1, lo - start : hi - start] += q.values[:, lo - q.t0 : hi - q.t0]
        if background is not None and header.nbits <= 16:
            # The background is whole counts already: a signal of a fraction of a count would round
            # away (all of it, on 1- and 2-bit data). Rounded up with a probability equal to its
            # fraction, it is kept on average, as the analogue noise's dither kept it.
            whole = np.floor(data)
            frac = data - whole
            hit = frac > 0
            if hit.any():
                u = np.random.default_rng([cfg.seed, 2, i]).random(
                    int(np.count_nonzero(hit)), dtype=np.float32
                )
                whole[hit] += u < frac[hit]
            data = whole
        if background is None and header.nbits <= 16:
            if header.nbits < 8:  # centre the few levels on the noise, +-2 sigma across them
                levels = (1 << header.nbits) - 1
                data = data * (levels / 4) + levels / 2
            else:
                data = cfg.level + cfg.sigma * data
        return encode_samples(data, header)

    nblocks = -(-nsamples // block)
    # blocks in flight: each holds a float32 block (4 x nchans x block bytes) until written
    window = max(1, min(os.cpu_count() or 1, 8, nblocks))
    with atomic_open(out) as fh, ThreadPoolExecutor(max_workers=window) as pool:
        fh.write(encode_header(header, header.extra))
        pending: deque[Future[bytes]] = deque()
        for i in range(nblocks):
            pending.append(pool.submit(block_bytes, i))
            if len(pending) >= window:
                fh.write(pending.popleft().result())
            if progress is not None:
                progress(min(max(0, i + 1 - len(pending)) * block, nsamples), nsamples)
        while pending:
            fh.write(pending.popleft().result())
        if progress is not None:
            progress(nsamples, nsamples)
    dead = np.flatnonzero(bg_std <= 0).tolist() if bg_std is not None else []
    truth = truth_table(cfg, header.with_(path=str(out)), pulses, kinds, dead)
    atomic_write_json(out.with_suffix(".truth.json"), truth)
    atomic_write_text(out.with_suffix(".truth.csv"), _truth_csv(truth))
    return truth


def background_noise(obs: Any, samples: int = 4096) -> NDArray[np.float64]:
    """Each channel's noise standard deviation in a background file (its first ``samples``), as the
    search measures noise (:func:`cudalab.radio.rfi.robust_location_scale`: right on 1- and 2-bit
    data, where 1.4826 x MAD is 0 or 50 % high); 0 for a channel without noise."""
    import torch

    from cudalab.radio.rfi import robust_location_scale

    probe = obs.read(0, min(obs.header.nsamples, samples)).astype(np.float32)
    const = probe.max(axis=1) == probe.min(axis=1)
    _, scale = robust_location_scale(torch.from_numpy(probe))
    return np.where(const, 0.0, scale[:, 0].double().numpy())


def _tiled(obs: Any, start: int, n: int) -> NDArray[np.float32]:
    """``n`` samples of a background file from ``start``, wrapping around its end."""
    total = obs.header.nsamples
    out = np.empty((obs.header.nchans, n), dtype=np.float32)
    pos = 0
    while pos < n:
        s = (start + pos) % total
        take = min(n - pos, total - s)
        out[:, pos : pos + take] = obs.read(s, take)
        pos += take
    return out


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------


def random_bursts(
    n: int,
    rng: np.random.Generator,
    *,
    header: Header,
    dm_range: tuple[float, float],
    width_range_s: tuple[float, float],
    snr_range: tuple[float, float],
    k_dm: float = DM_CONSTANT,
    spacing_s: float = 0.5,
) -> list[Burst]:
    """``n`` bursts with log-uniform DM, width and S/N, each wholly inside the file, spaced apart.

    Bursts are placed in order with at least ``spacing_s`` between arrivals so that each can be matched
    to one candidate; fewer than ``n`` are returned when the file is too short for them.
    """
    out: list[Burst] = []
    t = spacing_s / 2
    for _ in range(n):
        dm = float(np.exp(rng.uniform(np.log(max(dm_range[0], 1e-3)), np.log(dm_range[1]))))
        sweep = float(dispersion_delay_s(dm, header.fmin_mhz, header.fmax_mhz, k_dm))
        width = float(np.exp(rng.uniform(*np.log(width_range_s))))
        snr = float(np.exp(rng.uniform(*np.log(snr_range))))
        t += spacing_s * (1 + rng.uniform(0, 0.5))
        if t + sweep + 5 * width > header.duration_s:
            break
        out.append(Burst(time_s=t, dm=dm, snr=snr, width_s=width))
    return out


def demo_config(seed: int = 7) -> SimConfig:
    """The demo: a 512-channel L-band beam, 13 s, with bursts at several DMs and widths, a pulsar, and RFI.

    Small enough to simulate and search on a 2-core CPU in well under a minute.
    """
    bursts = (
        Burst(time_s=1.10, dm=56.8, snr=25.0, width_s=1.0e-3),
        Burst(time_s=2.70, dm=348.8, snr=15.0, width_s=2.0e-3, scatter_s=1e-3),
        Burst(time_s=4.90, dm=622.0, snr=12.0, width_s=4.0e-3, band_mhz=(1400.0, 120.0)),
        Burst(time_s=7.05, dm=143.2, snr=10.0, width_s=0.5e-3, spectral_index=-1.5),
        Burst(time_s=9.40, dm=901.5, snr=30.0, width_s=8.0e-3),
    )
    rfi = (
        Rfi(kind="impulse", amplitude=6.0, time_s=3.9, width_s=2e-3),
        Rfi(kind="impulse", amplitude=4.0, time_s=8.25, width_s=10e-3),
        Rfi(kind="carrier", amplitude=3.0, channels=(100, 103)),
        Rfi(kind="intermittent", amplitude=8.0, channels=(300, 302), width_s=20e-3, duty=0.1),
    )
    return SimConfig(
        nchans=512,
        tsamp_s=256e-6,
        fch1_mhz=1500.0,
        foff_mhz=-300.0 / 512,
        duration_s=13.0,
        seed=seed,
        bursts=bursts,
        pulsars=(Pulsar(period_s=0.7145, dm=26.8, snr=7.0, width_s=6e-3, first_s=0.31),),
        rfi=rfi,
    )


def acceptance_config(seed: int = 2024) -> SimConfig:
    """The single-pulse search's acceptance case: 1024 channels over 1200-1500 MHz, 13 s, six bursts of
    S/N 10-20 at DM 95-960 (one scattered, one with a steep spectrum, one band-limited) and RFI (two
    broadband impulses, a carrier, an intermittent narrowband source)."""
    bursts = (
        Burst(time_s=0.6, dm=95.0, snr=10.0, width_s=0.5e-3),
        Burst(time_s=2.3, dm=510.0, snr=12.0, width_s=2e-3),
        Burst(time_s=4.1, dm=780.0, snr=15.0, width_s=5e-3, scatter_s=1e-3),
        Burst(time_s=6.4, dm=305.0, snr=10.0, width_s=1e-3, spectral_index=-2.0),
        Burst(time_s=8.2, dm=960.0, snr=20.0, width_s=10e-3),
        Burst(time_s=10.5, dm=160.0, snr=11.0, width_s=1.5e-3, band_mhz=(1380.0, 80.0)),
    )
    rfi = (
        Rfi(kind="impulse", amplitude=6.0, time_s=1.5, width_s=3e-3),
        Rfi(kind="impulse", amplitude=4.0, time_s=7.3, width_s=20e-3),
        Rfi(kind="carrier", amplitude=3.0, channels=(200, 204)),
        Rfi(kind="intermittent", amplitude=8.0, channels=(700, 703), width_s=15e-3, duty=0.1),
    )
    return SimConfig(
        nchans=1024,
        tsamp_s=256e-6,
        fch1_mhz=1500.0,
        foff_mhz=-300.0 / 1024,
        duration_s=13.0,
        seed=seed,
        bursts=bursts,
        rfi=rfi,
    )


def load_truth(path: str | Path) -> dict[str, Any]:
    """A truth table written by :func:`simulate`; ``ValueError`` naming the first field that is wrong
    (checked before a search starts, so a wrong file never costs a whole search)."""
    try:
        truth = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not a text file") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(truth, dict):
        raise ValueError("not a JSON object")
    header = truth.get("header")
    if not isinstance(header, dict):
        raise ValueError("no header object")
    for key in ("fmin_mhz", "fmax_mhz"):
        if not _finite(header.get(key)) or header[key] <= 0:
            raise ValueError(f"header.{key} is not a positive number")
    pulses = truth.get("pulses")
    if not isinstance(pulses, list):
        raise ValueError("no pulses list")
    for i, p in enumerate(pulses):
        if not isinstance(p, dict) or not isinstance(p.get("kind"), str):
            raise ValueError(f"pulses[{i}] has no kind")
        for key in ("time_s", "dm", "snr", "width_s"):
            if not _finite(p.get(key)):
                raise ValueError(f"pulses[{i}].{key} is not a number")
    if "k_dm" in truth and not _finite(truth["k_dm"]):
        raise ValueError("k_dm is not a number")
    dead = truth.get("dead_channels", [])
    if not isinstance(dead, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < header.get("nchans", 0) for c in dead
    ):
        raise ValueError("dead_channels is not a list of channel numbers")
    return truth


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
