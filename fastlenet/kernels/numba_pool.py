"""The Numba backend's pooling: max and average, each forward beside its backward.

Dimension legend: N batch, C channels, Q = N*C planes, H/W input height/width,
OH/OW pooled height/width, k window size, s stride.  A plane is one (n, c) image,
flat: x[q, h, w] at q*H*W + h*W + w.

Paths (the forward's; ``pool_path`` names the one a window takes):

- ``rows_2x2s2`` / ``rows_3x3s2``: the two windows CNNs use (2x2 stride 2; 3x3 stride
  2, overlapping).  One pass over each pooled row with the window's taps written out,
  in the reference's order: LLVM vectorises the loop over pooled columns, the stride-2
  taps as interleaved loads (even and odd lanes by shuffles), the max as compare and
  selects.  A row narrower than a multiple of 8 pooled columns would leave it to the
  scalar remainder loop, so rows are computed ``wide_rows`` wide: the extra columns are
  junk written into the next pooled rows of the same plane, which are computed after
  and overwrite them; the last rows of a plane (and those whose reads would pass the
  end of the array) run at their exact width.  Threads take whole planes: no thread
  writes into another's.
- ``scan``: any other window and stride, the reference's loops per pooled value.

Indices in the row loops are unsigned (``u64``): Numba wraps negative signed indices
(``a[-1]``), a test LLVM cannot prove away for ``a[base + 2*px]``, and then makes the
loads gathers or keeps the loop scalar (4-6x slower here).

Max pool: y = the window's first maximum in row-major order (the first NaN if any:
``_numba_options.takes``), arg = its flat h*W + w in the plane; the backward adds dy at
arg.  Average pool: y = the sum of the taps in row-major order times 1/k^2; the
backward gives each tap dy/k^2.  Every path runs on ``prange`` over planes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as u64

from ._numba_options import INLINE, PARALLEL, SERIAL, VECTOR_LOOP_MIN, VREGS, ZERO, take_tap, takes

#: the average pool computes its pooled rows in multiples of this many columns (its
#: vector loop's width or its 8-lane epilogue's)
ROW_MULTIPLE = 8
#: the widest input the row kernels take (their tap offsets are exact in float32)
ROWS_MAX_W = 1 << 22
#: ... the max pool in whole vectors of LLVM's vector loop: this many bytes (16 float32, 8
#: float64) with AVX-512's 32 vector registers; with 16 (AVX2) 16 elements of either type,
#: where LLVM unrolls float64's loop to 16 (rows of 8 ran scalar).  Measured 2026-12-07
#: (AMD EPYC Zen 3, AVX2, 1 thread, CPU ms, rows of 64 / 128 / 32 bytes): float64 batch 32,
#: 64 channels on 16x16: 2x2 2.08 / 0.55-0.89 / 2.12, 3x3 2.93-3.00 / 1.27 / 2.92-2.97;
#: on 32x32 (batch 8): 2x2 0.23-0.36 / 0.22 / 0.21-0.37, 3x3 0.43-0.56 / 0.43 / 0.42-0.62;
#: float32 batch 128 on 16x16: 2x2 2.28-2.33 / 4.88-5.39 / 8.55-8.78
VECTOR_BYTES = 64


def max_row_multiple(itemsize: int) -> int:
    """The max pool's row width multiple (elements) for x's item size on this CPU."""
    return VECTOR_BYTES // itemsize if VREGS >= 32 else VECTOR_LOOP_MIN


def pool_path(size: int, stride: int) -> str:
    """The forward path that pools a size x size window at this stride."""
    if stride == 2 and size in (2, 3):
        return f"rows_{size}x{size}s2"
    return "scan"


@njit(**SERIAL)
def wide_rows(q, h, w, oh, ow, size, stride, total, multiple):
    """(wide, rows): plane q's first ``rows`` pooled rows may be computed ``wide`` columns
    wide (OW rounded up to ``multiple``) -- their junk columns stay inside the plane's output (rewritten by
    the rows after them) and their reads inside the input's ``total`` elements."""
    wide = (ow + multiple - 1) // multiple * multiple
    rows = oh - (wide - ow + ow - 1) // ow
    while rows > 0 and q * h * w + (stride * (rows - 1) + size - 1) * w + stride * (wide - 1) + size > total:
        rows -= 1
    return wide, rows


