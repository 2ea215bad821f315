"""The Triton kernels' launchers: argument checks, tile autotuning, grids (the kernels: ``_triton.py``).

**Dedispersion.** One kernel serves the direct method and both stages of the sub-band method:

    out[i, t] = sum_k scale[k] * x[src[i], chan[k], t + delays[i, chan[k]]]

Each program owns a tile of ``BLOCK_DM`` trials x ``BLOCK_T`` output samples and walks the live
channels in order, accumulating in registers in float32: the tile's reads of one channel are
``BLOCK_DM`` contiguous runs that mostly overlap (neighbouring trials have neighbouring delays), so
they are served by L1/L2 rather than DRAM, and each output is written once. Masked channels are not
visited at all (they are left out of ``chan``). ``src`` picks the source row per trial: stage 2 of the
sub-band method reads the sub-band series of each trial's nominal DM.

The channel order is the reference's, so for integer-valued data (8-bit samples, unit weights) the
result is bit-identical to :func:`cudalab.radio.dedispersion.direct.dedisperse`; otherwise it agrees to float32
rounding (the kernel may fuse a multiply-add). On a machine without a GPU, ``TRITON_INTERPRET=1``
runs the same kernel on CPU tensors (slowly): that is how the CPU test suite checks it.

**The single-pulse search** (:func:`boxcar_hits_triton`). The torch reference writes the normalised
series, its float64 prefix sums and one S/N array per boxcar width, each a full pass over memory
(about 40 bytes per sample and width). The fused kernel reads the dedispersed series and the
baseline's knots, normalises on the fly, filters every width in registers and appends only the hits:
about 4 bytes per sample, whatever the number of widths.

Why hand-written: no maintained Python package dedisperses on the GPU from torch tensors (heimdall
and dedisp are C++/CUDA programs; sigpyproc and your are CPU code), and the sub-band method needs
the per-trial source row that none of them has.

The choice between these and the torch references is :func:`cudalab.radio.kernels.resolve_kernel`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch

from cudalab.radio.dedispersion.direct import LiveChannels
from cudalab.radio.kernels import interpreting

# Tile shapes tried by the autotuner on a GPU (the first is the interpreter's). Keyed by the powers of
# two of the trial count and the output length, and by the source-row form: a few tunings per search
# (each a few 20 ms timings), not one per trial group, sub-band chunk or last, shorter block.
_CONFIGS: tuple[tuple[int, int, int], ...] = (
    # (BLOCK_DM, BLOCK_T, num_warps)
    (16, 256, 4),
    (8, 256, 4),
    (32, 128, 4),
    (16, 512, 8),
    (32, 256, 8),
    (64, 128, 8),
)


def _autotuned(kernel: Any, configs: list[tuple[dict[str, int], int]], key: list[str], **kw: Any) -> Any:
    """``kernel`` autotuned over ``(meta-parameters, num_warps)`` with 20 ms timings; None under the
    interpreter (which runs the first configuration)."""
    if interpreting():
        return None
    import triton
    from triton.testing import do_bench

    return triton.autotune(
        configs=[triton.Config(meta, num_warps=w, num_stages=2) for meta, w in configs],
        key=key,
        do_bench=lambda fn, quantiles: do_bench(fn, warmup=5, rep=20, quantiles=quantiles),
        **kw,
    )(kernel)


@cache
def _compiled() -> tuple[Any, Any]:
    """(the jitted dedispersion kernel, the autotuned one or None under the interpreter), on first use."""
    from cudalab.radio.kernels._triton import dedisperse_kernel

    configs = [({"BLOCK_DM": bd, "BLOCK_T": bt}, w) for bd, bt, w in _CONFIGS]
    return dedisperse_kernel, _autotuned(dedisperse_kernel, configs, ["dm_class", "size_class", "HAS_SRC"])


def dedisperse_triton(
    data: torch.Tensor,
    delays: torch.Tensor,
    nout: int,
    *,
    weights: torch.Tensor | LiveChannels | None = None,
    sources: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dedisperse with the Triton kernel; the arguments are those of the torch reference, plus two.

    Parameters
    ----------
    data
        ``(nchans, ntime)`` float32, or ``(nsrc, nchans, ntime)`` with ``sources``. The time axis must
        be contiguous (other strides are free: a channel slice of a block is passed as a view).
    delays
        ``(ndm, nchans)`` integer delays (any strides, int32 or int64).
    nout
        Output samples per trial; requires ``ntime >= nout + delays.max()`` (checked by the caller
        on the host, as the pipeline knows it without a device sync).
    weights
        ``(nchans,)``: channels of weight 0 are skipped, others scale their channel. Or the
        :class:`LiveChannels` already worked out from them (no host sync here).
    sources
        ``(ndm,)`` the row of ``data`` each trial reads (stage 2 of the sub-band method).
    out
        ``(ndm, nout)`` float32 to write into (contiguous along time); allocated when absent.
    """
    if sources is None:
        if data.dim() != 2:
            raise ValueError(f"data must be (nchans, ntime) without sources, not {tuple(data.shape)}")
        data3 = data.unsqueeze(0)
    else:
        if data.dim() != 3:
            raise ValueError(f"data must be (nsrc, nchans, ntime) with sources, not {tuple(data.shape)}")
        data3 = data
    _, nchans, ntime = data3.shape
    ndm = delays.shape[0]
    if delays.shape != (ndm, nchans):
        raise ValueError(f"delays must be (ndm, {nchans}), not {tuple(delays.shape)}")
    if data3.dtype != torch.float32 or (ntime > 1 and data3.stride(2) != 1):
        raise ValueError("data must be float32 with a contiguous time axis")
    dev = data.device
    if out is None:
        out = torch.empty(ndm, max(nout, 0), dtype=torch.float32, device=dev)
    elif out.shape != (ndm, nout) or (nout > 1 and out.stride(1) != 1):
        raise ValueError(f"out must be ({ndm}, {nout}) with a contiguous time axis")
    if nout <= 0 or ndm == 0:
        return out
    live = weights if isinstance(weights, LiveChannels) else LiveChannels.of(weights, nchans, dev)
    if len(live.host) and live.host[-1] >= nchans:
        raise ValueError(f"live channels reach {int(live.host[-1])}, the data have {nchans}")
    if delays.device != dev:
        delays = delays.to(dev)
    src = sources.to(device=dev, dtype=torch.int32).contiguous() if sources is not None else live.chans
    kernel, tuned = _compiled()
    args = (
        data3,
        data3.stride(0),
        data3.stride(1),
        src,
        delays,
        delays.stride(0),
        delays.stride(1),
        live.chans,
        live.scale,
        len(live.host),
        out,
        out.stride(0),
        ndm,
        nout,
        ndm.bit_length(),
        nout.bit_length(),
    )
    if tuned is None:
        bd, bt, _ = _CONFIGS[0]
        kernel[(-(-nout // bt), -(-ndm // bd))](
            *args, HAS_SRC=sources is not None, HAS_SCALE=live.has_scale, BLOCK_DM=bd, BLOCK_T=bt
        )
    else:

        def grid(meta: dict[str, Any]) -> tuple[int, int]:
            return (-(-nout // meta["BLOCK_T"]), -(-ndm // meta["BLOCK_DM"]))

        tuned[grid](*args, HAS_SRC=sources is not None, HAS_SCALE=live.has_scale)
    return out


# Tiles tried by the boxcar kernel's autotuner on a GPU (the first is the interpreter's).
_BOXCAR_CONFIGS: tuple[tuple[int, int], ...] = (
    # (BLOCK_T, num_warps)
    (1024, 4),
    (2048, 8),
    (4096, 8),
    (2048, 4),
)
#: Hits the boxcar kernel has room for at first (16 bytes each); a launch that finds more runs again
#: with room for them all.
BOXCAR_CAPACITY = 1 << 20


@cache
def _compiled_boxcar() -> tuple[Any, Any]:
    """(the jitted boxcar kernel, the autotuned one or None under the interpreter), on first use."""
    from cudalab.radio.kernels._triton import boxcar_kernel

    configs = [({"BLOCK_T": bt}, w) for bt, w in _BOXCAR_CONFIGS]
    # reset_to_zero: each timing run starts from no hits
    return boxcar_kernel, _autotuned(
        boxcar_kernel, configs, ["size_class", "nwidths"], reset_to_zero=["count_ptr"]
    )


def boxcar_hits_triton(
    series: torch.Tensor,
    knots: torch.Tensor,
    chunk: int,
    inv_rms: torch.Tensor,
    *,
    widths: list[int],
    threshold: float,
    valid: int,
    capacity: int = BOXCAR_CAPACITY,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused search: normalise, boxcar-filter at every width and keep what crosses ``threshold``.

    Equals :func:`cudalab.radio.single_pulse.search.boxcar_hits` on the series normalised by the baseline
    ``(knots, chunk, inv_rms)`` (:class:`cudalab.radio.single_pulse.search.Baseline`), to float32 rounding (a
    tile's windows are summed in float32 from a scan of at most ``BLOCK_T`` samples; the reference's
    row-long sums are float64). Each program owns one row's tile of ``BLOCK_T`` columns, reads the
    series there once per width (the shifted read hits the cache), computes the baseline from its
    knots as it goes, and appends its hits to one list through an atomic counter: the normalised
    series, the prefix sums and the per-width S/N never reach memory.

    Parameters
    ----------
    series
        ``(rows, n)`` float32 dedispersed series, time contiguous.
    knots, chunk, inv_rms
        The baseline (:func:`cudalab.radio.single_pulse.search.fit_baseline`).
    widths
        Boxcar widths, powers of two or three times a power of two, ascending.
    threshold, valid
        As for :func:`cudalab.radio.single_pulse.search.find_giants`.
    capacity
        Room for this many hits at first; more cost one more launch.

    Returns
    -------
    ``(row, t, width index, snr)`` on the series' device, in no particular order.
    """
    rows, n = series.shape
    if series.dtype != torch.float32 or (n > 1 and series.stride(1) != 1):
        raise ValueError("series must be float32 with a contiguous time axis")
    if any(w <= 0 or (w & (w - 1) and (w % 3 or (w // 3) & (w // 3 - 1))) for w in widths):
        raise ValueError(f"boxcar widths must be powers of two or three times one, not {widths}")
    if knots.shape[0] != rows or inv_rms.shape != (rows,):
        raise ValueError(f"the baseline has {knots.shape[0]} rows, the series {rows}")
    dev = series.device
    widths = [w for w in widths if w <= n]
    span = min(valid, n)
    if -(-span // _BOXCAR_CONFIGS[0][0]) >= 1 << 16:
        raise ValueError(f"rows of {n} samples are too long for one launch (tiles are a grid axis < 65536)")
    if rows == 0 or span <= 0 or not widths:
        e = torch.zeros(0, dtype=torch.int32, device=dev)
        return e, e, e, torch.zeros(0, device=dev)
    w_dev = torch.tensor(widths, dtype=torch.int32, device=dev)
    scale = torch.tensor([1 / np.sqrt(w) for w in widths], dtype=torch.float32, device=dev)
    knots = knots.to(torch.float32).contiguous()
    inv_rms = inv_rms.to(torch.float32).contiguous()
    kernel, tuned = _compiled_boxcar()
    count = torch.zeros(1, dtype=torch.int32, device=dev)
    while True:
        out = [torch.empty(capacity, dtype=torch.int32, device=dev) for _ in range(3)]
        snr = torch.empty(capacity, dtype=torch.float32, device=dev)
        args = (
            series,
            series.stride(0),
            n,
            span,
            knots,
            knots.stride(0),
            knots.shape[1] - 1,
            float(max(knots.shape[1] - 2, 0)),  # a float: Triton would make an int of 0 or 1 a constant
            chunk,
            inv_rms,
            w_dev,
            scale,
            len(widths),
            float(threshold),
            *out,
            snr,
            count,
            capacity,
            n.bit_length(),
        )
        if tuned is None:
            bt = _BOXCAR_CONFIGS[0][0]
            kernel[(rows, -(-span // bt))](*args, BLOCK_T=bt)
        else:

            def grid(meta: dict[str, Any]) -> tuple[int, int]:
                return (rows, -(-span // meta["BLOCK_T"]))

            tuned[grid](*args)
        found = int(count.item())  # the one sync of the search per chunk of trials
        if found <= capacity:
            return out[0][:found], out[1][:found], out[2][:found], snr[:found]
        capacity = found
        count.zero_()
