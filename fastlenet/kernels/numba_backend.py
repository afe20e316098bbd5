"""Numba (JIT) kernels, parallel over the batch.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
s stride, p pad, T threads, SB samples per block, M = round16(OH*WS) (a conv-output
plane in the stride-WS layout), Fq = round16(F) (filters along the lanes).

Strategy: each convolution runs the plan of ``fastlenet.kernels.plan`` (the Cython
backend's plan, path for path; see "convolution" below).  The batch is cut into
blocks of SB samples that the threads take; each thread owns its workspaces
(allocated before the parallel loop), each block its own dW/db partial, summed in
block order at the end: no atomics, no false sharing, and the same result for any
thread count.  The small GEMMs are loop nests ordered so the innermost loop runs
over contiguous memory and vectorises.  All Numba options live in
``_SERIAL``/``_PARALLEL`` below; every kernel compiles on its first call only (and
is cached on disk).  The ``_<name>_impl`` functions are unchecked; use the checked
ones at the bottom or ``fastlenet.kernels.backend("numba")``.
"""
from __future__ import annotations

import sys

import numba
import numpy as np
from numba import njit, prange

from . import numba_norm, plan
from ._api import KERNEL_NAMES, Backend
from ._fast import FastPaths, writing_into
from ._numba_options import PARALLEL, SERIAL, takes

_SERIAL, _PARALLEL, _takes = SERIAL, PARALLEL, takes       # fastlenet/kernels/_numba_options.py


def cache_is_warm() -> bool:
    """Whether Numba's on-disk cache already holds this module's compiled kernels
    (``$NUMBA_CACHE_DIR``, else ``__pycache__`` beside this file): when not, the first
    call of each kernel compiles it (seconds each), which a caller should say."""
    import os
    from pathlib import Path
    root = os.environ.get("NUMBA_CACHE_DIR")
    folder = Path(root) if root else Path(__file__).resolve().parent / "__pycache__"
    try:
        return any(folder.rglob("numba_backend.*.nbi"))
    except OSError:
        return False



def set_num_threads(n: int) -> None:
    """Threads used by the parallel kernels (1 .. numba.config.NUMBA_NUM_THREADS)."""
    numba.set_num_threads(n)


# --------------------------------------------------------------------------- helpers
@njit(**_SERIAL)
def _valid_range(j, s, p, size, out_len):
    """Output positions o in [lo, hi) whose input index o*s + j - p lies in [0, size)."""
    lo = 0
    if p - j > 0:
        lo = (p - j + s - 1) // s
    hi = 0
    if size + p - j > 0:
        hi = (size + p - j - 1) // s + 1
    if hi > out_len:
        hi = out_len
    if lo > hi:
        lo = hi
    return lo, hi


@njit(**_SERIAL)
def _im2col_one(xs, kh, kw, s, p, oh, ow, cols):
    """xs (C, H, W) -> cols (K, L) for one sample."""
    c_, h, w = xs.shape
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                lo, hi = _valid_range(j, s, p, w, ow)
                for oy in range(oh):
                    base = oy * ow
                    yy = oy * s + i - p
                    if yy < 0 or yy >= h:
                        for ox in range(ow):
                            cols[r, base + ox] = 0
                        continue
                    for ox in range(lo):
                        cols[r, base + ox] = 0
                    for ox in range(lo, hi):
                        cols[r, base + ox] = xs[c, yy, ox * s + j - p]
                    for ox in range(hi, ow):
                        cols[r, base + ox] = 0


@njit(**_SERIAL)
def _col2im_one(cols, kh, kw, s, p, oh, ow, xs):
    """xs (C, H, W) += fold(cols (K, L)) for one sample; xs must start zeroed."""
    c_, h, w = xs.shape
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                lo, hi = _valid_range(j, s, p, w, ow)
                for oy in range(oh):
                    yy = oy * s + i - p
                    if yy < 0 or yy >= h:
                        continue
                    base = oy * ow
                    for ox in range(lo, hi):
                        xs[c, yy, ox * s + j - p] += cols[r, base + ox]


# --------------------------------------------------------------------------- im2col / col2im
@njit(**_PARALLEL)
def _im2col_impl(x, kh, kw, stride, pad, oh, ow):
    """x (N, C, H, W) -> cols (N, K, L)."""
    n, c = x.shape[0], x.shape[1]
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for b in prange(n):
        _im2col_one(x[b], kh, kw, stride, pad, oh, ow, cols[b])
    return cols


@njit(**_PARALLEL)
def _col2im_impl(cols, x_shape, kh, kw, stride, pad, oh, ow):
    """cols (N, K, L) -> x (N, C, H, W), overlaps summed."""
    x = np.zeros(x_shape, dtype=cols.dtype)
    for b in prange(x_shape[0]):
        _col2im_one(cols[b], kh, kw, stride, pad, oh, ow, x[b])
    return x


