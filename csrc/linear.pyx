# Cython (AOT) dense-layer products, parallel over the OpenMP threads the
# convolution kernels use, with the layer's bias and (optionally) its ReLU fused in.
#
# Dimension legend: N batch, D input features, U output units; Up, Dp are U, D
# rounded up to LB (the vector width of the GEMM tiles); RB rows per block, T threads.
#
# Why not BLAS: NumPy's BLAS runs single-threaded beside the OpenMP kernels (two
# spinning thread pools fight for the two cores), so the dense layers were a
# one-core island in an otherwise parallel step.  These are the same
# register-blocked micro-kernels as the convolutions (csrc/gemm.h),
# with the rows of each product split across the threads: no reductions,
# no atomics.  Each call is one parallel region: the threads first lay out the
# operands (padded weights or gradients), then, after the barrier, take row
# blocks of the products and write their rows of the results directly.
# Directives are set once, in setup.py; everything here is unchecked
# (fastlenet/kernels/cython_backend.py wraps it).
from cython cimport floating
from cython.parallel cimport parallel, prange
cimport openmp

import numpy as np

from fastlenet.kernels import _workspace
from fastlenet.kernels._workspace import aligned_empty, aligned_zeros

from fl_kernels cimport *

cdef enum:
    RB = 32      # rows per block: the threads take blocks dynamically (balanced)


cdef inline Py_ssize_t _blocks(Py_ssize_t rows) noexcept nogil:
    return (rows + RB - 1) // RB


