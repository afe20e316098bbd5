"""Numba (JIT) kernels, parallel over the batch.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
s stride, p pad, T worker chunks (one per thread).

Strategy: the batch is cut into T contiguous chunks, one per thread; each
chunk owns a (K, L) im2col workspace and, in the backward pass, its own dW/db
accumulators, which are reduced once at the end (no atomics, no false
sharing).  The small GEMMs are loop nests ordered so the innermost loop runs
over contiguous memory and vectorises.  All Numba options live in
``_SERIAL``/``_PARALLEL`` below.  The ``_<name>_impl`` functions are unchecked;
use the checked ones at the bottom or ``fastlenet.kernels.backend("numba")``.
"""
from __future__ import annotations

import sys

import numba
import numpy as np
from numba import njit, prange

from ._api import KERNEL_NAMES, Backend

# One place for every Numba option.  fastmath lets LLVM reassociate the
# reductions (dW, db) into SIMD lanes; results stay within float tolerance.
_SERIAL = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")
_PARALLEL = dict(_SERIAL, parallel=True)


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


@njit(**_SERIAL)
def _chunk(t, chunks, n):
    """Sample range [start, stop) of chunk t when n samples are cut into `chunks`."""
    return t * n // chunks, (t + 1) * n // chunks


def _n_chunks(n):
    """One chunk per thread (numba.get_num_threads() is read here, outside the
    compiled code, so the kernels stay cacheable)."""
    return min(numba.get_num_threads(), n)


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


# --------------------------------------------------------------------------- convolution
def _conv2d_forward_impl(x, w, b, stride, pad, oh, ow):
    """y[n] (F, L) = W (F, K) @ im2col(x[n]) (K, L) + b, per chunk of samples."""
    return _conv2d_forward_kernel(x, w, b, stride, pad, oh, ow, _n_chunks(x.shape[0]))


@njit(**_PARALLEL)
def _conv2d_forward_kernel(x, w, b, stride, pad, oh, ow, chunks):
    n = x.shape[0]
    f, c, kh, kw = w.shape
    k, l_ = c * kh * kw, oh * ow
    wm = w.reshape(f, k)
    y = np.empty((n, f, l_), dtype=x.dtype)
    for t in prange(chunks):
        cols = np.empty((k, l_), dtype=x.dtype)
        start, stop = _chunk(t, chunks, n)
        for s_ in range(start, stop):
            _im2col_one(x[s_], kh, kw, stride, pad, oh, ow, cols)
            ys = y[s_]
            for fi in range(f):
                for li in range(l_):
                    ys[fi, li] = b[fi]
                for ki in range(k):
                    wv = wm[fi, ki]
                    for li in range(l_):
                        ys[fi, li] += wv * cols[ki, li]
    return y.reshape(n, f, oh, ow)


@njit(**_PARALLEL)
def _conv2d_backward_kernel(dy, x, w, stride, pad, need_dx, chunks):
    n = x.shape[0]
    f, c, kh, kw = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    k, l_ = c * kh * kw, oh * ow
    wm = w.reshape(f, k)
    dyr = dy.reshape(n, f, l_)
    dw_part = np.zeros((chunks, f, k), dtype=x.dtype)   # per-chunk accumulators,
    db_part = np.zeros((chunks, f), dtype=x.dtype)      # reduced once below
    dx = np.zeros(x.shape if need_dx else (0, 0, 0, 0), dtype=x.dtype)
    for t in prange(chunks):
        cols = np.empty((k, l_), dtype=x.dtype)
        dcols = np.empty((k, l_), dtype=x.dtype)
        dwt, dbt = dw_part[t], db_part[t]
        start, stop = _chunk(t, chunks, n)
        for s_ in range(start, stop):
            g = dyr[s_]
            _im2col_one(x[s_], kh, kw, stride, pad, oh, ow, cols)
            for fi in range(f):                    # dW += dy (F, L) @ cols^T (L, K)
                acc_b = 0.0
                for li in range(l_):
                    acc_b += g[fi, li]
                dbt[fi] += acc_b
                for ki in range(k):
                    acc = 0.0
                    for li in range(l_):
                        acc += g[fi, li] * cols[ki, li]
                    dwt[fi, ki] += acc
            if need_dx:                            # dcols = W^T (K, F) @ dy (F, L)
                for ki in range(k):
                    for li in range(l_):
                        dcols[ki, li] = 0
                    for fi in range(f):
                        wv = wm[fi, ki]
                        for li in range(l_):
                            dcols[ki, li] += wv * g[fi, li]
                _col2im_one(dcols, kh, kw, stride, pad, oh, ow, dx[s_])
    dw = dw_part[0].copy()
    db = db_part[0].copy()
    for t in range(1, chunks):
        dw += dw_part[t]
        db += db_part[t]
    return dx, dw.reshape(w.shape), db


def _conv2d_backward_impl(dy, x, w, stride, pad, need_dx):
    """(dx | None, dW, db) of the convolution; dx is folded straight from dcols."""
    dx, dw, db = _conv2d_backward_kernel(dy, x, w, stride, pad, need_dx, _n_chunks(x.shape[0]))
    return (dx if need_dx else None), dw, db


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
                        if v > best:
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


# --------------------------------------------------------------------------- public API
BACKEND = Backend("numba", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
