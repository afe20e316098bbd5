# Cython (AOT) im2col / col2im and convolution kernels, parallel over the batch.
#
# Dimension legend: N batch, C channels, H/W input height/width, F filters,
# KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
# s stride, p pad, T worker chunks (one per OpenMP thread).
#
# Directives (language_level, boundscheck, wraparound, cdivision) are set once,
# in setup.py.  Everything here is unchecked: fastlenet/kernels/cython_backend.py
# wraps it with the contract's checks.  The batch is cut into T contiguous
# chunks; each owns a (K, L) workspace and its own dW/db accumulators, which
# are reduced once at the end (no atomics, no false sharing).
from cython cimport floating
from cython.parallel cimport prange
cimport openmp

import numpy as np


def set_num_threads(int n):
    """Threads used by the OpenMP kernels."""
    openmp.omp_set_num_threads(n)


def get_num_threads():
    return openmp.omp_get_max_threads()


cdef inline Py_ssize_t _n_chunks(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t = openmp.omp_get_max_threads()
    return t if t < n else n


cdef inline void _valid_range(Py_ssize_t j, Py_ssize_t s, Py_ssize_t p, Py_ssize_t size,
                              Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output positions o in [lo, hi) whose input index o*s + j - p lies in [0, size)."""
    lo[0] = 0
    if p - j > 0:
        lo[0] = (p - j + s - 1) // s
    hi[0] = 0
    if size + p - j > 0:
        hi[0] = (size + p - j - 1) // s + 1
    if hi[0] > out_len:
        hi[0] = out_len
    if lo[0] > hi[0]:
        lo[0] = hi[0]


# ----------------------------------------------------------------------------- im2col / col2im
cdef void _im2col_one(const floating[:, :, ::1] xs, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                      floating[:, ::1] cols) noexcept nogil:
    """xs (C, H, W) -> cols (K, L) for one sample."""
    cdef Py_ssize_t C = xs.shape[0], H = xs.shape[1], W = xs.shape[2]
    cdef Py_ssize_t c, i, j, r, oy, ox, yy, base, lo, hi
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                _valid_range(j, s, p, W, ow, &lo, &hi)
                for oy in range(oh):
                    base = oy * ow
                    yy = oy * s + i - p
                    if yy < 0 or yy >= H:
                        for ox in range(ow):
                            cols[r, base + ox] = 0
                        continue
                    for ox in range(lo):
                        cols[r, base + ox] = 0
                    for ox in range(lo, hi):
                        cols[r, base + ox] = xs[c, yy, ox * s + j - p]
                    for ox in range(hi, ow):
                        cols[r, base + ox] = 0


cdef void _col2im_one(const floating[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                      floating[:, :, ::1] xs) noexcept nogil:
    """xs (C, H, W) += fold(cols (K, L)) for one sample; xs must start zeroed."""
    cdef Py_ssize_t C = xs.shape[0], H = xs.shape[1], W = xs.shape[2]
    cdef Py_ssize_t c, i, j, r, oy, ox, yy, base, lo, hi
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                _valid_range(j, s, p, W, ow, &lo, &hi)
                for oy in range(oh):
                    yy = oy * s + i - p
                    if yy < 0 or yy >= H:
                        continue
                    base = oy * ow
                    for ox in range(lo, hi):
                        xs[c, yy, ox * s + j - p] += cols[r, base + ox]


def im2col(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> cols (N, K, L)."""
    cdef Py_ssize_t n = x.shape[0], b
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((n, x.shape[1] * kh * kw, oh * ow), dtype=dtype)
    cdef floating[:, :, ::1] cols = out
    for b in prange(n, nogil=True, schedule="static"):
        _im2col_one(x[b], kh, kw, stride, pad, oh, ow, cols[b])
    return out


def col2im(const floating[:, :, ::1] cols, tuple x_shape, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow):
    """cols (N, K, L) -> x (N, C, H, W), overlaps summed."""
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros(x_shape, dtype=dtype)
    cdef floating[:, :, :, ::1] x = out
    cdef Py_ssize_t b
    for b in prange(x.shape[0], nogil=True, schedule="static"):
        _col2im_one(cols[b], kh, kw, stride, pad, oh, ow, x[b])
    return out


# ----------------------------------------------------------------------------- convolution
cdef void _conv_forward_chunk(const floating[:, :, :, ::1] x, const floating[:, ::1] wm,
                              const floating[::1] bias, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                              Py_ssize_t start, Py_ssize_t stop, floating[:, ::1] cols,
                              floating[:, :, ::1] y) noexcept nogil:
    """y[n] (F, L) = W (F, K) @ im2col(x[n]) (K, L) + b for n in [start, stop)."""
    cdef Py_ssize_t F = wm.shape[0], K = wm.shape[1], L = oh * ow
    cdef Py_ssize_t n, f, k, l
    cdef floating wv
    for n in range(start, stop):
        _im2col_one(x[n], kh, kw, s, p, oh, ow, cols)
        for f in range(F):
            for l in range(L):
                y[n, f, l] = bias[f]
            for k in range(K):
                wv = wm[f, k]
                for l in range(L):
                    y[n, f, l] += wv * cols[k, l]


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, Py_ssize_t stride, Py_ssize_t pad,
                   Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)."""
    cdef Py_ssize_t n = x.shape[0], F = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t K = w.shape[1] * kh * kw, L = oh * ow
    cdef Py_ssize_t chunks = _n_chunks(n), t
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((n, F, L), dtype=dtype)
    work = np.empty((chunks, K, L), dtype=dtype)
    cdef floating[:, :, ::1] y = out
    cdef floating[:, :, ::1] cols = work
    cdef const floating[:, ::1] wm = np.asarray(w).reshape(F, K)
    for t in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        _conv_forward_chunk(x, wm, b, kh, kw, stride, pad, oh, ow,
                            t * n // chunks, (t + 1) * n // chunks, cols[t], y)
    return out.reshape(n, F, oh, ow)


cdef void _conv_backward_chunk(const floating[:, :, ::1] dy, const floating[:, :, :, ::1] x,
                               const floating[:, ::1] wm, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                               Py_ssize_t start, Py_ssize_t stop, bint need_dx,
                               floating[:, ::1] cols, floating[:, ::1] dcols,
                               floating[:, ::1] dw, floating[::1] db,
                               floating[:, :, :, ::1] dx) noexcept nogil:
    """Accumulate dW (F, K) and db (F,) over samples [start, stop); fold dx per sample."""
    cdef Py_ssize_t F = wm.shape[0], K = wm.shape[1], L = oh * ow
    cdef Py_ssize_t n, f, k, l
    cdef floating acc, wv
    for n in range(start, stop):
        _im2col_one(x[n], kh, kw, s, p, oh, ow, cols)
        for f in range(F):                       # dW += dy (F, L) @ cols^T (L, K)
            acc = 0
            for l in range(L):
                acc = acc + dy[n, f, l]
            db[f] += acc
            for k in range(K):
                acc = 0
                for l in range(L):
                    acc = acc + dy[n, f, l] * cols[k, l]
                dw[f, k] += acc
        if need_dx:                              # dcols = W^T (K, F) @ dy (F, L)
            for k in range(K):
                for l in range(L):
                    dcols[k, l] = 0
                for f in range(F):
                    wv = wm[f, k]
                    for l in range(L):
                        dcols[k, l] += wv * dy[n, f, l]
            _col2im_one(dcols, kh, kw, s, p, oh, ow, dx[n])


def conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, Py_ssize_t stride, Py_ssize_t pad,
                    bint need_dx):
    """dy (N, F, OH, OW) -> (dx (N, C, H, W) | None, dW (F, C, KH, KW), db (F,))."""
    cdef Py_ssize_t n = x.shape[0], F = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t K = w.shape[1] * kh * kw, L = oh * ow
    cdef Py_ssize_t chunks = _n_chunks(n), t
    cdef tuple dx_shape
    dtype = np.float32 if floating is float else np.float64
    work = np.empty((2, chunks, K, L), dtype=dtype)
    dw_part = np.zeros((chunks, F, K), dtype=dtype)
    db_part = np.zeros((chunks, F), dtype=dtype)
    dx_shape = (1, 1, 1, 1)
    if need_dx:
        dx_shape = (n, w.shape[1], x.shape[2], x.shape[3])
    dx_out = np.zeros(dx_shape, dtype=dtype)
    cdef floating[:, :, :, ::1] ws = work
    cdef floating[:, :, ::1] dwp = dw_part
    cdef floating[:, ::1] dbp = db_part
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef const floating[:, ::1] wm = np.asarray(w).reshape(F, K)
    cdef const floating[:, :, ::1] dyr = np.asarray(dy).reshape(n, F, L)
    for t in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        _conv_backward_chunk(dyr, x, wm, kh, kw, stride, pad, oh, ow,
                             t * n // chunks, (t + 1) * n // chunks, need_dx,
                             ws[0, t], ws[1, t], dwp[t], dbp[t], dx)
    dw = dw_part.sum(axis=0).reshape(np.asarray(w).shape)
    db = db_part.sum(axis=0)
    return (dx_out if need_dx else None), dw, db