# --------------------------------------------------------------------------- small GEMMs
@njit(**_SERIAL)
def _gemm(a, bm, bias, out):
    """out (M, L) = a (M, K) @ bm (K, L) (+ bias[m] per row when bias.size == M).

    Four output rows are updated per pass over a row of ``bm``, so each loaded
    element of ``bm`` feeds four multiply-adds; the inner loop is contiguous and
    vectorises."""
    m_, k_ = a.shape
    l_ = bm.shape[1]
    with_bias = bias.shape[0] == m_
    m = 0
    while m < m_:
        rows = min(4, m_ - m)
        for r in range(rows):
            v0 = bias[m + r] if with_bias else 0.0
            for li in range(l_):
                out[m + r, li] = v0
        if rows == 4:
            o0, o1, o2, o3 = out[m], out[m + 1], out[m + 2], out[m + 3]
            for ki in range(k_):
                w0, w1, w2, w3 = a[m, ki], a[m + 1, ki], a[m + 2, ki], a[m + 3, ki]
                src = bm[ki]
                for li in range(l_):
                    v = src[li]
                    o0[li] += w0 * v
                    o1[li] += w1 * v
                    o2[li] += w2 * v
                    o3[li] += w3 * v
        else:
            for r in range(rows):
                o = out[m + r]
                for ki in range(k_):
                    w0 = a[m + r, ki]
                    src = bm[ki]
                    for li in range(l_):
                        o[li] += w0 * src[li]
        m += rows


@njit(**_SERIAL)
def _gemm_nt_acc(g, cols, dw, db):
    """dw (F, K) += g (F, L) @ cols (K, L)^T and db (F,) += row sums of g;
    four columns of dW per pass over a row of g (reductions vectorised by fastmath)."""
    f_, l_ = g.shape
    k_ = cols.shape[0]
    for fi in range(f_):
        gr = g[fi]
        acc_b = gr[0] * 0
        for li in range(l_):
            acc_b += gr[li]
        db[fi] += acc_b
        ki = 0
        while ki + 4 <= k_:
            c0, c1, c2, c3 = cols[ki], cols[ki + 1], cols[ki + 2], cols[ki + 3]
            a0 = a1 = a2 = a3 = gr[0] * 0
            for li in range(l_):
                v = gr[li]
                a0 += v * c0[li]
                a1 += v * c1[li]
                a2 += v * c2[li]
                a3 += v * c3[li]
            dw[fi, ki] += a0
            dw[fi, ki + 1] += a1
            dw[fi, ki + 2] += a2
            dw[fi, ki + 3] += a3
            ki += 4
        while ki < k_:
            c0 = cols[ki]
            a0 = gr[0] * 0
            for li in range(l_):
                a0 += gr[li] * c0[li]
            dw[fi, ki] += a0
            ki += 1


@njit(**_SERIAL)
def _relu_maxpool(z, fs, rs, cs, ow, size, ps, y, arg):
    """y (F, PH, PW), arg = maxpool(relu(conv output)) for a conv output stored flat in z,
    value (f, oy, ox) at z[f*fs + oy*rs + ox*cs] (any of the layouts below); arg is
    oy*OW + ox of the window's first max, -1 where that max is <= 0 (no gradient).
    Selects, not branches: the data decide, and would mispredict."""
    f_, ph, pw = y.shape
    for fi in range(f_):
        for py in range(ph):
            for px in range(pw):
                y0, x0 = py * ps, px * ps
                best = z[fi * fs + y0 * rs + x0 * cs]
                top = y0 * ow + x0
                for a in range(size):
                    for bb in range(size):
                        v = z[fi * fs + (y0 + a) * rs + (x0 + bb) * cs]
                        gt = _takes(v, best)
                        top = (y0 + a) * ow + x0 + bb if gt else top
                        best = v if gt else best
                y[fi, py, px] = 0.0 if best <= 0 else best        # NaN stays NaN
                arg[fi, py, px] = top if best > 0 else -1


# --------------------------------------------------------------------------- direct convolution layouts
# Stride 1, no im2col.  Each sample is copied into zero-padded planes xp (C, HS, WS)
# (HS = H + 2 pad, WS = W + 2 pad) kept flat, and every conv-output plane is laid out
# with the same row stride WS ("stride-WS layout": z[f, oy*WS + ox], columns
# ox >= OW are don't-cares, zero in gradients).  Then a tap (c, i, j) of the
# convolution is one long contiguous loop over a whole plane,
#     z[f, q] += w[f, c, i, j] * xp[c, i*WS + j + q]      q in [0, OH*WS)
# which LLVM vectorises without remainder work (Numba has no register tiles, and
# row-by-row loops of 10 or 28 elements would mostly run scalar).  dW is the same
# loop as a dot product, and dx a GEMM on the stride-WS layout followed by the same
# shifted adds into padded dx planes.  Plane loops run over M = OH*WS rounded up to
# 16 (whole vectors, no scalar remainder); padded planes carry WS + 16 elements of
# slack at the end for the shifted reads of the last row.


#: its layouts round to 16 lanes (LLVM vectorises the loops for the CPU): the plans' width
LANES = 16


@njit(**_SERIAL)
def _round16(v):
    return (v + 15) // 16 * 16


@njit(**_SERIAL)
def _pad_into(xs, pad, ws, xp):
    """xs (C, H, W) -> the interior of the flat padded planes xp (C, HS*WS + WS + 16)."""
    c_, h, w = xs.shape
    for c in range(c_):
        for y in range(h):
            row = (y + pad) * ws + pad
            for x in range(w):
                xp[c, row + x] = xs[c, y, x]


