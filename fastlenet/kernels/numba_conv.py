"""The Numba backend's convolution: one serial kernel per plan path, run over blocks of
samples on T threads.

Dimension legend: N batch, C channels, H/W input height/width, F filters, KH/KW kernel
height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW, s stride, p pad,
HS/WS padded height/width, M = round16(OH*WS) (a conv-output plane in the stride-WS
layout), Fq = round16(F) (filters along the lanes), PH/PW pooled height/width,
SB samples per block (at most 16; fewer for small batches), T threads, B = ceil(N / SB)
blocks.

Each convolution runs the plan of ``fastlenet.kernels.plan`` with this backend's rules
(``PLAN_RULES``, "dots": its register tile is ``_numba_loops.gemm_nt``'s block of dot
products, 4 x 4 or 4 x 2 by the CPU's vector registers, so GEMM-shaped paths win more
often than in the Cython kernels; the pool variants are one ReLU + pool over the conv
output).  The batch is cut into blocks of SB samples
(``forward_samples``, ``backward_samples``: 16, or fewer when a small batch would leave
threads idle); ``_block_threads`` hands them to T threads; each block writes its own
outputs and its own dW/db partial, summed in block order at the end, so results do not
depend on the thread count.  A kernel allocates its workspaces itself, once per block, and does each
sample's work in a function of its own (``_sample_*``, ``_dw_sample_*``,
``_dx_sample_*``): how LLVM vectorised these loops depended on both (with the
workspaces passed in, the 3x3 32 -> 64 forward on 16x16 took 50 instead of 39 ms; with
the per-sample work inlined into the block loop, LeNet C3's took 7.3 instead of 5.1 ms;
1 thread each).

Every path is its own kernel (``forward_*``, then ``dw_*`` and ``dx_*`` below), so a
model compiles only the paths its layers take: a cold start compiles a few kernels,
not one parallel kernel holding every path (``python -m benchmarks.numba_compile``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit
from numba import uint64 as u64

from . import plan
from ._block_threads import run_blocks
from ._numba_loops import (LANES, col2im_one, col2im_planes, conv_filter_lanes, conv_planes, expand_lanes,
                           gemm_nt, im2col_one, pad_into, pad_nhwc, pool_slack_rows, relu_maxpool,
                           relu_maxpool_2x2, round16, row_offsets, rows_nhwc, tap_offsets, to_planes)
from ._numba_options import INLINE, SERIAL, ZERO

SB = 16                                  # samples per block (Cython's SB)
#: the backward passes dz from its dW kernel to its dx kernel at most this many bytes at
#: a time (a few samples of a large layer, whole blocks of LeNet's): bounded memory, and
#: about L2's size (128 KiB, one sample at a time on 3 -> 32 at 32x32, was slower)
DZ_BYTES = 1 << 20

#: the most taps (C*KH*KW) this backend's filter-lanes forward takes (plan.conv2d's
#: max_flanes_k).  Measured 2026-12-06 (AMD EPYC Zen 4, 2 threads, float32, medians of 7,
#: ms, direct / im2col_gemm / filter lanes; `python -m benchmarks.forward_shapes numba
#: --every-path`): LeNet C3 (K 150) 3.07 / 3.81 / 2.55; K 288
#: (3x3, 32 -> 64, 16x16) 19.99 / 20.46 / 28.84; K 400 (5x5 pad 2, 16 -> 32) 14.59 / 16.38
#: / 20.59; K 576 (64 -> 64, 8x8) - / 9.45 / 14.47; K 1152 - / 16.59 / 36.29.  Its layout
#: (the input expanded per filter lane) loses once the taps outgrow the caches, unlike
#: the Cython kernel's (plan.MAX_FLANES_K)
MAX_FLANES_K = 256
#: this backend's plan rules (plan.RULES): its register tiles are dot products
#: (_numba_loops.gemm_nt).  Measured 2026-12-06 (AMD EPYC Zen 4, 1 thread, CPU ms, scratch
#: loops forcing each path on the shape suite's layers, batch 128, 5x5 64, C3 256).
#: Forward, im2col_gemm (im2row channels last + gemm_nt) / direct / filter lanes: 3 -> 32
#: on 32x32 (K 27) 13.1 / 8.8 / 13.9; 3x3 32 -> 64 on 16x16 20.3 / 38.5 / 55.9; 64 -> 64
#: on 8x8 9.0 / 29.9 / 30.1; 1x1 64 -> 128 15.2 / 18.1 / 42.2; 5x5 pad 2 16 -> 32 18.4 /
#: 28.6 / 43.4; LeNet C3 (K 150) 4.6 / 5.7 / 5.0.  dW + db, filter lanes / im2col + GEMM /
#: planes: 3 -> 32 18.7 / 6.4 / 5.4; 32 -> 64 51.2 / 23.6 / 17.0; 64 -> 64 26.3 / 17.3 /
#: 13.2; 1x1 45.6 / 10.4 / 10.0; 5x5 38.7 / 23.7 / 11.8; C3 8.3 / 7.5 / 3.0; stride 2
#: (32 -> 64 on 32x32): filter lanes 70.6, im2col + GEMM 23.4
PLAN_RULES = "dots"


def conv_plan(x_shape, w_shape, stride, pad, pool=None) -> plan.ConvPlan:
    """The plan this backend runs for the geometry (its lanes, filter-lanes crossover and rules)."""
    return plan.conv2d(x_shape, w_shape, stride, pad, pool, LANES, MAX_FLANES_K, PLAN_RULES)


def _block_range(q: int, n: int, sb: int):
    return q * sb, min(n, (q + 1) * sb)


#: the backward cuts a batch into at least this many blocks (while they keep a sample
#: each): enough for up to 8 threads, whatever the thread count (see backward_samples)
MIN_BLOCKS = 8


def backward_samples(n: int) -> int:
    """Samples per block of the backward: SB, or fewer so that a batch smaller than
    MIN_BLOCKS * SB still makes MIN_BLOCKS blocks (batch 16 was one block: one thread).  The
    dW/db partials are summed per block, so the blocks depend on N alone, never on the
    thread count: the same bits on any number of threads."""
    return min(SB, max(1, -(-n // MIN_BLOCKS)))


def forward_samples(n: int, threads: int) -> int:
    """Samples per block of the forward: SB, or fewer when blocks of SB would leave threads
    idle (a batch of 16 on 2 threads was one block: one thread).  Each sample's output is
    the same whoever computes it, so unlike the backward's partial sums the forward may
    cut the batch by the thread count."""
    return SB if n >= SB * threads else max(1, -(-n // threads))


# --------------------------------------------------------------------------- forward
@njit(**INLINE)
def _emit(z, fs, rs, cs, ow, size, ps, ys, args):
    """One sample's output from its conv output, value (f, oy, ox) at z.flat[f*fs + oy*rs + ox*cs]:
    maxpool(relu(.)) into ys (F, PH, PW) and its argmax into args when size > 0, else
    the conv output itself into ys (F, OH, OW)."""
    zf = z.reshape(z.size)
    if size == 2 and ps == 2:
        relu_maxpool_2x2(zf, fs, rs, cs, ow, ys, args)
        return
    if size:
        relu_maxpool(zf, fs, rs, cs, ow, size, ps, ys, args)
        return
    f_, oh, ow_ = ys.shape
    for fi in range(f_):
        for oy in range(oh):
            row = fi * fs + oy * rs
            if cs == 1:                    # contiguous rows (unsigned indices: see numba_pool)
                for ox in range(ow_):
                    ys[fi, oy, ox] = zf[u64(row + ox)]
            else:
                for ox in range(ow_):
                    ys[fi, oy, ox] = zf[u64(row + ox * cs)]


@njit(**INLINE)
def _sample_im2col_gemm(xs, h, w, wk, b, kh, kw, s, p, oh, ow, xn, rows, offs, z):
    """One sample xs (C, H*W): xn (HS*WS, C) padded channels last, rows (L, Kp) its
    windows (im2row), z (F, L) = b + wk (F, Kp) @ rows^T."""
    ws = w + 2 * p
    pad_nhwc(xs, h, w, p, p, ws, xn)
    rows_nhwc(xn, kh, kw, s, ws, oh, ow, rows)
    for fi in range(b.shape[0]):                       # z's rows past F: the pool's slack
        for li in range(z.shape[1]):
            z[fi, li] = b[fi]
    gemm_nt(wk, rows.ravel(), offs, z)


@njit(**SERIAL)
def forward_im2col_gemm(x3, h, w, wk, b, kh, kw, s, p, oh, ow, size, ps, lo, hi, y, arg):
    """Samples lo..hi of y by im2row (channels last) + the register-tiled GEMM (any
    geometry); x3 (N, C, H*W) the input, wk (F, Kp) the weights in (i, j, c) order, zero
    past K (nhwc_weights)."""
    c_, f_ = x3.shape[1], wk.shape[0]
    hs, ws = h + 2 * p, w + 2 * p
    xn = np.zeros((hs * ws, c_), dtype=x3.dtype)
    rows = np.zeros((oh * ow, wk.shape[1]), dtype=x3.dtype)
    offs = row_offsets(oh * ow, wk.shape[1])
    z = np.empty((f_ + pool_slack_rows(oh * ow, ow, size, ps), oh * ow), dtype=x3.dtype)
    for n_ in range(lo, hi):
        _sample_im2col_gemm(x3[n_], h, w, wk, b, kh, kw, s, p, oh, ow, xn, rows, offs, z)
        _emit(z, oh * ow, ow, 1, ow, size, ps, y[n_], arg[n_])


def _lane_padded(m):
    """m (R, K) copied into zeros (R, round_up(K, LANES)): whole vectors for gemm_nt."""
    out = np.zeros((m.shape[0], plan.round_up(m.shape[1], LANES)), dtype=m.dtype)
    out[:, :m.shape[1]] = m
    return out


def nhwc_weights(w):
    """wk (F, Kp): w (F, C, KH, KW) in (i, j, c) order, K = C*KH*KW rounded up to 16 lanes
    with zeros (the rows of rows_nhwc); NumPy, once per call."""
    return _lane_padded(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


@njit(**INLINE)
def _sample_direct(xs, wm, b, p, ws, offs, xp, z):
    """One sample xs (C, H, W), stride 1: its padded planes xp (C, HS*WS + WS + 16),
    z (F8, M) = b + conv in the stride-WS layout (wm (F8, K) the weights padded to whole
    groups of 8 filters, offs their taps)."""
    pad_into(xs, p, ws, xp)
    conv_planes(xp, wm, b, offs, z)


@njit(**SERIAL)
def forward_direct(x, w, b, p, oh, ow, size, ps, lo, hi, y, arg):
    """Samples lo..hi of y by the direct conv, output columns along the lanes (stride 1)."""
    f_, c_, kh, kw = w.shape
    hs, ws = x.shape[2] + 2 * p, x.shape[3] + 2 * p
    xp = np.zeros((c_, hs * ws + ws + 16), dtype=x.dtype)
    offs = tap_offsets(c_, kh, kw, xp.shape[1], ws)
    f8, k = (f_ + 7) // 8 * 8, c_ * kh * kw             # conv_planes' filters: whole groups of 8
    wm, b8 = np.zeros((f8, k), dtype=x.dtype), np.zeros(f8, dtype=x.dtype)
    w2 = w.reshape(f_, k)
    for fi in range(f_):
        b8[fi] = b[fi]
        for t in range(k):
            wm[fi, t] = w2[fi, t]
    z = np.empty((f8 + pool_slack_rows(round16(oh * ws), ow, size, ps), round16(oh * ws)), dtype=x.dtype)
    for n_ in range(lo, hi):
        _sample_direct(x[n_], wm, b8, p, ws, offs, xp, z)
        _emit(z, z.shape[1], ws, 1, ow, size, ps, y[n_], arg[n_])


@njit(**SERIAL)
def _sample_filter_lanes(xs, wt, bt, kh, kw, p, xp, xe, z):
    """One sample xs (C, H, W), stride 1: xe (C, HS, WS*Fq) its padded input per filter lane,
    z (OH, OW*Fq) = bt + conv with the filters along the lanes."""
    hs, ws = xs.shape[1] + 2 * p, xs.shape[2] + 2 * p
    fq = xe.shape[2] // ws
    pad_into(xs, p, ws, xp)
    expand_lanes(xp, hs, ws, fq, xe)
    conv_filter_lanes(xe, wt, bt, kh, kw, fq, z)


@njit(**SERIAL)
def forward_filter_lanes(x, w, wt, bt, p, oh, ow, size, ps, lo, hi, y, arg):
    """Samples lo..hi of y by the direct conv, filters along the lanes (stride 1); wt, bt:
    the weights and bias tiled for it (tiled_weights)."""
    f_, c_, kh, kw = w.shape
    hs, ws = x.shape[2] + 2 * p, x.shape[3] + 2 * p
    fq = round16(f_)
    xp = np.zeros((c_, hs * ws + ws + 16), dtype=x.dtype)
    xe = np.empty((c_, hs, ws * fq), dtype=x.dtype)            # expand_lanes writes all of it
    z = np.empty((oh, ow * fq), dtype=x.dtype)
    for n_ in range(lo, hi):
        _sample_filter_lanes(x[n_], wt, bt, kh, kw, p, xp, xe, z)
        _emit(z, 1, ow * fq, fq, ow, size, ps, y[n_], arg[n_])


def tiled_weights(w, b, ow, fq):
    """wt (K, OW*Fq) and bt (OW*Fq,): the weights and bias repeated for each output column,
    wt[tap, ox*Fq + f] = w[f, tap] (zero in the lanes past F); NumPy, once per call."""
    f_, k = w.shape[0], w[0].size
    wt = np.zeros((k, ow, fq), dtype=w.dtype)
    wt[:, :, :f_] = w.reshape(f_, k).T[:, None, :]
    bt = np.zeros((ow, fq), dtype=w.dtype)
    bt[:, :f_] = b
    return wt.reshape(k, ow * fq), bt.reshape(ow * fq)


#: plan paths only the Cython build has (the "lanes" rules; PLAN_RULES never plans them here):
#: its forward paths, and its dx paths (this backend has a gemm_1x1 dx of its own: the
#: direct forward's plane passes over dz, _dx_block)
CYTHON_ONLY = ("gemm_1x1", "winograd_f2x2_3x3", "winograd_f2x2_5x5")
CYTHON_ONLY_DX = ("winograd_f2x2_3x3", "winograd_f2x2_5x5")


def _forward_block(path, x, w, b, stride, pad, oh, ow, size, ps, y, arg):
    """run(lo, hi): the forward path's kernel on samples lo..hi."""
    if path in CYTHON_ONLY:
        raise ValueError(f"forward {path!r} is a Cython path (\"lanes\" plan rules), not built in this backend")
    if path == "im2col_gemm":
        (n, c_, h, wd), (kh, kw) = x.shape, w.shape[2:]
        x3, wk = x.reshape(n, c_, h * wd), nhwc_weights(w)
        return lambda lo, hi: forward_im2col_gemm(x3, h, wd, wk, b, kh, kw, stride, pad, oh, ow, size, ps,
                                                  lo, hi, y, arg)
    if path == "direct":
        return lambda lo, hi: forward_direct(x, w, b, pad, oh, ow, size, ps, lo, hi, y, arg)
    wt, bt = tiled_weights(w, b, ow, plan.round_up(w.shape[0], LANES))
    return lambda lo, hi: forward_filter_lanes(x, w, wt, bt, pad, oh, ow, size, ps, lo, hi, y, arg)


