# Cython (AOT) dense-layer products, parallel over the OpenMP threads the
# convolution kernels use.
#
# Dimension legend: N batch, D input features, U output units; Up, Dp are U, D
# rounded up to LB (the vector width of the GEMM tiles); RB rows per block.
#
# Why not BLAS: NumPy's BLAS runs single-threaded beside the OpenMP kernels (two
# spinning thread pools fight for the two cores), so the dense layers were a
# one-core island in an otherwise parallel step.  These are the same
# register-blocked micro-kernels as the convolutions (csrc/microkernels.h),
# with the rows of each product split across the threads: no reductions,
# no atomics.  Directives are set once, in setup.py; everything here is
# unchecked (fastlenet/kernels/cython_backend.py wraps it).
from cython cimport floating
from cython.parallel cimport prange
cimport openmp

import numpy as np

from fastlenet.kernels import _workspace
from fastlenet.kernels._workspace import aligned_empty, aligned_zeros

include "gemm.pxi"

cdef enum:
    RB = 32      # rows per block: the threads take blocks dynamically (balanced)


cdef inline Py_ssize_t _blocks(Py_ssize_t rows) noexcept nogil:
    return (rows + RB - 1) // RB


cdef inline int _threads(Py_ssize_t blocks) noexcept nogil:
    cdef int t = openmp.omp_get_max_threads()
    return <int> blocks if blocks < t else t


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b):
    """x (N, D), w (D, U), b (U,) -> y (N, U) = x @ w + b."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1], up = _round_up(u, LB)
    cdef Py_ssize_t blocks = _blocks(n), q, r0, r1
    dtype = np.float32 if floating is float else np.float64
    key = ("linear forward", dtype, n, d, u)
    ws = _workspace.lookup(key)
    if ws is None:       # w with its columns padded to whole vectors; the padded product
        ws = _workspace.store(key, (aligned_zeros((d, up), dtype), aligned_empty((n, up), dtype)))
    wp_arr, yp_arr = ws
    wp_arr[:, :u] = w
    cdef floating[:, ::1] wp = wp_arr
    cdef floating[:, ::1] yp = yp_arr
    if n > 0:
        for q in prange(blocks, nogil=True, schedule="dynamic", num_threads=_threads(blocks)):
            r0 = q * RB
            r1 = min(n, r0 + RB)
            _gemm_nn(&x[r0, 0], d, 1, &wp[0, 0], up, &yp[r0, 0], up, r1 - r0, d, up, NULL, False)
    y = _workspace.output((n, u), dtype)
    np.add(yp_arr[:, :u], b, out=y)
    return y


def linear_backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[:, ::1] w,
                    bint need_dx):
    """dy (N, U), x (N, D), w (D, U) -> (dx (N, D) | None, dW (D, U), db (U,)).
    dW = x^T @ dy (x read transposed in place) and dx = dy @ w^T, both in blocks of
    RB rows that the threads take dynamically (no reductions across blocks)."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1]
    cdef Py_ssize_t up = _round_up(u, LB), dp = _round_up(d, LB)
    cdef Py_ssize_t dblocks = _blocks(d), blocks = _blocks(d) + (_blocks(n) if need_dx else 0), q, r0, r1
    dtype = np.float32 if floating is float else np.float64
    key = ("linear backward", dtype, n, d, u, need_dx)
    ws = _workspace.lookup(key)
    if ws is None:       # dy and w^T with their columns padded; the padded products
        ws = _workspace.store(key, (aligned_zeros((n, up), dtype), aligned_empty((d, up), dtype),
                                    aligned_zeros([u if need_dx else 1, dp if need_dx else LB], dtype),
                                    aligned_empty([n if need_dx else 1, dp if need_dx else LB], dtype)))
    dyp_arr, dwp_arr, wt_arr, dxp_arr = ws
    dyp_arr[:, :u] = dy
    if need_dx:
        wt_arr[:, :d] = np.asarray(w).T
    cdef floating[:, ::1] dyp = dyp_arr
    cdef floating[:, ::1] dwp = dwp_arr
    cdef floating[:, ::1] wt = wt_arr
    cdef floating[:, ::1] dxp = dxp_arr
    if n > 0:
        for q in prange(blocks, nogil=True, schedule="dynamic", num_threads=_threads(blocks)):
            if q < dblocks:         # dW rows r0..r1: A[m, k] = x[k, m]
                r0 = q * RB
                r1 = min(d, r0 + RB)
                _gemm_nn(&x[0, 0] + r0, 1, d, &dyp[0, 0], up, &dwp[r0, 0], up, r1 - r0, n, up,
                         NULL, False)
            else:                   # dx rows r0..r1
                r0 = (q - dblocks) * RB
                r1 = min(n, r0 + RB)
                _gemm_nn(&dyp[r0, 0], up, 1, &wt[0, 0], dp, &dxp[r0, 0], dp, r1 - r0, u, dp, NULL, False)
    else:
        dwp_arr[...] = 0
    dw = _workspace.output((d, u), dtype)           # always copies: the workspaces are reused
    dw[...] = dwp_arr[:, :u]
    db = np.asarray(dy).sum(axis=0)
    dx = None
    if need_dx:
        dx = _workspace.output((n, d), dtype)
        dx[...] = dxp_arr[:, :d]
    return dx, dw, db