@njit(**_SERIAL)
def _conv_planes(xp, w, b, kh, kw, ws, z):
    """z (F, M) = b + conv(xp), stride-WS layout (M >= OH*WS)."""
    f_, c_ = w.shape[0], w.shape[1]
    m = z.shape[1]
    for fi in range(f_):
        zf = z[fi]
        zf[:] = b[fi]
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    wv = w[fi, c, i, j]
                    src = xp[c, i * ws + j:i * ws + j + m]
                    for q in range(m):
                        zf[q] += wv * src[q]


# Narrow rows with many filters (LeNet C3: 10 columns, 16 filters): a plane loop of
# OH*WS elements is too short to amortise its set-up for every (filter, tap), so the
# filters go along the lanes instead.  The input is expanded to Fq = round16(F)
# lanes per pixel, xe[c, y, x*Fq + f] = xp[c, y, x], and the weights tiled OW times,
# wt[tap, ox*Fq + f] = w[f, tap]; then one output row of every filter is one loop
#     z[oy, ox*Fq + f] += xe[c, oy + i, (ox + j)*Fq + f] * wt[tap, ox*Fq + f]
# over OW*Fq elements, and dW one loop over KW*Fq elements per pixel.  The layout
# rule is the Cython backend's: whichever of filters and columns fills more lanes.

@njit(**_SERIAL)
def _expand_lanes(xp, hs, ws, fq, xe):
    """xe[c, y, x*Fq + f] = xp[c, y*WS + x] for every lane f < Fq (xp flat planes)."""
    c_ = xe.shape[0]
    for c in range(c_):
        for y in range(hs):
            for x in range(ws):
                v = xp[c, y * ws + x]
                for f in range(fq):
                    xe[c, y, x * fq + f] = v


@njit(**_SERIAL)
def _tiled_weights(w, b, ow, fq):
    """wt (K, OW*Fq) and bt (OW*Fq,): weights and bias repeated for each output column."""
    f_, c_, kh, kw = w.shape
    wt = np.zeros((c_ * kh * kw, ow * fq), dtype=w.dtype)
    bt = np.zeros(ow * fq, dtype=w.dtype)
    for ox in range(ow):
        for fi in range(f_):
            bt[ox * fq + fi] = b[fi]
            t = 0
            for c in range(c_):
                for i in range(kh):
                    for j in range(kw):
                        wt[t, ox * fq + fi] = w[fi, c, i, j]
                        t += 1
    return wt, bt


@njit(**_SERIAL)
def _conv_filter_lanes(xe, wt, bt, kh, kw, fq, z):
    """z (OH, OW*Fq) = bt + conv, filters along the lanes."""
    c_ = xe.shape[0]
    oh, m = z.shape[0], z.shape[1]
    for oy in range(oh):
        z[oy] = bt
    t = 0
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                wr = wt[t]
                t += 1
                for oy in range(oh):
                    zr = z[oy]
                    xr = xe[c, oy + i, j * fq:j * fq + m]
                    for q in range(m):
                        zr[q] += xr[q] * wr[q]


@njit(**_SERIAL)
def _dw_filter_lanes(xe, dzt, kh, kw, fq, s, oh, ow, dwt):
    """dwt[c*KH + i, j*Fq + f] += sum_{oy,ox} xe[c, oy*s + i, (ox*s + j)*Fq + f] * dzt[oy*OW + ox, j*Fq + f]
    (dzt: dz transposed, its Fq lanes repeated KW times; s the stride)."""
    c_ = xe.shape[0]
    m = kw * fq
    for c in range(c_):
        for i in range(kh):
            row = dwt[c * kh + i]
            for oy in range(oh):
                for ox in range(ow):
                    xr = xe[c, oy * s + i, ox * s * fq:ox * s * fq + m]
                    dr = dzt[oy * ow + ox]
                    for q in range(m):
                        row[q] += xr[q] * dr[q]


@njit(**_SERIAL)
def _dw_planes(xp, dz, kh, kw, ws, dw):
    """dw (F, C, KH, KW) += sum_q dz[f, q] * xp[c, i*WS + j + q] (dz stride-WS, zero
    past OW in each row)."""
    f_, c_ = dw.shape[0], dw.shape[1]
    m = dz.shape[1]
    for fi in range(f_):
        g = dz[fi]
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    src = xp[c, i * ws + j:i * ws + j + m]
                    acc = g[0] * 0
                    for q in range(m):
                        acc += g[q] * src[q]
                    dw[fi, c, i, j] += acc


@njit(**_SERIAL)
def _col2im_planes(dcols, kh, kw, ws, dxp):
    """dxp[c, i*WS + j + q] += dcols[(c, i, j), q]: col2im in the stride-WS layout
    (dcols is zero in the don't-care columns, so they add nothing)."""
    c_ = dxp.shape[0]
    m = dcols.shape[1]
    r = 0
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                dst = dxp[c, i * ws + j:i * ws + j + m]
                src = dcols[r]
                r += 1
                for q in range(m):
                    dst[q] += src[q]