@njit(**SERIAL)
def relu_samples(y, lo, hi):
    """y[lo:hi] = max(y[lo:hi], 0) in place (NaN stays NaN, like np.maximum)."""
    for n_ in range(lo, hi):
        flat = y[n_].ravel()
        for i in range(flat.size):
            if flat[i] < 0:
                flat[i] = 0


@njit(**SERIAL)
def relu_masked_samples(dy, y, lo, hi, out):
    """out[lo:hi] = dy[lo:hi] where y[lo:hi] > 0, else 0."""
    for n_ in range(lo, hi):
        d, v, o = dy[n_].ravel(), y[n_].ravel(), out[n_].ravel()
        for i in range(o.size):
            o[i] = d[i] if v[i] > 0 else ZERO


def conv_forward(x, w, b, stride, pad, oh, ow, size=0, ps=1, path=None, relu=False):
    """(y, arg): y (N, F, OH, OW) = conv(x) + b (its ReLU with ``relu``, applied to each block
    of samples while in cache), or with size > 0 y (N, F, PH, PW) = maxpool(relu(conv(x) + b))
    and arg (N, F, PH, PW) = oy*OW + ox of each window's first max (-1 where it is <= 0);
    arg is (N, 1, 1, 1) and unused without the pool.
    ``path`` forces a forward path (plan.FORWARD; the direct ones need stride 1), as the
    crossover benchmarks do; by default the plan's."""
    n, f_ = x.shape[0], w.shape[0]
    path = path or conv_plan(x.shape, w.shape, stride, pad, (size, ps) if size else None).forward
    if size:
        ph, pw = (oh - size) // ps + 1, (ow - size) // ps + 1
        y = np.empty((n, f_, ph, pw), dtype=x.dtype)
        arg = np.empty((n, f_, ph, pw), dtype=np.int32)
    else:
        y = np.empty((n, f_, oh, ow), dtype=x.dtype)
        arg = np.empty((n, 1, 1, 1), dtype=np.int32)
    conv = _forward_block(path, x, w, b, stride, pad, oh, ow, size, ps, y, arg)
    run = conv if not relu or size else (lambda lo, hi: (conv(lo, hi), relu_samples(y, lo, hi)))
    threads = numba.get_num_threads()
    sb = forward_samples(n, threads)
    run_blocks(lambda q, t: run(*_block_range(q, n, sb)), -(-n // sb), threads)
    return y, arg


def relu_masked(dy, y):
    """dy (N, F, OH, OW) where the forward's ReLU output y > 0, else 0 (a new array)."""
    out, n = np.empty_like(dy), dy.shape[0]
    threads = numba.get_num_threads()
    sb = forward_samples(n, threads)
    run_blocks(lambda q, t: relu_masked_samples(dy, y, *_block_range(q, n, sb), out), -(-n // sb), threads)
    return out


# --------------------------------------------------------------------------- backward
@njit(**INLINE)
def _block_output_grads(g4, arg, fused, l_, lo, hi, db):
    """dzb (hi - lo, F, L): the conv-output gradient of samples lo..hi (L outputs each):
    g4[lo:hi] itself (a view, no copy), or with ``fused`` the pooled gradient g4[n]
    (F, PH*PW) routed to each window's max (arg); db (F,) += its sums."""
    f_ = g4.shape[1]
    if fused:
        dzb = np.zeros((hi - lo, f_, l_), dtype=g4.dtype)
        for n_ in range(lo, hi):
            a = arg[n_].reshape(f_, g4.shape[2])
            for fi in range(f_):
                for q in range(g4.shape[2]):
                    if a[fi, q] >= 0:
                        dzb[n_ - lo, fi, a[fi, q]] += g4[n_, fi, q]
    else:
        dzb = g4[lo:hi]
    for i in range(hi - lo):
        for fi in range(f_):
            acc = ZERO
            for li in range(l_):
                acc += dzb[i, fi, li]
            db[fi] += acc
    return dzb


@njit(**SERIAL)
def _dw_sample_im2col(xs, dz, kh, kw, s, p, oh, ow, cols, offs, acc):
    """acc (F, K) += dz (F, L) @ im2col(xs) (K, L)^T for one sample (offs: cols' rows)."""
    im2col_one(xs, kh, kw, s, p, oh, ow, cols)
    gemm_nt(dz, cols.ravel(), offs, acc)


@njit(**SERIAL)
def dw_gemm_im2col(g4, arg, fused, x, kh, kw, s, p, oh, ow, lo, hi, dw, db):
    """Samples lo..hi: dz (F, L) of each, dw (F, K) += dz @ im2col (K, L)^T, db += row sums of dz;
    returns the block's dz (hi - lo, F, L)."""
    dzb = _block_output_grads(g4, arg, fused, oh * ow, lo, hi, db)
    cols = np.empty((dw.shape[1], oh * ow), dtype=x.dtype)
    offs = row_offsets(dw.shape[1], oh * ow)
    acc = np.zeros(dw.shape, dtype=x.dtype)
    for n_ in range(lo, hi):
        _dw_sample_im2col(x[n_], dzb[n_ - lo], kh, kw, s, p, oh, ow, cols, offs, acc)
    _add_into(acc, dw)
    return dzb


@njit(**INLINE)
def _dw_sample_column_lanes(xs, dz, p, oh, ow, xp, offs, dzp, dw):
    """dw (F, C*KH*KW) += dot products of dz (F, L), laid out in the stride-WS planes dzp
    (F, M), with the padded planes xp of one sample xs (stride 1; offs its taps)."""
    ws = xs.shape[2] + 2 * p
    pad_into(xs, p, ws, xp)
    to_planes(dz, oh, ow, ws, dzp)
    gemm_nt(dzp, xp.ravel(), offs, dw)                 # 4 filters x 4 (or 2) taps per tile


@njit(**SERIAL)
def dw_direct_column_lanes(g4, arg, fused, x, kh, kw, p, oh, ow, lo, hi, dw4, db):
    """Samples lo..hi, stride 1: dz of each, dw4 (F, C, KH, KW) += dW with the output columns
    along the lanes, db += row sums of dz; returns the block's dz (hi - lo, F, L)."""
    dzb = _block_output_grads(g4, arg, fused, oh * ow, lo, hi, db)
    f_, c_ = dw4.shape[0], dw4.shape[1]
    hs, ws = x.shape[2] + 2 * p, x.shape[3] + 2 * p
    xp = np.zeros((c_, hs * ws + ws + 16), dtype=x.dtype)
    offs = tap_offsets(c_, kh, kw, xp.shape[1], ws)
    dzp = np.empty((f_, round16(oh * ws)), dtype=x.dtype)
    dw = dw4.reshape(f_, c_ * kh * kw)
    for n_ in range(lo, hi):
        _dw_sample_column_lanes(x[n_], dzb[n_ - lo], p, oh, ow, xp, offs, dzp, dw)
    return dzb


@njit(**INLINE)
def _add_into(acc, out):
    """out (R, Q) += acc (R, Q)."""
    for r in range(acc.shape[0]):
        for q in range(acc.shape[1]):
            out[r, q] += acc[r, q]


@njit(**SERIAL)
def _dx_sample_s1(dz, wtr, kh, kw, p, oh, ow, dzp, offs, zeros, dcols, dxp, dxs):
    """dxs (C, H, W) of one sample, stride 1: dcols (K8, M) = wtr (K8, F) @ dz in the
    stride-WS layout (dzp), by the direct forward's plane passes (dz's F planes its taps,
    offs where they start: row_offsets; dcols_gemm), folded into the padded planes dxp with whole rows,
    then cropped."""
    c_, h, wd = dxs.shape
    ws = wd + 2 * p
    to_planes(dz, oh, ow, ws, dzp)
    conv_planes(dzp, wtr, zeros, offs, dcols)
    dxp[:] = 0
    col2im_planes(dcols, kh, kw, ws, dxp)
    for c in range(c_):
        for yy in range(h):
            row = (yy + p) * ws + p
            for xx in range(wd):
                dxs[c, yy, xx] = dxp[c, u64(row + xx)]


@njit(**SERIAL)
def dx_col2im_s1(dzb, wtr, kh, kw, p, oh, ow, lo, hi, dx):
    """dx[n] (C, H, W) of samples lo..hi, stride 1; wtr (K8, F) the weights transposed
    (dcols_weights)."""
    c_, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    hs, ws = h + 2 * p, wd + 2 * p
    m = round16(oh * ws)
    dzp = np.zeros((dzb.shape[1], m), dtype=dx.dtype)
    offs, zeros = row_offsets(dzb.shape[1], m), np.zeros(wtr.shape[0], dtype=dx.dtype)
    dcols = np.empty((wtr.shape[0], m), dtype=dx.dtype)
    dxp = np.empty((c_, hs * ws + ws + 16), dtype=dx.dtype)
    for n_ in range(lo, hi):
        _dx_sample_s1(dzb[n_ - lo], wtr, kh, kw, p, oh, ow, dzp, offs, zeros, dcols, dxp, dx[n_])


@njit(**INLINE)
def _dx_sample_flipped(dz, wf, kh, kw, p, oh, ow, h, w, dzn, rows, offs, dxs):
    """dxs (C, H*W) of one sample, stride 1: the full convolution of dz (F, L) with the
    flipped weights wf (C, Kp), by the forward's GEMM: dzn (HF*WF, F) dz channels last with
    KH-1 rows and KW-1 columns of zeros around it, rows (H*W, Kp) the window of each dx
    pixel, which starts p rows and columns into dzn."""
    wsf = ow + 2 * (kw - 1)
    pad_nhwc(dz, oh, ow, kh - 1, kw - 1, wsf, dzn)
    rows_nhwc(dzn[p * wsf + p:], kh, kw, 1, wsf, h, w, rows)
    for c in range(dxs.shape[0]):
        for q in range(dxs.shape[1]):
            dxs[c, q] = 0
    gemm_nt(wf, rows.ravel(), offs, dxs)


@njit(**SERIAL)
def dx_flipped_conv_s1(dzb, wf, kh, kw, p, oh, ow, lo, hi, dx3):
    """dx3[n] (C, H*W) of samples lo..hi, stride 1; wf (C, Kp) the flipped weights
    (flipped_weights)."""
    f_ = dzb.shape[1]
    h, w = (oh + kh - 1) - 2 * p, (ow + kw - 1) - 2 * p
    dzn = np.zeros(((oh + 2 * (kh - 1)) * (ow + 2 * (kw - 1)), f_), dtype=dx3.dtype)
    rows = np.zeros((h * w, wf.shape[1]), dtype=dx3.dtype)
    offs = row_offsets(h * w, wf.shape[1])
    for n_ in range(lo, hi):
        _dx_sample_flipped(dzb[n_ - lo], wf, kh, kw, p, oh, ow, h, w, dzn, rows, offs, dx3[n_])


def flipped_weights(w):
    """wf (C, Kp): wf[c, (i*KW + j)*F + f] = w[f, c, KH-1-i, KW-1-j], zero past K (the
    weights of dx as a convolution of dz); NumPy, once per call."""
    return _lane_padded(w[:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(w.shape[1], -1))


@njit(**SERIAL)
def _dx_sample(dz, wtr, kh, kw, s, p, oh, ow, offs, zeros, dcols, dxs):
    """dxs (C, H, W) of one sample, any stride: dcols (K8, L) = wtr (K8, F) @ dz by the plane
    passes (dcols_gemm), folded element by element."""
    conv_planes(dz, wtr, zeros, offs, dcols)
    dxs[:] = 0
    col2im_one(dcols, kh, kw, s, p, oh, ow, dxs)


@njit(**SERIAL)
def dx_col2im(dzb, wtr, kh, kw, s, p, oh, ow, lo, hi, dx):
    """dx[n] (C, H, W) of samples lo..hi, any stride; wtr (K8, F) (dcols_weights)."""
    dcols = np.empty((wtr.shape[0], oh * ow), dtype=dx.dtype)
    offs, zeros = row_offsets(dzb.shape[1], oh * ow), np.zeros(wtr.shape[0], dtype=dx.dtype)
    for n_ in range(lo, hi):
        _dx_sample(dzb[n_ - lo], wtr, kh, kw, s, p, oh, ow, offs, zeros, dcols, dx[n_])


def dcols_weights(w):
    """wtr (K8, F): w (F, C, KH, KW) transposed to (C*KH*KW, F), rows zero past K up to a
    multiple of 8 (conv_planes' filter groups: here dcols' rows); NumPy, once per call.
    dcols_gemm: dcols = wtr @ dz as the direct forward's plane passes, 4 rows x 4 of dz's
    planes per pass, where gemm's row updates (one row of dz a pass) loaded and stored
    dcols 4 times as often.  Measured 2026-12-07 (AMD EPYC Zen 3, AVX2, 1 thread, CPU ms,
    col2im_s1's dx, row updates / plane passes): LeNet C3 (batch 256) 6.80 / 5.16, 3 -> 32
    on 32x32 (batch 128) 9.66 / 5.58, 5x5 pad 2 16 -> 32 on 24x24 75.71 / 37.13, 32 -> 64 on
    16x16 44.03 / 21.14."""
    f_, k = w.shape[0], w[0].size
    out = np.zeros(((k + 7) // 8 * 8, f_), dtype=w.dtype)
    out[:k] = w.reshape(f_, k).T
    return out


def _dw_block(path, g4, arg, fused, x, w, stride, pad, oh, ow, dw_part, db_part):
    """run(q, lo, hi) -> dz of the block: the plan's dW path on block q (samples lo..hi)."""
    f_, c_, kh, kw = w.shape
    if path == "gemm_im2col":
        return lambda q, lo, hi: dw_gemm_im2col(g4, arg, fused, x, kh, kw, stride, pad, oh, ow, lo, hi,
                                                dw_part[q].reshape(f_, c_ * kh * kw), db_part[q])
    assert path == "direct_column_lanes", path           # PLAN_RULES plans no other
    return lambda q, lo, hi: dw_direct_column_lanes(g4, arg, fused, x, kh, kw, pad, oh, ow, lo, hi,
                                                    dw_part[q].reshape(f_, c_, kh, kw), db_part[q])


def _dx_block(path, x, w, stride, pad, oh, ow, dx):
    """run(lo, hi, dzb): the plan's dx path on samples lo..hi."""
    f_, c_, kh, kw = w.shape
    if path in CYTHON_ONLY_DX:
        raise ValueError(f"dx {path!r} is a Cython path (\"lanes\" plan rules), not built in this backend")
    if path == "gemm_1x1":                     # dx (C, L) = w^T (C, F) @ dz (F, L): dz's planes by w^T
        wt, zero = np.ascontiguousarray(w.transpose(1, 0, 2, 3)), np.zeros(c_, dtype=dx.dtype)
        no_arg = np.empty((dx.shape[0], 1, 1, 1), dtype=np.int32)
        return lambda lo, hi, dzb: forward_direct(dzb.reshape(hi - lo, f_, oh, ow), wt, zero, 0, oh, ow, 0, 1,
                                                  0, hi - lo, dx[lo:hi], no_arg)
    if path == "flipped_conv_s1":
        wf, dx3 = flipped_weights(w), dx.reshape(dx.shape[0], c_, -1)
        return lambda lo, hi, dzb: dx_flipped_conv_s1(dzb, wf, kh, kw, pad, oh, ow, lo, hi, dx3)
    wtr = dcols_weights(w)                                                 # (K8, F)
    if path == "col2im_s1":
        return lambda lo, hi, dzb: dx_col2im_s1(dzb, wtr, kh, kw, pad, oh, ow, lo, hi, dx)
    return lambda lo, hi, dzb: dx_col2im(dzb, wtr, kh, kw, stride, pad, oh, ow, lo, hi, dx)


def conv_backward(grad, arg, x, w, stride, pad, oh, ow, need_dx, fused, pool=None):
    """(dx | None, dW, db) of the convolution of x (N, C, H, W) by w (F, C, KH, KW):
    grad is dy (N, F, OH, OW), or with ``fused`` the pooled gradient (N, F, PH, PW) of
    maxpool(relu(conv)) with its argmax ``arg`` (``pool`` = (size, stride))."""
    n, c_ = x.shape[0], x.shape[1]
    f_, _, kh, kw = w.shape
    the_plan = conv_plan(x.shape, w.shape, stride, pad, pool)
    sb = backward_samples(n)
    blocks, dt = -(-n // sb), x.dtype
    dw_part = np.zeros((blocks, f_ * c_ * kh * kw), dtype=dt)
    db_part = np.zeros((blocks, f_), dtype=dt)
    dx = np.empty(x.shape, dtype=dt) if need_dx else None
    g4 = grad.reshape(n, f_, grad.shape[2] * grad.shape[3])
    dw_run = _dw_block(the_plan.dw, g4, arg, bool(fused), x, w, stride, pad, oh, ow, dw_part, db_part)
    dx_run = _dx_block(the_plan.dx, x, w, stride, pad, oh, ow, dx) if need_dx else None

    step = max(1, min(sb, DZ_BYTES // (f_ * oh * ow * x.itemsize)))      # samples per dW -> dx hand-over

    def run_block(q, t):
        start, end = _block_range(q, n, sb)
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            dzb = dw_run(q, lo, hi)
            if dx_run is not None:
                dx_run(lo, hi, dzb)

    run_blocks(run_block, blocks, numba.get_num_threads())
    # the block partials summed in block order (NumPy reduces axis 0 row after row)
    return dx, dw_part.sum(axis=0).reshape(w.shape), db_part.sum(axis=0)
