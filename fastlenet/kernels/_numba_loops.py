"""The Numba backend's serial loop nests: the per-sample pieces its convolution paths
are made of (im2col/col2im, the small GEMMs, the direct layouts, the channels-last
im2row, ReLU + max pool).

Its register tile is ``gemm_nt``'s block of dot products, 4 x 4 or 4 x 2 by the CPU's
vector registers (Numba has no SIMD types, and LLVM's loop vectoriser keeps accumulators
in registers only as reductions); the forward GEMM, dW at stride 1 and the flipped-conv
dx run on it.

Dimension legend: C channels, H/W input height/width, F filters, KH/KW kernel
height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW, s stride, p pad,
HS/WS padded height/width, M = round16(OH*WS) (a conv-output plane in the stride-WS
layout), Fq = round16(F) (filters along the lanes).

Every function works on one sample and compiles on its first call only (and is
cached).  They are plain index loops on purpose: array-to-array statements (``z[i] = b``,
``a += b``) make Numba compile its broadcasting machinery on first use, about 2 s of a
cold start (``python -m benchmarks.numba_compile`` shows where a cold start goes).
They are not inlined (``_numba_options.INLINE``) into the per-sample functions of
``numba_conv`` that call them: that saved 2 s of a cold start but LLVM vectorised
LeNet C1's and C3's forwards worse (1 thread: 6.5-6.9 instead of 5.5-5.9 ms).

Numba's cache is per source file: after editing this file, clear the cache
(``fastlenet/kernels/__pycache__/*.nbi``/``*.nbc``, or a fresh ``NUMBA_CACHE_DIR``),
or the kernels of ``numba_conv`` keep the code they were compiled with.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba import uint64 as u64

from ._numba_options import INLINE, SERIAL, VECTOR_LOOP_MIN, VREGS, ZERO, take_tap, takes


@njit(**SERIAL)
def valid_range(j, s, p, size, out_len):
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


@njit(**SERIAL)
def im2col_one(xs, kh, kw, s, p, oh, ow, cols):
    """xs (C, H, W) -> cols (K, L) for one sample."""
    c_, h, w = xs.shape
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                lo, hi = valid_range(j, s, p, w, ow)
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
                        cols[r, u64(base + ox)] = xs[c, yy, u64(ox * s + j - p)]
                    for ox in range(hi, ow):
                        cols[r, base + ox] = 0


@njit(**SERIAL)
def col2im_one(cols, kh, kw, s, p, oh, ow, xs):
    """xs (C, H, W) += fold(cols (K, L)) for one sample; xs must start zeroed."""
    c_, h, w = xs.shape
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                lo, hi = valid_range(j, s, p, w, ow)
                for oy in range(oh):
                    yy = oy * s + i - p
                    if yy < 0 or yy >= h:
                        continue
                    base = oy * ow
                    for ox in range(lo, hi):
                        xs[c, yy, u64(ox * s + j - p)] += cols[r, u64(base + ox)]


# --------------------------------------------------------------------------- small GEMMs
# gemm_nt: out (M, N) += a (M, K) @ b (N, K)^T, where row n of b is flat[offs[n]:offs[n] + K]:
# a plain matrix (offs[n] = n*K), or shifted windows of padded planes (dW's taps).
#
# Numba's register tiles: each block of ``out`` is a set of dot products summed in one
# pass over K, accumulators that LLVM keeps in vector registers (fast-math lets it split
# each sum across the lanes), no stores in the loop.  Row updates (one row of b a step)
# loaded and stored ``out`` at every step instead (single thread, 64 x 288 x 256, AVX-512:
# 92 against 33 GFLOP/s).  A last block of fewer rows (or columns) repeats its last one and stores
# only the real ones, as csrc/gemm.h does: single dot products there made dx of a
# 3-channel input 3x slower.  The block fits the CPU's vector registers (VREGS):
# - 32 (AVX-512): 4 x 4, 16 accumulators + 8 loaded vectors;
# - 16 (AVX2): 4 x 2, 8 accumulators + 6 loaded vectors.  The 4 x 4 tile kept 6 of its
#   16 accumulators on the stack there (a load and a store per multiply-add).  Measured
#   2026-12-07 (AMD EPYC Zen 3, AVX2, 1 thread, CPU time, best of 5 rounds, GFLOP/s, 4 x 4
#   / 4 x 2 / 2 x 4 / 3 x 3; scratch copies of the tile): 16 x 160 x 100 (C3's forward
#   GEMM) 41 / 58 / 47 / 53; 64 x 288 x 256 17 / 33 / 23 / 26; 64 x 576 x 64 23 / 33 / 28
#   / 27; 128 x 64 x 256 23 / 28 / 25 / 28; 6 x 784 x 25 32 / 53 / 59 / 64; 16 x 112 x
#   150 36 / 53 / 45 / 48.


@njit(**SERIAL)
def _gemm_nt_4x4(a, flat, offs, out):
    """gemm_nt in 4 x 4 blocks (32 vector registers), the last two rows in 2 x 8 blocks."""
    m_, k_ = a.shape
    n_ = offs.shape[0]
    m4 = m_ - 2 if m_ % 4 == 2 else m_                 # two rows left: _gemm_nt_2x8 takes them
    for m in range(0, m4, 4):
        a0, a1, a2, a3 = a[m], a[min(m + 1, m_ - 1)], a[min(m + 2, m_ - 1)], a[min(m + 3, m_ - 1)]
        for n in range(0, n_, 4):
            o0, o1, o2, o3 = offs[n], offs[min(n + 1, n_ - 1)], offs[min(n + 2, n_ - 1)], offs[min(n + 3, n_ - 1)]
            b0, b1, b2, b3 = flat[o0:o0 + k_], flat[o1:o1 + k_], flat[o2:o2 + k_], flat[o3:o3 + k_]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = ZERO
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = ZERO
            for k in range(k_):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3    # noqa: E702
                s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3    # noqa: E702
                s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3    # noqa: E702
                s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3    # noqa: E702
            _add_row4(out[m], n, n_, s00, s01, s02, s03)
            if m + 1 < m_:
                _add_row4(out[m + 1], n, n_, s10, s11, s12, s13)
            if m + 2 < m_:
                _add_row4(out[m + 2], n, n_, s20, s21, s22, s23)
            if m + 3 < m_:
                _add_row4(out[m + 3], n, n_, s30, s31, s32, s33)
    if m4 < m_:
        _gemm_nt_2x8(a[m4], a[m4 + 1], flat, offs, out[m4], out[m4 + 1])


@njit(**SERIAL)
def _gemm_nt_2x8(a0, a1, flat, offs, out0, out1):
    """out0/out1 (N,) += a0/a1 (K,) . row n of b (gemm_nt's b): the last two rows of a
    gemm_nt in 2 x 8 tiles, 16 dot products as the 4 x 4 tile (a 4 x 4 tile repeating a
    row would waste half of its: LeNet's 6 filters and 6 channels)"""
    k_, n_ = a0.shape[0], offs.shape[0]
    for n in range(0, n_, 8):
        o0, o1, o2, o3 = offs[n], offs[min(n + 1, n_ - 1)], offs[min(n + 2, n_ - 1)], offs[min(n + 3, n_ - 1)]
        o4, o5 = offs[min(n + 4, n_ - 1)], offs[min(n + 5, n_ - 1)]
        o6, o7 = offs[min(n + 6, n_ - 1)], offs[min(n + 7, n_ - 1)]
        b0, b1, b2, b3 = flat[o0:o0 + k_], flat[o1:o1 + k_], flat[o2:o2 + k_], flat[o3:o3 + k_]
        b4, b5, b6, b7 = flat[o4:o4 + k_], flat[o5:o5 + k_], flat[o6:o6 + k_], flat[o7:o7 + k_]
        s00 = s01 = s02 = s03 = s04 = s05 = s06 = s07 = ZERO
        s10 = s11 = s12 = s13 = s14 = s15 = s16 = s17 = ZERO
        for k in range(k_):
            x0, x1 = a0[k], a1[k]
            y0, y1, y2, y3, y4, y5, y6, y7 = b0[k], b1[k], b2[k], b3[k], b4[k], b5[k], b6[k], b7[k]
            s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3    # noqa: E702
            s04 += x0 * y4; s05 += x0 * y5; s06 += x0 * y6; s07 += x0 * y7    # noqa: E702
            s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3    # noqa: E702
            s14 += x1 * y4; s15 += x1 * y5; s16 += x1 * y6; s17 += x1 * y7    # noqa: E702
        _add_row4(out0, n, n_, s00, s01, s02, s03)
        _add_row4(out1, n, n_, s10, s11, s12, s13)
        if n + 4 < n_:
            _add_row4(out0, n + 4, n_, s04, s05, s06, s07)
            _add_row4(out1, n + 4, n_, s14, s15, s16, s17)


@njit(**SERIAL)
def _gemm_nt_4x2(a, flat, offs, out):
    """gemm_nt in 4 x 2 blocks (16 vector registers), the last two rows in 2 x 4 blocks."""
    m_, k_ = a.shape
    n_ = offs.shape[0]
    m4 = m_ - 2 if m_ % 4 == 2 else m_                 # two rows left: _gemm_nt_2x4 takes them
    for m in range(0, m4, 4):
        a0, a1, a2, a3 = a[m], a[min(m + 1, m_ - 1)], a[min(m + 2, m_ - 1)], a[min(m + 3, m_ - 1)]
        for n in range(0, n_, 2):
            o0, o1 = offs[n], offs[min(n + 1, n_ - 1)]
            b0, b1 = flat[o0:o0 + k_], flat[o1:o1 + k_]
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = ZERO
            for k in range(k_):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1 = b0[k], b1[k]
                s00 += x0 * y0; s01 += x0 * y1; s10 += x1 * y0; s11 += x1 * y1    # noqa: E702
                s20 += x2 * y0; s21 += x2 * y1; s30 += x3 * y0; s31 += x3 * y1    # noqa: E702
            _add_row2(out[m], n, n_, s00, s01)
            if m + 1 < m_:
                _add_row2(out[m + 1], n, n_, s10, s11)
            if m + 2 < m_:
                _add_row2(out[m + 2], n, n_, s20, s21)
            if m + 3 < m_:
                _add_row2(out[m + 3], n, n_, s30, s31)
    if m4 < m_:
        _gemm_nt_2x4(a[m4], a[m4 + 1], flat, offs, out[m4], out[m4 + 1])


@njit(**SERIAL)
def _gemm_nt_2x4(a0, a1, flat, offs, out0, out1):
    """out0/out1 (N,) += a0/a1 (K,) . row n of b: the last two rows of a 16-register
    gemm_nt in 2 x 4 tiles (8 dot products, as its 4 x 2 tile)."""
    k_, n_ = a0.shape[0], offs.shape[0]
    for n in range(0, n_, 4):
        o0, o1, o2, o3 = offs[n], offs[min(n + 1, n_ - 1)], offs[min(n + 2, n_ - 1)], offs[min(n + 3, n_ - 1)]
        b0, b1, b2, b3 = flat[o0:o0 + k_], flat[o1:o1 + k_], flat[o2:o2 + k_], flat[o3:o3 + k_]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = ZERO
        for k in range(k_):
            x0, x1 = a0[k], a1[k]
            y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
            s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3    # noqa: E702
            s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3    # noqa: E702
        _add_row4(out0, n, n_, s00, s01, s02, s03)
        _add_row4(out1, n, n_, s10, s11, s12, s13)


#: the GEMM tile for this CPU's vector registers (see gemm_nt's comment above)
gemm_nt = _gemm_nt_4x4 if VREGS >= 32 else _gemm_nt_4x2


@njit(**INLINE)
def _add_row2(row, n, n_, v0, v1):
    """row[n..n+1] += v0, v1, those below n_ only."""
    row[n] += v0
    if n + 1 < n_:
        row[n + 1] += v1


@njit(**INLINE)
def _add_row4(row, n, n_, v0, v1, v2, v3):
    """row[n..n+3] += v0..v3, those below n_ only."""
    row[n] += v0
    if n + 1 < n_:
        row[n + 1] += v1
    if n + 2 < n_:
        row[n + 2] += v2
    if n + 3 < n_:
        row[n + 3] += v3


@njit(**SERIAL)
def row_offsets(rows, k):
    """The offs of gemm_nt for a plain (rows, k) matrix: n*k (and the taps of conv_planes
    when a GEMM's right-hand matrix is its planes: numba_conv's dcols_gemm)."""
    offs = np.empty(rows, dtype=np.int64)
    for n in range(rows):
        offs[n] = n * k
    return offs


@njit(**SERIAL)
def relu_maxpool(z, fs, rs, cs, ow, size, ps, y, arg):
    """y (F, PH, PW), arg = maxpool(relu(conv output)) for a conv output stored flat in z,
    value (f, oy, ox) at z[f*fs + oy*rs + ox*cs] (any of the layouts below); arg is
    oy*OW + ox of the window's first max, -1 where that max is <= 0 (no gradient).
    Selects, not branches: the data decide, and would mispredict."""
    f_, ph, pw = y.shape
    for fi in range(f_):
        for py in range(ph):
            for px in range(pw):
                y0, x0 = py * ps, px * ps
                best = z[u64(fi * fs + y0 * rs + x0 * cs)]
                top = y0 * ow + x0
                for a in range(size):
                    for bb in range(size):
                        v = z[u64(fi * fs + (y0 + a) * rs + (x0 + bb) * cs)]
                        gt = takes(v, best)
                        top = (y0 + a) * ow + x0 + bb if gt else top
                        best = v if gt else best
                y[fi, py, px] = 0.0 if best <= 0 else best        # NaN stays NaN
                arg[fi, py, px] = top if best > 0 else -1


@njit(**SERIAL)
def pool_row_width(pw):
    """The width the unit-stride 2x2 ReLU + pool computes a pooled row of PW columns at:
    whole VECTOR_LOOP_MIN blocks (its junk columns are not stored)."""
    return (pw + VECTOR_LOOP_MIN - 1) // VECTOR_LOOP_MIN * VECTOR_LOOP_MIN


@njit(**SERIAL)
def pool_slack_rows(fs, ow, size, ps):
    """Rows of fs elements a conv output z needs past its filters' so that the 2x2/2 pool's
    wide rows (_relu_maxpool_2x2_wide) read inside it: 0 without that pool."""
    if size != 2 or ps != 2:
        return 0
    return (2 * pool_row_width(ow // 2) + fs - 1) // fs


@njit(**SERIAL)
def relu_maxpool_2x2(z, fs, rs, cs, ow, y, arg):
    """relu_maxpool for the 2x2/2 pool, its four taps written out in the same order.
    Output columns one element apart (cs == 1: the planes and the GEMM's layouts) take
    _relu_maxpool_2x2_wide when z holds the reads of its wide rows, else the loop over
    pooled columns runs as it is (any cs)."""
    f_, ph, pw = y.shape
    wide = pool_row_width(pw)
    last_read = (f_ - 1) * fs + (2 * ph - 1) * rs + 2 * wide
    if cs == 1 and last_read <= z.size:
        _relu_maxpool_2x2_wide(z, fs, rs, ow, wide, y, arg)
        return
    for fi in range(f_):
        for py in range(ph):
            r0 = fi * fs + 2 * py * rs
            t0 = 2 * py * ow
            for px in range(pw):
                c0 = r0 + 2 * px * cs
                best, top = z[u64(c0)], t0 + 2 * px
                v = z[u64(c0 + cs)]
                gt = takes(v, best)
                top, best = (t0 + 2 * px + 1, v) if gt else (top, best)
                v = z[u64(c0 + rs)]
                gt = takes(v, best)
                top, best = (t0 + ow + 2 * px, v) if gt else (top, best)
                v = z[u64(c0 + rs + cs)]
                gt = takes(v, best)
                top, best = (t0 + ow + 2 * px + 1, v) if gt else (top, best)
                y[fi, py, px] = ZERO if best <= 0 else best        # NaN stays NaN
                arg[fi, py, px] = top if best > 0 else -1


@njit(**SERIAL)
def _relu_maxpool_2x2_wide(z, fs, rs, ow, wide, y, arg):
    """relu_maxpool_2x2 with cs == 1, each pooled row computed ``wide`` columns wide into a
    scratch row (whole vectors: its stride-2 taps shuffles, its selects blends), then its
    PW columns stored.  With the pooled row's own width as trip count (LeNet C1: 12) the
    loop ran scalar on AVX2, its selects compiled to branches on the data (AVX-512 has
    masked moves): LeNet C1's fused forward took 4.5 ms a batch of 256 on one thread, 1.2
    without the pool (AMD EPYC Zen 3, 2026-12-07)."""
    f_, ph, pw = y.shape
    best_row = np.empty(wide, dtype=z.dtype)
    top_row = np.empty(wide, dtype=np.int32)
    codes = np.empty(4, dtype=z.dtype)            # the taps' offsets in z's float type (tap_codes)
    codes[0], codes[1], codes[2], codes[3] = 0, 1, ow, ow + 1
    k0, k1, k2, k3 = codes[0], codes[1], codes[2], codes[3]
    for fi in range(f_):
        for py in range(ph):
            r0 = fi * fs + 2 * py * rs
            t0 = np.int32(2 * py * ow)
            for px in range(wide):
                c0 = r0 + 2 * px                  # each index made unsigned whole (numba_pool)
                best, top = z[u64(c0)], k0
                best, top = take_tap(best, top, z[u64(c0 + 1)], k1)
                best, top = take_tap(best, top, z[u64(c0 + rs)], k2)
                best, top = take_tap(best, top, z[u64(c0 + rs + 1)], k3)
                best_row[u64(px)] = ZERO if best <= 0 else best        # NaN stays NaN
                top_row[u64(px)] = np.int32(top) + t0 + np.int32(2 * px) if best > 0 else np.int32(-1)
            for px in range(pw):
                y[fi, py, px] = best_row[px]
                arg[fi, py, px] = top_row[px]


# --------------------------------------------------------------------------- direct convolution layouts
# Stride 1, no im2col.  Each sample is copied into zero-padded planes xp (C, HS, WS)
# (HS = H + 2 pad, WS = W + 2 pad) kept flat, and every conv-output plane is laid out
# with the same row stride WS ("stride-WS layout": z[f, oy*WS + ox], columns
# ox >= OW are don't-cares, zero in gradients).  Then a tap (c, i, j) of the
# convolution is one long contiguous loop over a whole plane,
#     z[f, q] += w[f, c, i, j] * xp[c, i*WS + j + q]      q in [0, OH*WS)
# which LLVM vectorises without remainder work (row-by-row loops of 10 or 28 elements
# would mostly run scalar).  dW is the same sum as dot products of dz with those
# shifted windows (gemm_nt, 4 filters x 4 or 2 taps per tile), and dx (col2im_s1) a GEMM on
# the stride-WS layout followed by the same shifted adds into padded dx planes.  Plane
# loops run over M = OH*WS rounded up to 16 (whole vectors, no scalar remainder); padded
# planes carry WS + 16 elements of slack at the end for the shifted reads of the last row.


#: its layouts round to 16 lanes (LLVM vectorises the loops for the CPU): the plans' width
LANES = 16


@njit(**SERIAL)
def round16(v):
    return (v + 15) // 16 * 16


@njit(**SERIAL)
def pad_into(xs, pad, ws, xp):
    """xs (C, H, W) -> the interior of the flat padded planes xp (C, HS*WS + WS + 16)."""
    c_, h, w = xs.shape
    for c in range(c_):
        for y in range(h):
            row = (y + pad) * ws + pad
            for x in range(w):
                xp[c, u64(row + x)] = xs[c, y, x]


@njit(**INLINE)
def conv_planes(xp, wm, b, offs, z):
    """z (F8, M) = b + conv(xp), stride-WS layout (M >= OH*WS): wm (F8, K) the weights and b
    (F8,) the bias, F8 a multiple of 8 (forward_direct pads them with zero filters), offs
    (K,) where each tap starts in xp's flat planes (tap_offsets).  Eight filters by four
    taps per pass over a plane (_planes_f8): each loaded input feeds 32 multiply-adds and
    z is loaded and stored once per four (one sample: LeNet C3 12.6 -> 9.2 us, 3 -> 32 on
    32x32 28.3 -> 23.6 us against four filters per pass, which took 41 against one filter).
    One pass width per CPU only (each compiled variant costs a cold start about a second):
    on 16 vector registers the eight filters go as two passes of four (_planes_f4_twice)."""
    for f0 in range(0, wm.shape[0], 8):
        _planes_8_filters(xp.ravel(), wm, b, offs, f0, z)


@njit(**SERIAL)
def _planes_f8(flat, wm, b, offs, f0, z):
    """z[f0:f0+8] = b + conv(xp) (flat: xp's planes), four taps per pass."""
    k_, m = wm.shape[1], z.shape[1]
    k4 = k_ - k_ % 4
    z0, z1, z2, z3 = z[f0], z[f0 + 1], z[f0 + 2], z[f0 + 3]
    z4, z5, z6, z7 = z[f0 + 4], z[f0 + 5], z[f0 + 6], z[f0 + 7]
    for q in range(m):
        z0[q], z1[q], z2[q], z3[q] = b[f0], b[f0 + 1], b[f0 + 2], b[f0 + 3]
        z4[q], z5[q], z6[q], z7[q] = b[f0 + 4], b[f0 + 5], b[f0 + 6], b[f0 + 7]
    for t in range(0, k4, 4):
        s0, s1 = flat[offs[t]:offs[t] + m], flat[offs[t + 1]:offs[t + 1] + m]
        s2, s3 = flat[offs[t + 2]:offs[t + 2] + m], flat[offs[t + 3]:offs[t + 3] + m]
        a0, a1, a2, a3 = wm[f0, t], wm[f0, t + 1], wm[f0, t + 2], wm[f0, t + 3]
        c0, c1, c2, c3 = wm[f0 + 1, t], wm[f0 + 1, t + 1], wm[f0 + 1, t + 2], wm[f0 + 1, t + 3]
        d0, d1, d2, d3 = wm[f0 + 2, t], wm[f0 + 2, t + 1], wm[f0 + 2, t + 2], wm[f0 + 2, t + 3]
        e0, e1, e2, e3 = wm[f0 + 3, t], wm[f0 + 3, t + 1], wm[f0 + 3, t + 2], wm[f0 + 3, t + 3]
        g0, g1, g2, g3 = wm[f0 + 4, t], wm[f0 + 4, t + 1], wm[f0 + 4, t + 2], wm[f0 + 4, t + 3]
        h0, h1, h2, h3 = wm[f0 + 5, t], wm[f0 + 5, t + 1], wm[f0 + 5, t + 2], wm[f0 + 5, t + 3]
        i0, i1, i2, i3 = wm[f0 + 6, t], wm[f0 + 6, t + 1], wm[f0 + 6, t + 2], wm[f0 + 6, t + 3]
        j0, j1, j2, j3 = wm[f0 + 7, t], wm[f0 + 7, t + 1], wm[f0 + 7, t + 2], wm[f0 + 7, t + 3]
        for q in range(m):
            v0, v1, v2, v3 = s0[q], s1[q], s2[q], s3[q]
            z0[q] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            z1[q] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
            z2[q] += d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3
            z3[q] += e0 * v0 + e1 * v1 + e2 * v2 + e3 * v3
            z4[q] += g0 * v0 + g1 * v1 + g2 * v2 + g3 * v3
            z5[q] += h0 * v0 + h1 * v1 + h2 * v2 + h3 * v3
            z6[q] += i0 * v0 + i1 * v1 + i2 * v2 + i3 * v3
            z7[q] += j0 * v0 + j1 * v1 + j2 * v2 + j3 * v3
    _planes_last_taps(flat, wm, offs, f0, f0 + 8, k4, z)


@njit(**SERIAL)
def _planes_last_taps(flat, wm, offs, f_lo, f_hi, t0, z):
    """z[f_lo:f_hi] += the taps t0.. of wm (the 1-3 a plane pass of 4 taps leaves), one at a time."""
    m = z.shape[1]
    for t in range(t0, wm.shape[1]):
        s0 = flat[offs[t]:offs[t] + m]
        for f in range(f_lo, f_hi):
            wv = wm[f, t]
            zf = z[f]
            for q in range(m):
                zf[q] += wv * s0[q]


@njit(**SERIAL)
def _planes_f4_twice(flat, wm, b, offs, f0, z):
    """z[f0:f0+8] = b + conv(xp) (flat: xp's planes) in two passes of four filters by four
    taps: 16 weights, 4 inputs and 4 outputs live in the loop, where _planes_f8's 32 weights
    spill on 16 vector registers.  Measured 2026-12-07 (AMD EPYC Zen 3, AVX2, 1 thread, one
    sample's planes, us, 8 x 4 / 4 x 4 taps): 32 -> 64 3x3 on 16x16 203 / 162; 3 -> 32 on
    32x32 43 / 31; 1x1 64 -> 128 on 16x16 95 / 78; 5x5 pad 2 16 -> 32 on 24x24 308 / 238;
    LeNet C3 16 / 13 (8 filters by 2 taps: 251, 41, 93, 390, 15)."""
    k_, m = wm.shape[1], z.shape[1]
    k4 = k_ - k_ % 4
    for g in range(f0, f0 + 8, 4):
        z0, z1, z2, z3 = z[g], z[g + 1], z[g + 2], z[g + 3]
        for q in range(m):
            z0[q], z1[q], z2[q], z3[q] = b[g], b[g + 1], b[g + 2], b[g + 3]
        for t in range(0, k4, 4):
            s0, s1 = flat[offs[t]:offs[t] + m], flat[offs[t + 1]:offs[t + 1] + m]
            s2, s3 = flat[offs[t + 2]:offs[t + 2] + m], flat[offs[t + 3]:offs[t + 3] + m]
            a0, a1, a2, a3 = wm[g, t], wm[g, t + 1], wm[g, t + 2], wm[g, t + 3]
            c0, c1, c2, c3 = wm[g + 1, t], wm[g + 1, t + 1], wm[g + 1, t + 2], wm[g + 1, t + 3]
            d0, d1, d2, d3 = wm[g + 2, t], wm[g + 2, t + 1], wm[g + 2, t + 2], wm[g + 2, t + 3]
            e0, e1, e2, e3 = wm[g + 3, t], wm[g + 3, t + 1], wm[g + 3, t + 2], wm[g + 3, t + 3]
            for q in range(m):
                v0, v1, v2, v3 = s0[q], s1[q], s2[q], s3[q]
                z0[q] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                z1[q] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
                z2[q] += d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3
                z3[q] += e0 * v0 + e1 * v1 + e2 * v2 + e3 * v3
        _planes_last_taps(flat, wm, offs, g, g + 4, k4, z)


#: conv_planes' pass over eight filters for this CPU's vector registers
_planes_8_filters = _planes_f8 if VREGS >= 32 else _planes_f4_twice

# Narrow rows with many filters (LeNet C3: 10 columns, 16 filters): a plane loop of
# OH*WS elements is too short to amortise its set-up for every (filter, tap), so the
# filters go along the lanes instead.  The input is expanded to Fq = round16(F)
# lanes per pixel, xe[c, y, x*Fq + f] = xp[c, y, x], and the weights tiled OW times,
# wt[tap, ox*Fq + f] = w[f, tap]; then one output row of every filter is one loop
#     z[oy, ox*Fq + f] += xe[c, oy + i, (ox + j)*Fq + f] * wt[tap, ox*Fq + f]
# over OW*Fq elements.  The layout rule is the Cython backend's: whichever of filters
# and columns fills more lanes (the "dots" plans take it below DOTS_MIN_K taps only).

@njit(**SERIAL)
def expand_lanes(xp, hs, ws, fq, xe):
    """xe[c, y, x*Fq + f] = xp[c, y*WS + x] for every lane f < Fq (xp flat planes)."""
    c_ = xe.shape[0]
    for c in range(c_):
        for y in range(hs):
            for x in range(ws):
                v = xp[c, y * ws + x]
                for f in range(fq):
                    xe[c, y, u64(x * fq + f)] = v


@njit(**SERIAL)
def conv_filter_lanes(xe, wt, bt, kh, kw, fq, z):
    """z (OH, OW*Fq) = bt + conv, filters along the lanes."""
    c_ = xe.shape[0]
    oh, m = z.shape[0], z.shape[1]
    for oy in range(oh):
        for q in range(m):
            z[oy, q] = bt[q]
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


@njit(**SERIAL)
def tap_offsets(c_, kh, kw, plane, ws):
    """Where tap (c, i, j) starts in flat padded planes of ``plane`` elements, row stride WS:
    c*plane + i*WS + j, in (c, i, j) order (gemm_nt's offs: dW at stride 1 is dz's rows dotted
    with these shifted windows, 4 filters x 4 or 2 taps per tile; the direct forward's taps)."""
    offs = np.empty(c_ * kh * kw, dtype=np.int64)
    t = 0
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                offs[t] = c * plane + i * ws + j
                t += 1
    return offs


@njit(**SERIAL)
def col2im_planes(dcols, kh, kw, ws, dxp):
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


@njit(**SERIAL)
def to_planes(dz, oh, ow, ws, dzp):
    """dzp (F, M) = dz (F, L) in the stride-WS layout (zero past OW in each row)."""
    dzp[:] = 0
    for fi in range(dz.shape[0]):
        for oy in range(oh):
            for ox in range(ow):
                dzp[fi, u64(oy * ws + ox)] = dz[fi, u64(oy * ow + ox)]


# Channels last.  A sample padded into xn (HS*WS, C) keeps the KW taps of one kernel row
# next to each other: the window of output (oy, ox) is KH runs of KW*C contiguous
# elements, xn[(oy*s + i)*WS + ox*s, :] onwards, so its row of im2row is KH copies, and
# gemm_nt reduces it along the contiguous (i, j, c) taps.

@njit(**SERIAL)
def pad_nhwc(xs, h, w, py, px, ws, xn):
    """xn (HS*WS, C): xs (C, H*W) channels last in the interior, py rows and px columns in
    (the border stays as it is: zero)."""
    for c in range(xs.shape[0]):
        for y in range(h):
            row = (y + py) * ws + px
            for x in range(w):
                xn[u64(row + x), c] = xs[c, u64(y * w + x)]


@njit(**SERIAL)
def rows_nhwc(xn, kh, kw, s, ws, oh, ow, rows):
    """rows (L, Kp): rows[oy*OW + ox, (i*KW + j)*C + c] = xn[(oy*s + i)*WS + ox*s + j, c]
    (im2row in (i, j, c) order; columns past K*KW*C are left as they are: zero)."""
    span = kw * xn.shape[1]
    flat = xn.ravel()
    for oy in range(oh):
        for ox in range(ow):
            r = rows[oy * ow + ox]
            for i in range(kh):
                src = ((oy * s + i) * ws + ox * s) * xn.shape[1]
                dst = i * span
                for t in range(span):
                    r[u64(dst + t)] = flat[u64(src + t)]