# --------------------------------------------------------------------------- convolution
# Numba runs the plans of fastlenet.kernels.plan, the Cython backend's, path for path
# (the register-tile variants tile_f8 / tile_f6 / after_conv[_2x2] are one generic ReLU +
# pool over the conv output here: Numba has no register tiles).  Plan codes are the
# positions in plan.FORWARD, POOL, POOL_GRAD, DW, DX.  Like Cython, the batch is cut
# into blocks of SB samples that the threads take; each block accumulates dW/db into
# its own partial and the partials are summed in block order, so results do not
# depend on the thread count.  Workspaces are one per thread, allocated before the
# parallel loop and picked by numba.get_thread_id().
SB = 16                                  # samples per block (Cython's SB)
# the plan's path codes (positions in plan.FORWARD, POOL, DW, DX): constants in the kernels
FWD_IM2COL_GEMM = plan.FORWARD.index("im2col_gemm")
FWD_DIRECT_FILTER_LANES = plan.FORWARD.index("direct_filter_lanes")
DW_GEMM_IM2COL, DW_GEMM_IM2ROW, DW_DIRECT_FILTER_LANES, DW_DIRECT_COLUMN_LANES = (
    plan.DW.index(name) for name in ("gemm_im2col", "gemm_im2row", "direct_filter_lanes", "direct_column_lanes"))
DX_COL2IM_S1 = plan.DX.index("col2im_s1")


#: the most taps (C*KH*KW) this backend's filter-lanes forward takes (plan.conv2d's
#: max_flanes_k).  Measured 2026-12-06 (AMD EPYC Zen 4, 2 threads, float32, medians of 7,
#: ms, direct / im2col_gemm / filter lanes; `python -m benchmarks.forward_shapes numba
#: --every-path`): LeNet C3 (K 150) 3.07 / 3.81 / 2.55; K 288
#: (3x3, 32 -> 64, 16x16) 19.99 / 20.46 / 28.84; K 400 (5x5 pad 2, 16 -> 32) 14.59 / 16.38
#: / 20.59; K 576 (64 -> 64, 8x8) - / 9.45 / 14.47; K 1152 - / 16.59 / 36.29.  Its layout
#: (the input expanded per filter lane) loses once the taps outgrow the caches, unlike
#: the Cython kernel's (MAX_FLANES_K)
MAX_FLANES_K = 256


def _codes(x, w, stride, pad, pool=None):
    return plan.conv2d(x.shape, w.shape, stride, pad, pool, LANES, MAX_FLANES_K).codes


def _conv2d_forward_impl(x, w, b, stride, pad, oh, ow):
    """y (N, F, OH, OW) = conv(x) on the plan's forward path."""
    fwd, pool, _, _, _ = _codes(x, w, stride, pad)
    y, _ = _conv_forward_kernel(x, w, b, stride, pad, oh, ow, 0, 1, fwd, pool, numba.get_num_threads())
    return y


def _conv2d_relu_maxpool_forward_impl(x, w, b, stride, pad, oh, ow, size, pool_stride):
    """maxpool(relu(conv(x))) without materialising the conv output -> (y, arg)."""
    fwd, pool, _, _, _ = _codes(x, w, stride, pad, (size, pool_stride))
    return _conv_forward_kernel(x, w, b, stride, pad, oh, ow, size, pool_stride, fwd, pool,
                                numba.get_num_threads())


@njit(**_SERIAL)
def _conv_one(xs, wm, w, b, wt, bt, stride, pad, oh, ow, fwd, lanes, cols, xp, xe, z):
    """The conv output of one sample in z, by the plan's forward path; returns its layout
    (fs, rs, cs): value (f, oy, ox) at z.flat[f*fs + oy*rs + ox*cs]."""
    f_, _, kh, kw = w.shape
    if fwd == FWD_IM2COL_GEMM:                   # im2col + GEMM: z (F, L)
        _im2col_one(xs, kh, kw, stride, pad, oh, ow, cols)
        zz = z.reshape(z.size)[:f_ * oh * ow].reshape(f_, oh * ow)
        _gemm(wm, cols, b, zz)
        return oh * ow, ow, 1
    ws = xs.shape[2] + 2 * pad
    _pad_into(xs, pad, ws, xp)
    if lanes:                                    # filters along the lanes: z (OH, OW*Fq)
        fq = _round16(f_)
        _expand_lanes(xp, xs.shape[1] + 2 * pad, ws, fq, xe)
        zz = z.reshape(z.size)[:oh * ow * fq].reshape(oh, ow * fq)
        _conv_filter_lanes(xe, wt, bt, kh, kw, fq, zz)
        return 1, ow * fq, fq
    m = _round16(oh * ws)                        # output columns along the lanes: z (F, M)
    zz = z.reshape(z.size)[:f_ * m].reshape(f_, m)
    _conv_planes(xp, w, b, kh, kw, ws, zz)
    return m, ws, 1