cdef inline void _store_rows(const floating* src, Py_ssize_t lds, floating* dst, Py_ssize_t ldd,
                             Py_ssize_t rows, Py_ssize_t cols, const floating* bias,
                             bint relu) noexcept nogil:
    """dst[r, :cols] = src[r, :cols] (+ bias) (then max(., 0) with relu), for r < rows."""
    cdef Py_ssize_t r, j
    cdef floating v
    for r in range(rows):
        for j in range(cols):
            v = src[r * lds + j]
            if bias != NULL:
                v = v + bias[j]
            if relu and v < 0:     # NaN stays NaN, like np.maximum
                v = 0
            dst[r * ldd + j] = v


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   bint relu, out=None):
    """x (N, D), w (D, U), b (U,) -> y (N, U) = x @ w + b, or relu(x @ w + b) with ``relu``
    (into ``out`` when given)."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1], up = _round_up(u, LB)
    cdef Py_ssize_t blocks = _blocks(n), q, r0, r1, i, j, tid
    cdef int threads = _team_size(blocks)
    dtype = np.float32 if floating is float else np.float64
    key = ("linear forward", dtype, d, u, threads)
    ws = _workspace.lookup(key)
    if ws is None:       # w with its columns padded to whole vectors; each thread's block of y
        ws = _workspace.store(key, (aligned_zeros((d, up), dtype), aligned_empty((threads, RB, up), dtype)))
    wp_arr, yb_arr = ws
    y_arr = aligned_empty((n, u), dtype) if out is None else out
    cdef floating[:, ::1] wp = wp_arr
    cdef floating[:, :, ::1] yb = yb_arr
    cdef floating[:, ::1] y = y_arr
    if n == 0:
        return y_arr
    with nogil, parallel(num_threads=threads):
        for i in prange(d, schedule="static"):           # the padded weights (padding stays 0)
            for j in range(u):
                wp[i, j] = w[i, j]
        for q in prange(blocks, schedule="dynamic"):     # after the barrier: rows of y
            tid = openmp.omp_get_thread_num()
            r0 = q * RB
            r1 = min(n, r0 + RB)
            _gemm_nn(&x[r0, 0], d, 1, &wp[0, 0], up, &yb[tid, 0, 0], up, r1 - r0, d, up, NULL, False)
            _store_rows(&yb[tid, 0, 0], up, &y[r0, 0], u, r1 - r0, u, &b[0], relu)
    return y_arr


def linear_backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[:, ::1] w,
                    const floating[:, ::1] y, bint relu, bint need_dx,
                    floating[:, ::1] dw, floating[::1] db, out=None):
    """Gradients of linear_forward.  dy (N, U): the gradient of its output y (N, U); with
    ``relu`` it passes only where y > 0 (without, ``y`` is not read: pass any (N, U) array).  Writes dW (D, U) = x^T @ dy' and db (U,) = sum_n dy'
    into ``dw`` and ``db``; returns dx (N, D) = dy' @ w^T (into ``out`` when given), or None
    without ``need_dx``.
    x is read transposed in place for dW; dW rows and dx rows are blocks of RB rows that
    the threads take dynamically (no reductions across blocks); one more item sums db."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1]
    cdef Py_ssize_t up = _round_up(u, LB), dp = _round_up(d, LB)
    cdef Py_ssize_t dblocks = _blocks(d), xblocks = _blocks(n) if need_dx else 0
    cdef Py_ssize_t items = dblocks + xblocks + 1, q, r0, r1, r, j, tid
    cdef int threads = _team_size(items)
    cdef bint direct_dx = dp == d        # whole-vector rows: the product lands in dx itself
    dtype = np.float32 if floating is float else np.float64
    key = ("linear backward", dtype, n, d, u, need_dx, threads)
    ws = _workspace.lookup(key)
    if ws is None:       # dy' and w^T with their columns padded; each thread's block of dW, dx
        ws = _workspace.store(key, (aligned_zeros((n, up), dtype),
                                    aligned_zeros([u if need_dx else 1, dp if need_dx else LB], dtype),
                                    aligned_empty((threads, RB, up), dtype),
                                    aligned_empty([threads, RB if need_dx else 1, dp if need_dx else LB],
                                                  dtype)))
    dyp_arr, wt_arr, dwb_arr, dxb_arr = ws
    dx_arr = (aligned_empty((n, d), dtype) if out is None else out) if need_dx else None
    cdef floating[:, ::1] dyp = dyp_arr
    cdef floating[:, ::1] wt = wt_arr
    cdef floating[:, :, ::1] dwb = dwb_arr
    cdef floating[:, :, ::1] dxb = dxb_arr
    cdef floating[:, ::1] dx = dx_arr if need_dx else dxb_arr[0]
    if n == 0:
        dw[...] = 0
        db[...] = 0
        return dx_arr
    with nogil, parallel(num_threads=threads):
        for r in prange(n, schedule="static"):           # dy' (padding stays 0)
            for j in range(u):
                dyp[r, j] = dy[r, j] if not relu or y[r, j] > 0 else 0
        if need_dx:
            for q in prange(_blocks(d), schedule="static"):   # w^T (padding stays 0)
                r0 = q * RB
                _transpose(&w[r0, 0], u, min(d, r0 + RB) - r0, u, &wt[0, r0], dp)
        for q in prange(items, schedule="dynamic"):      # after the barrier: the products
            tid = openmp.omp_get_thread_num()
            if q < dblocks:         # dW rows r0..r1: A[m, k] = x[k, m]
                r0 = q * RB
                r1 = min(d, r0 + RB)
                _gemm_nn(&x[0, 0] + r0, 1, d, &dyp[0, 0], up, &dwb[tid, 0, 0], up, r1 - r0, n, up,
                         NULL, False)
                _store_rows(&dwb[tid, 0, 0], up, &dw[r0, 0], u, r1 - r0, u, NULL, False)
            elif q < dblocks + xblocks:    # dx rows r0..r1
                r0 = (q - dblocks) * RB
                r1 = min(n, r0 + RB)
                if direct_dx:
                    _gemm_nn(&dyp[r0, 0], up, 1, &wt[0, 0], dp, &dx[r0, 0], d, r1 - r0, u, dp, NULL, False)
                else:
                    _gemm_nn(&dyp[r0, 0], up, 1, &wt[0, 0], dp, &dxb[tid, 0, 0], dp, r1 - r0, u, dp,
                             NULL, False)
                    _store_rows(&dxb[tid, 0, 0], dp, &dx[r0, 0], d, r1 - r0, d, NULL, False)
            else:                   # db: the column sums of dy'
                for j in range(u):
                    db[j] = 0
                for r in range(n):
                    for j in range(u):
                        db[j] = db[j] + dyp[r, j]
    return dx_arr
