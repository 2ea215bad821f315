"""The Triton kernels themselves (imported only when one is launched: Triton is optional).

The functions that launch them, their contracts and their tests are in :mod:`cudalab.radio.kernels.launch`.
"""

import triton
import triton.language as tl


@triton.jit
def dedisperse_kernel(
    x_ptr,
    stride_xs,
    stride_xc,
    src_ptr,
    d_ptr,
    stride_dd,
    stride_dc,
    chan_ptr,
    scale_ptr,
    nactive,
    out_ptr,
    stride_od,
    ndm,
    nout,
    dm_class,
    size_class,
    HAS_SRC: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    BLOCK_DM: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_d = tl.program_id(1)
    dm = pid_d * BLOCK_DM + tl.arange(0, BLOCK_DM)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    dm_ok = dm < ndm
    ok = dm_ok[:, None] & (t < nout)[None, :]
    dm64 = dm.to(tl.int64)
    if HAS_SRC:
        row = x_ptr + tl.load(src_ptr + dm64, mask=dm_ok, other=0).to(tl.int64) * stride_xs
    else:
        row = x_ptr + tl.zeros([BLOCK_DM], dtype=tl.int64)
    d_row = d_ptr + dm64 * stride_dd
    acc = tl.zeros([BLOCK_DM, BLOCK_T], dtype=tl.float32)
    for k in range(nactive):
        c = tl.load(chan_ptr + k).to(tl.int64)
        d = tl.load(d_row + c * stride_dc, mask=dm_ok, other=0).to(tl.int64)
        v = tl.load((row + c * stride_xc + d)[:, None] + t[None, :], mask=ok, other=0.0)
        if HAS_SCALE:
            v = v * tl.load(scale_ptr + k)
        acc += v
    tl.store(out_ptr + dm64[:, None] * stride_od + t[None, :], acc, mask=ok)


@triton.jit
def normalised(x_row, k_row, t, n, last_knot, pos_max, chunk, inv_rms):
    """The series at columns ``t``, less its baseline, over its noise (0 past the row's end)."""
    inside = t < n
    x = tl.load(x_row + t, mask=inside, other=0.0)
    u = (t.to(tl.float32) + 0.5) / chunk - 0.5
    pos = tl.minimum(tl.maximum(tl.floor(u), 0.0), pos_max)
    frac = tl.minimum(tl.maximum(u - pos, 0.0), 1.0)
    p = pos.to(tl.int32)
    k0 = tl.load(k_row + p)
    k1 = tl.load(k_row + tl.minimum(p + 1, last_knot))
    return tl.where(inside, (x - (k0 * (1 - frac) + k1 * frac)) * inv_rms, 0.0)


@triton.jit
def boxcar_kernel(
    x_ptr,
    stride_x,
    n,
    valid,
    knots_ptr,
    stride_k,
    last_knot,
    pos_max,
    chunk,
    inv_rms_ptr,
    widths_ptr,
    scale_ptr,
    nwidths,
    threshold,
    row_ptr,
    t_ptr,
    w_ptr,
    snr_ptr,
    count_ptr,
    capacity,
    size_class,
    BLOCK_T: tl.constexpr,
):
    row = tl.program_id(0)
    j = tl.arange(0, BLOCK_T)
    t = tl.program_id(1) * BLOCK_T + j
    x_row = x_ptr + row.to(tl.int64) * stride_x
    k_row = knots_ptr + row.to(tl.int64) * stride_k
    inv_rms = tl.load(inv_rms_ptr + row)
    z = normalised(x_row, k_row, t, n, last_knot, pos_max, chunk, inv_rms)
    for k in range(nwidths):
        w = tl.load(widths_ptr + k)
        # sum(z[t : t + w]) in pieces of L samples: L = w when w <= BLOCK_T, else the largest power of
        # two dividing w (w: a power of two or three times one; BLOCK_T: a power of two), at most
        # BLOCK_T. With lo = z[t + s + j] and hi = z[t + s + L + j], a piece starting at s sums to
        # sum(lo[:L]) + exclusive_cumsum(hi - lo)[j]: the shifted window costs one more (cached)
        # load and a scan, no exchange between threads; each piece's hi is the next one's lo.
        piece = tl.where(w <= BLOCK_T, w, tl.minimum(w & (-w), BLOCK_T))
        acc = tl.zeros([BLOCK_T], dtype=tl.float32)
        lo = z
        for i in range(w // piece):
            hi = normalised(x_row, k_row, t + (i + 1) * piece, n, last_knot, pos_max, chunk, inv_rms)
            d = hi - lo
            acc += tl.sum(tl.where(j < piece, lo, 0.0), axis=0) + (tl.cumsum(d, axis=0) - d)
            lo = hi
        snr = acc * tl.load(scale_ptr + k)
        hit = (snr >= threshold) & (t < valid) & (t + w <= n)
        flag = hit.to(tl.int32)
        found = tl.sum(flag, axis=0)
        if found > 0:  # rare: one atomic per tile and width with hits, then a compacted store
            at = tl.atomic_add(count_ptr, found) + tl.cumsum(flag, axis=0) - 1
            ok = hit & (at < capacity)
            tl.store(row_ptr + at, flag * 0 + row, mask=ok)
            tl.store(t_ptr + at, t, mask=ok)
            tl.store(w_ptr + at, flag * 0 + k, mask=ok)
            tl.store(snr_ptr + at, snr, mask=ok)