@njit(**_PARALLEL)
def _conv_forward_kernel(x, w, b, stride, pad, oh, ow, size, ps, fwd, pool, threads):
    n, c_, h, wd = x.shape
    f_, _, kh, kw = w.shape
    k, l_ = c_ * kh * kw, oh * ow
    hs, ws = h + 2 * pad, wd + 2 * pad
    lanes = fwd == FWD_DIRECT_FILTER_LANES      # the tile_filter_lanes pool runs on this forward
    fq = _round16(f_)
    ph = (oh - size) // ps + 1 if size else 1
    pw = (ow - size) // ps + 1 if size else 1
    y = np.empty((n, f_, ph, pw) if size else (n, f_, oh, ow), dtype=x.dtype)
    arg = np.empty((n, f_, ph, pw) if size else (1, 1, 1, 1), dtype=np.int32)
    wm = w.reshape(f_, k)
    wt, bt = _tiled_weights(w, b, ow, fq) if lanes else (wm, b)
    direct = fwd != FWD_IM2COL_GEMM
    cols = np.empty((threads, k, l_) if not direct else (threads, 1, 1), dtype=x.dtype)
    xp = np.zeros((threads, c_, hs * ws + ws + 16) if direct else (threads, 1, 1), dtype=x.dtype)
    xe = np.zeros((threads, c_, hs, ws * fq) if lanes else (threads, 1, 1, 1), dtype=x.dtype)
    zsize = max(f_ * _round16(oh * ws), oh * ow * fq, f_ * l_)
    z = np.empty((threads, zsize), dtype=x.dtype)
    for q in prange((n + SB - 1) // SB):
        t = numba.get_thread_id()
        for s_ in range(q * SB, min(n, (q + 1) * SB)):
            fs, rs, cs = _conv_one(x[s_], wm, w, b, wt, bt, stride, pad, oh, ow, fwd, lanes,
                                   cols[t], xp[t], xe[t], z[t])
            if size:
                _relu_maxpool(z[t], fs, rs, cs, ow, size, ps, y[s_], arg[s_])
            else:
                for fi in range(f_):
                    for oy in range(oh):
                        for ox in range(ow):
                            y[s_, fi, oy, ox] = z[t, fi * fs + oy * rs + ox * cs]
    return y, arg


def _conv2d_backward_impl(dy, x, w, stride, pad, need_dx):
    """(dx | None, dW, db) of the convolution, on the plan's dW and dx paths."""
    _, _, _, dw_path, dx_path = _codes(x, w, stride, pad)
    dx, dw, db = _conv_backward_kernel(dy, _NO_ARG, x, w, stride, pad, dy.shape[2], dy.shape[3],
                                       need_dx, False, dw_path, dx_path, numba.get_num_threads())
    return (dx if need_dx else None), dw, db


def _conv2d_relu_maxpool_backward_impl(dpy, arg, x, w, stride, pad, oh, ow, size, pool_stride, need_dx):
    """Gradients of the fused forward: the pooled gradient is routed to its argmax."""
    _, _, _, dw_path, dx_path = _codes(x, w, stride, pad, (size, pool_stride))
    dx, dw, db = _conv_backward_kernel(dpy, arg, x, w, stride, pad, oh, ow, need_dx, True,
                                       dw_path, dx_path, numba.get_num_threads())
    return (dx if need_dx else None), dw, db


_NO_ARG = np.zeros((1, 1, 1, 1), dtype=np.int32)


@njit(**_SERIAL)
def _conv_output_grad(g4, arg, s_, fused, dz, db):
    """dz (F, L) = the conv-output gradient of sample s_ (dy, or the pooled gradient routed
    to each window's max: 'route' and 'expand_2x2' alike); db (F,) += its sums."""
    f_, l_ = dz.shape
    if fused:
        dz[:] = 0
        a = arg[s_].reshape(f_, g4.shape[2])
        for fi in range(f_):
            for q in range(g4.shape[2]):
                if a[fi, q] >= 0:
                    dz[fi, a[fi, q]] += g4[s_, fi, q]
    else:
        dz[:] = g4[s_]
    for fi in range(f_):
        acc = dz[fi, 0] * 0
        for li in range(l_):
            acc += dz[fi, li]
        db[fi] += acc


@njit(**_SERIAL)
def _to_planes(dz, oh, ow, ws, dzp):
    """dzp (F, M) = dz (F, L) in the stride-WS layout (zero past OW in each row)."""
    dzp[:] = 0
    for fi in range(dz.shape[0]):
        for oy in range(oh):
            for ox in range(ow):
                dzp[fi, oy * ws + ox] = dz[fi, oy * ow + ox]


@njit(**_SERIAL)
def _dw_one(xs, dz, w, stride, pad, oh, ow, dw_path, ws_, dwb, dwtb, unused_db):
    """dW of one sample, by the plan's dW path, added to the block's partial:
    dwb (F, K) for the GEMM and column-lanes paths, dwtb (C*KH, KW*Fq) for filter lanes."""
    cols, rows, xp, xe, dzt, dzp = ws_
    f_, c_, kh, kw = w.shape
    hs, ws = xs.shape[1] + 2 * pad, xs.shape[2] + 2 * pad
    if dw_path == DW_GEMM_IM2COL:
        _im2col_one(xs, kh, kw, stride, pad, oh, ow, cols)
        _gemm_nt_acc(dz, cols, dwb, unused_db)
        return
    if dw_path == DW_GEMM_IM2ROW:
        _im2row_one(xs, kh, kw, stride, pad, oh, ow, rows)
        _gemm_acc(dz, rows, dwb)
        return
    _pad_into(xs, pad, ws, xp)
    if dw_path == DW_DIRECT_COLUMN_LANES:        # stride 1 (the plan's rule)
        _to_planes(dz, oh, ow, ws, dzp)
        _dw_planes(xp, dzp, kh, kw, ws, dwb.reshape(f_, c_, kh, kw))
        return
    fq = _round16(f_)                            # filter lanes, any stride
    _expand_lanes(xp, hs, ws, fq, xe)
    for li in range(oh * ow):                    # dz transposed, lanes repeated KW times
        for j in range(kw):
            for fi in range(f_):
                dzt[li, j * fq + fi] = dz[fi, li]
    _dw_filter_lanes(xe, dzt, kh, kw, fq, stride, oh, ow, dwtb)


@njit(**_SERIAL)
def _dx_one(dz, wtr, kh, kw, stride, pad, oh, ow, dx_path, dzp, dcols, dxp, dxs):
    """dx of one sample: dcols = W^T dz, folded by the plan's dx path into dxs (C, H, W)."""
    c_, h, wd = dxs.shape
    if dx_path == DX_COL2IM_S1:                  # in the stride-WS layout, then cropped
        ws = wd + 2 * pad
        _to_planes(dz, oh, ow, ws, dzp)
        _gemm(wtr, dzp, np.zeros(0, dtype=dz.dtype), dcols)
        dxp[:] = 0
        _col2im_planes(dcols, kh, kw, ws, dxp)
        for c in range(c_):
            for yy in range(h):
                row = (yy + pad) * ws + pad
                for xx in range(wd):
                    dxs[c, yy, xx] = dxp[c, row + xx]
        return
    _gemm(wtr, dz, np.zeros(0, dtype=dz.dtype), dcols)
    dxs[:] = 0
    _col2im_one(dcols, kh, kw, stride, pad, oh, ow, dxs)


@njit(**_SERIAL)
def _backward_workspaces(x, w, oh, ow, pad, dw_path, dx_path, need_dx, dtype):
    """One thread's workspaces of the plan's paths ((1, 1) where a path is not taken)."""
    _, c_, h, wd = x.shape
    f_, _, kh, kw = w.shape
    k, l_, hs, ws, fq = c_ * kh * kw, oh * ow, h + 2 * pad, wd + 2 * pad, _round16(f_)
    m = _round16(oh * ws)
    planes = dw_path == DW_DIRECT_COLUMN_LANES or (need_dx and dx_path == DX_COL2IM_S1)
    lanes = dw_path == DW_DIRECT_FILTER_LANES
    cols = np.empty((k, l_) if dw_path == DW_GEMM_IM2COL else (1, 1), dtype=dtype)
    rows = np.empty((l_, k) if dw_path == DW_GEMM_IM2ROW else (1, 1), dtype=dtype)
    xp = np.zeros((c_, hs * ws + ws + 16) if dw_path >= DW_DIRECT_FILTER_LANES else (1, 1), dtype=dtype)
    xe = np.zeros((c_, hs, ws * fq) if lanes else (1, 1, 1), dtype=dtype)
    dzt = np.zeros((l_, kw * fq) if lanes else (1, 1), dtype=dtype)
    dzp = np.zeros((f_, m) if planes else (1, 1), dtype=dtype)
    return cols, rows, xp, xe, dzt, dzp


@njit(**_PARALLEL)
def _conv_backward_kernel(grad, arg, x, w, stride, pad, oh, ow, need_dx, fused, dw_path, dx_path, threads):
    n, c_, h, wd = x.shape
    f_, _, kh, kw = w.shape
    k, l_, ws, fq = c_ * kh * kw, oh * ow, wd + 2 * pad, _round16(f_)
    blocks = (n + SB - 1) // SB
    wtr = np.ascontiguousarray(w.reshape(f_, k).T)       # (K, F) for dcols = W^T dz
    g4 = grad.reshape(n, f_, grad.shape[2] * grad.shape[3])
    lanes = dw_path == DW_DIRECT_FILTER_LANES
    dw_part = np.zeros((blocks, f_, k), dtype=x.dtype)
    dwt_part = np.zeros((blocks, c_ * kh, kw * fq) if lanes else (blocks, 1, 1), dtype=x.dtype)
    db_part = np.zeros((blocks, f_), dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)
    wss = [_backward_workspaces(x, w, oh, ow, pad, dw_path, dx_path, need_dx, x.dtype) for _ in range(threads)]
    dzs = np.empty((threads, f_, l_), dtype=x.dtype)
    width = _round16(oh * ws) if dx_path == DX_COL2IM_S1 else l_      # the plane or the compact layout
    dcols = np.empty((threads, k, width) if need_dx else (threads, 1, 1), dtype=x.dtype)
    dxps = np.zeros((threads, c_, (h + 2 * pad) * ws + ws + 16) if need_dx else (threads, 1, 1), dtype=x.dtype)
    unused_db = np.zeros((threads, f_), dtype=x.dtype)
    for q in prange(blocks):
        t = numba.get_thread_id()
        for s_ in range(q * SB, min(n, (q + 1) * SB)):
            _conv_output_grad(g4, arg, s_, fused, dzs[t], db_part[q])
            _dw_one(x[s_], dzs[t], w, stride, pad, oh, ow, dw_path, wss[t], dw_part[q], dwt_part[q], unused_db[t])
            if need_dx:
                _dx_one(dzs[t], wtr, kh, kw, stride, pad, oh, ow, dx_path, wss[t][5], dcols[t], dxps[t], dx[s_])
    return dx, _sum_blocks(dw_part, dwt_part, lanes, w.shape), _sum_rows(db_part)


@njit(**_SERIAL)
def _sum_rows(part):
    """part (B, ...) summed over B in block order (a result independent of the thread count)."""
    out = part[0].copy()
    for q in range(1, part.shape[0]):
        out += part[q]
    return out


@njit(**_SERIAL)
def _sum_blocks(dw_part, dwt_part, lanes, shape):
    """dW (F, C, KH, KW) from the block partials of the plan's dW layout."""
    f_, c_, kh, kw = shape
    dw = _sum_rows(dw_part).reshape(f_, c_, kh, kw)
    if lanes:
        dwt = _sum_rows(dwt_part)
        fq = dwt.shape[1] // kw
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for fi in range(f_):
                        dw[fi, c, i, j] += dwt[c * kh + i, j * fq + fi]
    return dw


@njit(**_SERIAL)
def _im2row_one(xs, kh, kw, s, p, oh, ow, rows):
    """rows (L, K) = im2col(xs) transposed: rows[oy*OW + ox, (c, i, j)] = xpad[c, oy*s + i, ox*s + j]."""
    c_, h, w = xs.shape
    for oy in range(oh):
        for ox in range(ow):
            r = rows[oy * ow + ox]
            t = 0
            for c in range(c_):
                for i in range(kh):
                    yy = oy * s + i - p
                    for j in range(kw):
                        xx = ox * s + j - p
                        r[t] = xs[c, yy, xx] if 0 <= yy < h and 0 <= xx < w else 0
                        t += 1


@njit(**_SERIAL)
def _gemm_acc(a, bm, out):
    """out (M, K) += a (M, L) @ bm (L, K); the inner loop runs over K (contiguous)."""
    m_, l_ = a.shape
    for mi in range(m_):
        o = out[mi]
        for li in range(l_):
            v = a[mi, li]
            src = bm[li]
            for ki in range(bm.shape[1]):
                o[ki] += v * src[ki]


# --------------------------------------------------------------------------- pooling
@njit(**_PARALLEL)
def _maxpool2d_forward_impl(x, size, stride, oh, ow):
    """y = window max, arg = flat h*W + w of the first max; parallel over (n, c) planes."""
    n, c, h, w = x.shape
    planes = x.reshape(n * c, h, w)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    arg = np.empty((n * c, oh, ow), dtype=np.int32)
    for q in prange(n * c):
        xp = planes[q]
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * stride, ox * stride
                best = xp[y0, x0]
                bi = y0 * w + x0
                for i in range(size):
                    for j in range(size):
                        v = xp[y0 + i, x0 + j]
                        if _takes(v, best):
                            best = v
                            bi = (y0 + i) * w + x0 + j
                y[q, oy, ox] = best
                arg[q, oy, ox] = bi
    return y.reshape(n, c, oh, ow), arg.reshape(n, c, oh, ow)


@njit(**_PARALLEL)
def _maxpool2d_backward_kernel(dy, arg, n, c, h, w):
    oh, ow = dy.shape[2], dy.shape[3]
    g = dy.reshape(n * c, oh * ow)
    a = arg.reshape(n * c, oh * ow)
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    for q in prange(n * c):                        # planes are independent: no races
        for o in range(oh * ow):
            dx[q, a[q, o]] += g[q, o]
    return dx.reshape(n, c, h, w)


def _maxpool2d_backward_impl(dy, arg, x_shape, size, stride):
    """dx[n, c].flat[arg] += dy (overlapping windows accumulate)."""
    n, c, h, w = x_shape
    return _maxpool2d_backward_kernel(dy, arg, n, c, h, w)


@njit(**_PARALLEL)
def _avgpool2d_forward_impl(x, size, stride, oh, ow):
    """y = mean of each size*size window."""
    n, c, h, w = x.shape
    planes = x.reshape(n * c, h, w)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    scale = 1.0 / (size * size)
    for q in prange(n * c):
        xp = planes[q]
        for oy in range(oh):
            for ox in range(ow):
                acc = 0.0
                for i in range(size):
                    for j in range(size):
                        acc += xp[oy * stride + i, ox * stride + j]
                y[q, oy, ox] = acc * scale
    return y.reshape(n, c, oh, ow)


@njit(**_PARALLEL)
def _avgpool2d_backward_kernel(dy, n, c, h, w, size, stride):
    oh, ow = dy.shape[2], dy.shape[3]
    g = dy.reshape(n * c, oh, ow)
    dx = np.zeros((n * c, h, w), dtype=dy.dtype)
    scale = 1.0 / (size * size)
    for q in prange(n * c):
        for oy in range(oh):
            for ox in range(ow):
                v = g[q, oy, ox] * scale
                for i in range(size):
                    for j in range(size):
                        dx[q, oy * stride + i, ox * stride + j] += v
    return dx.reshape(n, c, h, w)


def _avgpool2d_backward_impl(dy, x_shape, size, stride):
    """Each window tap receives dy / size^2."""
    n, c, h, w = x_shape
    return _avgpool2d_backward_kernel(dy, n, c, h, w, size, stride)


# --------------------------------------------------------------------------- dense, loss, Adam
# The fast paths of the layers, the loss and the optimizer (the contract: _fast.FastPaths).
# Each output row (or parameter block) is computed by one thread from start to end: no
# cross-thread reductions, so results do not depend on the thread count.
@njit(**_PARALLEL)
def _linear_forward_kernel(x, w, b, relu, y):
    """y (N, U) = x (N, D) @ w (D, U) + b (ReLU'd with relu); rows of y in parallel."""
    n, d = x.shape
    u = w.shape[1]
    for r in prange(n):
        row = y[r]
        for j in range(u):
            row[j] = b[j]
        for k in range(d):
            v = x[r, k]
            wk = w[k]
            for j in range(u):
                row[j] += v * wk[j]
        if relu:
            for j in range(u):
                if row[j] < 0:          # NaN stays NaN, like np.maximum
                    row[j] = 0


@njit(**_PARALLEL)
def _linear_backward_kernel(dy, x, w, y, relu, need_dx, dw, db, dx):
    """dy' = dy (where y > 0 with relu); dW = x^T dy', db = sum_n dy', dx = dy' w^T."""
    n, d = x.shape
    u = w.shape[1]
    g = np.empty((n, u), dtype=dy.dtype)
    for r in prange(n):
        for j in range(u):
            g[r, j] = dy[r, j] if (not relu or y[r, j] > 0) else 0
    xt = np.ascontiguousarray(x.T)      # (D, N): each dW row reads one contiguous row
    no_bias = np.zeros(0, dtype=dy.dtype)
    for q in prange((d + 15) // 16):    # dW = x^T dy' in blocks of 16 rows, one thread each:
        k0 = 16 * q                     # summed over n in order, no cross-thread reduction
        k1 = min(d, k0 + 16)
        _gemm(xt[k0:k1], g, no_bias, dw[k0:k1])
    for j in range(u):
        acc = g[0, j] * 0
        for r in range(n):
            acc += g[r, j]
        db[j] = acc
    if need_dx:                         # dx rows: dx[r] = sum_j dy'[r, j] w^T[j], over D lanes
        wt = np.ascontiguousarray(w.T)
        for r in prange(n):
            row = dx[r]
            row[:] = 0
            for j in range(u):
                v = g[r, j]
                wj = wt[j]
                for k in range(d):
                    row[k] += v * wj[k]


def _linear_forward(x, w, b, relu, out=None):
    y = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype) if out is None else out
    _linear_forward_kernel(x, w, b, bool(relu), y)
    return y


def _linear_backward(dy, x, w, y, relu, need_dx, dw, db, out=None):
    dx = None
    if need_dx:
        dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    _linear_backward_kernel(dy, x, w, y, bool(relu), bool(need_dx), dw, db,
                            dx if need_dx else np.empty((1, 1), dtype=x.dtype))
    return dx


@njit(**_PARALLEL)
def _adam_update(p, g, m, v, step_size, b1, b2, root_bc2, eps):
    """In place over flat (P,) arrays: the moments of g, then the bias-corrected step."""
    for i in prange(p.shape[0]):
        gi = g[i]
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / root_bc2 + eps)