# --------------------------------------------------------------------------- max pool
@njit(**SERIAL)
def _max_rows_2x2s2(x, xo, w, oh, ow, wide, rows, codes, y, arg, yo):
    """Plane at x[xo:] -> y/arg[yo:] (OH, OW), 2x2 windows at stride 2 (codes: tap_codes)."""
    k0, k1, k3, k4 = codes[0], codes[1], codes[3], codes[4]      # in registers, not reloaded
    for py in range(oh):
        width = wide if py < rows else ow
        r = xo + 2 * py * w
        o = yo + py * ow
        t0 = np.int32(2 * py * w)
        for px in range(width):
            c0 = r + 2 * px
            best, top = x[u64(c0)], k0
            best, top = take_tap(best, top, x[u64(c0 + 1)], k1)
            best, top = take_tap(best, top, x[u64(c0 + w)], k3)
            best, top = take_tap(best, top, x[u64(c0 + w + 1)], k4)
            y[u64(o + px)] = best
            arg[u64(o + px)] = np.int32(top) + t0 + np.int32(2 * px)


@njit(**SERIAL)
def _max_rows_3x3s2(x, xo, w, oh, ow, wide, rows, codes, y, arg, yo):
    """Plane at x[xo:] -> y/arg[yo:] (OH, OW), 3x3 windows at stride 2 (overlapping;
    codes: tap_codes).  A window's third column is the next window's first: its values
    are carried to the next pooled column (e0..e2) instead of loaded at an offset of two,
    which LLVM would gather rather than shuffle (float64: 0.90 -> 0.33 ms on 32x32x32 at
    batch 32).  LLVM vectorises the carried values in its main vector loop only, so max
    rows are whole vectors wide (max_row_multiple)."""
    k0, k1, k2, k3, k4, k5, k6, k7, k8 = codes[0], codes[1], codes[2], codes[3], codes[4], codes[5], \
        codes[6], codes[7], codes[8]
    for py in range(oh):
        width = wide if py < rows else ow
        r = xo + 2 * py * w
        o = yo + py * ow
        t0 = np.int32(2 * py * w)
        e0, e1, e2 = x[u64(r)], x[u64(r + w)], x[u64(r + 2 * w)]
        for px in range(width):
            c0 = r + 2 * px
            o0, n0 = x[u64(c0 + 1)], x[u64(c0 + 2)]
            o1, n1 = x[u64(c0 + w + 1)], x[u64(c0 + w + 2)]
            o2, n2 = x[u64(c0 + 2 * w + 1)], x[u64(c0 + 2 * w + 2)]
            best, top = e0, k0
            best, top = take_tap(best, top, o0, k1)
            best, top = take_tap(best, top, n0, k2)
            best, top = take_tap(best, top, e1, k3)
            best, top = take_tap(best, top, o1, k4)
            best, top = take_tap(best, top, n1, k5)
            best, top = take_tap(best, top, e2, k6)
            best, top = take_tap(best, top, o2, k7)
            best, top = take_tap(best, top, n2, k8)
            y[u64(o + px)] = best
            arg[u64(o + px)] = np.int32(top) + t0 + np.int32(2 * px)
            e0, e1, e2 = n0, n1, n2


@njit(**SERIAL)
def _max_scan(x, xo, w, size, stride, oh, ow, y, arg, yo):
    """Plane at x[xo:] -> y/arg[yo:] (OH, OW), any window and stride."""
    for py in range(oh):
        for px in range(ow):
            y0, x0 = py * stride, px * stride
            best = x[xo + y0 * w + x0]
            top = y0 * w + x0
            for i in range(size):
                for j in range(size):
                    v = x[xo + (y0 + i) * w + x0 + j]
                    if takes(v, best):
                        best = v
                        top = (y0 + i) * w + x0 + j
            y[yo + py * ow + px] = best
            arg[yo + py * ow + px] = top


@njit(**PARALLEL)
def _maxpool2d_forward_kernel(x, size, stride, oh, ow, codes, multiple):
    n, c, h, w = x.shape
    q_ = n * c
    flat = x.reshape(q_ * h * w)
    y = np.empty(q_ * oh * ow, dtype=x.dtype)
    arg = np.empty(q_ * oh * ow, dtype=np.int32)
    rows_path = stride == 2 and (size == 2 or size == 3) and w < ROWS_MAX_W
    for i in range(3):
        for j in range(3):
            codes[i * 3 + j] = i * w + j
    for q in prange(q_):
        xo, yo = q * h * w, q * oh * ow
        if rows_path:
            wide, rows = wide_rows(q, h, w, oh, ow, size, stride, q_ * h * w, multiple)
            if size == 2:
                _max_rows_2x2s2(flat, xo, w, oh, ow, wide, rows, codes, y, arg, yo)
            else:
                _max_rows_3x3s2(flat, xo, w, oh, ow, wide, rows, codes, y, arg, yo)
        else:
            _max_scan(flat, xo, w, size, stride, oh, ow, y, arg, yo)
    return y.reshape(n, c, oh, ow), arg.reshape(n, c, oh, ow)


