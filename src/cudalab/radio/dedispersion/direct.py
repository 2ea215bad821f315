"""Incoherent dedispersion: the torch reference that runs on CPU and GPU.

``out[i, t] = sum_c data[c, t + delays[i, c]]``: for every DM trial ``i``, each channel is shifted by
its delay and the channels are summed, so a pulse that swept down the band lines up at ``t``, its
arrival time at the highest channel. This direct sum costs ``nchans * ndm * nout`` additions; it is
the reference that faster kernels (tree, sub-band, FDMT, tiled CUDA) are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


@dataclass(frozen=True)
class LiveChannels:
    """The channels a dedispersion visits and their scales: a block's weights, worked out once.

    Deriving them from device weights costs a host sync, so the search does it once per block and
    hands the result to every trial group and sub-band (:meth:`within` cuts a sub-band's share
    without another).

    Attributes
    ----------
    chans
        ``(nlive,)`` int32 on the device, ascending.
    scale
        ``(nlive,)`` float32 on the device: each live channel's weight.
    has_scale
        Whether any weight differs from 1 (else the kernel skips the multiply).
    host, host_scale
        ``chans`` and ``scale`` on the host (the torch reference loops over them there).
    """

    chans: torch.Tensor
    scale: torch.Tensor
    has_scale: bool
    host: NDArray[np.int64]
    host_scale: NDArray[np.float32]

    @classmethod
    def of(
        cls, weights: torch.Tensor | NDArray[Any] | None, nchans: int, device: torch.device
    ) -> LiveChannels:
        """From ``(nchans,)`` weights (0 = masked), on the host (no sync) or the device; None: all, unit."""
        if weights is None:
            w = np.ones(nchans, dtype=np.float32)
        elif isinstance(weights, torch.Tensor):
            w = weights.detach().to("cpu", torch.float32).numpy()
        else:
            w = np.asarray(weights, dtype=np.float32)
        if w.shape != (nchans,):
            raise ValueError(f"weights must be ({nchans},), not {w.shape}")
        host = np.flatnonzero(w)
        return cls(
            chans=torch.from_numpy(host.astype(np.int32)).to(device),
            scale=torch.from_numpy(w[host]).to(device),
            has_scale=bool((w[host] != 1).any()),
            host=host,
            host_scale=w[host],
        )

    def within(self, lo: int, hi: int) -> LiveChannels:
        """The live channels in ``[lo, hi)``, numbered from ``lo`` (a sub-band's), without a sync."""
        a, b = (int(i) for i in np.searchsorted(self.host, [lo, hi]))
        return LiveChannels(
            self.chans[a:b] - lo, self.scale[a:b], self.has_scale, self.host[a:b] - lo, self.host_scale[a:b]
        )


def dedisperse(
    data: torch.Tensor,
    delays: torch.Tensor,
    nout: int,
    *,
    weights: torch.Tensor | LiveChannels | None = None,
    out: torch.Tensor | None = None,
    dm_chunk: int = 256,
    time_tile: int | None = None,
) -> torch.Tensor:
    """Dedisperse ``data`` at every trial in ``delays``.

    Parameters
    ----------
    data
        Shape ``(nchans, ntime)``, float32, on the device to compute on.
    delays
        Shape ``(ndm, nchans)``, integer delays in samples (>= 0).
    nout
        Output samples per trial; requires ``ntime >= nout + delays.max()``.
    weights
        Shape ``(nchans,)``; channels of weight 0 are skipped (masked), others scale their channel. Or
        the :class:`LiveChannels` already worked out from them (no host sync here).
    out
        ``(ndm, nout)`` float32 to write into; allocated when absent.
    dm_chunk
        Trials per gather, bounding the temporary ``(dm_chunk, time_tile)`` copy.
    time_tile
        Output samples per tile. On the CPU, 2048 keeps the gather in cache (3x faster than untiled
        at 512 channels x 300 trials x 32k samples on 2 cores); on the GPU one tile (``nout``) keeps
        the kernel launches few. The sum order over channels is the same either way, so the result is
        bit-identical.

    Returns
    -------
    torch.Tensor
        Shape ``(ndm, nout)``, float32, on ``data``'s device (``out`` when given).
    """
    nchans, ntime = data.shape
    ndm = delays.shape[0]
    if delays.shape != (ndm, nchans):
        raise ValueError(f"delays must be (ndm, {nchans}), not {tuple(delays.shape)}")
    if ndm and nout + int(delays.max()) > ntime:
        raise ValueError(f"need {nout + int(delays.max())} samples for {nout} outputs, have {ntime}")
    delays = delays.to(device=data.device, dtype=torch.long)
    if out is None:
        out = torch.zeros(ndm, max(nout, 0), dtype=torch.float32, device=data.device)
    elif out.shape != (ndm, nout):
        raise ValueError(f"out must be ({ndm}, {nout}), not {tuple(out.shape)}")
    else:
        out.zero_()
    if nout <= 0 or ndm == 0:
        return out
    tile = time_tile or (nout if data.is_cuda else 2048)
    live = weights if isinstance(weights, LiveChannels) else LiveChannels.of(weights, nchans, data.device)
    for t0 in range(0, nout, tile):
        n = min(tile, nout - t0)
        for c, scale in zip(live.host.tolist(), live.host_scale.tolist(), strict=True):
            # (ntime - t0 - n + 1, n) view: row d is the channel shifted by d samples. Copied only when gathered.
            windows = data[c, t0:].unfold(0, n, 1)
            for lo in range(0, ndm, dm_chunk):
                hi = min(lo + dm_chunk, ndm)
                shifted = windows[delays[lo:hi, c]]  # (hi - lo, n)
                if scale != 1.0:
                    out[lo:hi, t0 : t0 + n].add_(shifted, alpha=scale)
                else:
                    out[lo:hi, t0 : t0 + n].add_(shifted)
    return out


def dedisperse_numpy(data: NDArray[Any], delays: NDArray[np.integer[Any]], nout: int) -> NDArray[np.float64]:
    """The definition, written out in loops with float64 sums: the check for :func:`dedisperse`."""
    ndm, nchans = delays.shape
    out = np.zeros((ndm, nout), dtype=np.float64)
    for i in range(ndm):
        for c in range(nchans):
            d = int(delays[i, c])
            out[i] += data[c, d : d + nout]
    return out


def scrunch_time(data: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum ``factor`` adjacent samples (dropping a ragged tail).  Shape: ``(n, t)`` -> ``(n, t // factor)``."""
    if factor == 1:
        return data
    n, t = data.shape
    t_out = t // factor
    return data[:, : t_out * factor].reshape(n, t_out, factor).sum(dim=2)