@njit(**_SERIAL)
def _softmax_cross_entropy_kernel(logits, labels, smoothing, grad):
    """The loss of fastlenet/losses.py in one pass, in float64; -1.0 for a bad label."""
    n, k = logits.shape
    off = smoothing / k
    on = 1.0 - smoothing + off
    loss = 0.0
    e = np.empty(k, dtype=np.float64)
    for i in range(n):
        label = labels[i]
        if label < 0 or label >= k:
            return -1.0
        top = np.float64(logits[i, 0])
        for j in range(1, k):
            top = max(top, np.float64(logits[i, j]))
        total = 0.0
        shifted = 0.0
        for j in range(k):
            z = np.float64(logits[i, j]) - top
            shifted += z
            e[j] = np.exp(z)
            total += e[j]
        logsum = np.log(total)
        loss += -off * shifted - (on - off) * (np.float64(logits[i, label]) - top) + logsum
        for j in range(k):
            target = on if j == label else off
            grad[i, j] = (e[j] / total - target) / n
    return loss / n


def _softmax_cross_entropy(logits, labels, smoothing, out=None):
    grad = np.empty(logits.shape, dtype=logits.dtype) if out is None else out
    loss = _softmax_cross_entropy_kernel(logits, labels, float(smoothing), grad)
    if loss < 0:
        return None, None
    return loss, grad


# --------------------------------------------------------------------------- public API
#: the internal fast paths (see _fast.FastPaths)
FAST_PATHS = FastPaths(
    conv2d_relu_maxpool_forward=writing_into(_conv2d_relu_maxpool_forward_impl, "out", "arg_out"),
    conv2d_relu_maxpool_backward=writing_into(_conv2d_relu_maxpool_backward_impl, "out", "dw_out",
                                              "db_out"),
    linear_forward=_linear_forward,
    linear_backward=_linear_backward,
    adam_update=_adam_update,
    softmax_cross_entropy=_softmax_cross_entropy,
    batchnorm_stats=numba_norm.batchnorm_stats,
    batchnorm_relu_maxpool_forward=numba_norm.batchnorm_relu_maxpool_forward,
    batchnorm_relu_maxpool_backward=numba_norm.batchnorm_relu_maxpool_backward,
)

BACKEND = Backend("numba", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