def _maxpool2d_forward_impl(x, size, stride, oh, ow):
    """y (N, C, OH, OW) = window max, arg = flat h*W + w of the first max."""
    return _maxpool2d_forward_kernel(x, size, stride, oh, ow, tap_codes(x.dtype), max_row_multiple(x.itemsize))


def tap_codes(dtype):
    """Room for the offsets i*W + j of a 3x3 window's taps (index i*3 + j), in x's own
    float type (exact: the rows path takes W < 2^22): the row kernels select a tap's
    offset with the mask of a value compare, and LLVM vectorises float64 values beside
    int32 offsets poorly (3x3/2 max pool, float64, 32x32x32 at batch 32: 2.0 ms with
    int32 offsets, 0.9 with float ones)."""
    return np.empty(9, dtype=dtype)


@njit(**PARALLEL)
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


# --------------------------------------------------------------------------- average pool
@njit(**SERIAL)
def _avg_rows_s2(x, xo, w, size, oh, ow, wide, rows, scale, y, yo):
    """Plane at x[xo:] -> y[yo:] (OH, OW), the mean of 2x2 or 3x3 (size) windows at stride 2,
    taps summed row by row.  The size test does not depend on the loop: LLVM takes it out
    and vectorises each window's loop on its own (the same speed as two kernels)."""
    for py in range(oh):
        width = wide if py < rows else ow
        r = xo + 2 * py * w
        o = yo + py * ow
        for px in range(width):
            c0 = r + 2 * px
            if size == 2:
                acc = ZERO + x[u64(c0)] + x[u64(c0 + 1)] + x[u64(c0 + w)] + x[u64(c0 + w + 1)]
            else:
                acc = ZERO + x[u64(c0)] + x[u64(c0 + 1)] + x[u64(c0 + 2)]
                acc = acc + x[u64(c0 + w)] + x[u64(c0 + w + 1)] + x[u64(c0 + w + 2)]
                acc = acc + x[u64(c0 + 2 * w)] + x[u64(c0 + 2 * w + 1)] + x[u64(c0 + 2 * w + 2)]
            y[u64(o + px)] = acc * scale


@njit(**SERIAL)
def _avg_scan(x, xo, w, size, stride, oh, ow, scale, y, yo):
    """Plane at x[xo:] -> y[yo:] (OH, OW), any window and stride."""
    for py in range(oh):
        for px in range(ow):
            acc = ZERO
            for i in range(size):
                for j in range(size):
                    acc += x[xo + (py * stride + i) * w + px * stride + j]
            y[yo + py * ow + px] = acc * scale


@njit(**PARALLEL)
def _avgpool2d_forward_kernel(x, size, stride, oh, ow):
    n, c, h, w = x.shape
    q_ = n * c
    flat = x.reshape(q_ * h * w)
    y = np.empty(q_ * oh * ow, dtype=x.dtype)
    scale = y[:1].copy()                           # 1/k^2 in x's type: float32 stays float32
    scale[0] = 1.0 / (size * size)
    rows_path = stride == 2 and (size == 2 or size == 3)
    for q in prange(q_):
        xo, yo = q * h * w, q * oh * ow
        if rows_path:
            wide, rows = wide_rows(q, h, w, oh, ow, size, stride, q_ * h * w, ROW_MULTIPLE)
            _avg_rows_s2(flat, xo, w, size, oh, ow, wide, rows, scale[0], y, yo)
        else:
            _avg_scan(flat, xo, w, size, stride, oh, ow, scale[0], y, yo)
    return y.reshape(n, c, oh, ow)


def _avgpool2d_forward_impl(x, size, stride, oh, ow):
    """y (N, C, OH, OW) = mean of each size*size window."""
    return _avgpool2d_forward_kernel(x, size, stride, oh, ow)


@njit(**PARALLEL)
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
