# Cython (AOT) dense-layer products, parallel over the OpenMP threads the
# convolution kernels use.
#
# Dimension legend: N batch, D input features, U output units; Up, Dp are U, D
# rounded up to LB (the vector width of the GEMM tiles); T worker chunks.
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

cdef enum:
    MB = 4       # rows of a GEMM tile
    LB = 16      # columns of a GEMM tile (one AVX-512 float32 vector)


cdef extern from "microkernels.h" nogil:
    void fl_gemm_nn_f32(const float* A, long lda, long sak, const float* B, long ldb, float* C,
                        long ldc, long M, long Kd, long Lp, const float* bias, int accumulate)
    void fl_gemm_nn_f64(const double* A, long lda, long sak, const double* B, long ldb, double* C,
                        long ldc, long M, long Kd, long Lp, const double* bias, int accumulate)


cdef inline Py_ssize_t _round_up(Py_ssize_t v, Py_ssize_t m) noexcept nogil:
    return (v + m - 1) // m * m


cdef inline Py_ssize_t _split(Py_ssize_t rows, Py_ssize_t t, Py_ssize_t chunks) noexcept nogil:
    """First row of chunk t when `rows` are cut into `chunks` blocks of whole tiles."""
    cdef Py_ssize_t first = _round_up(rows * t // chunks, MB)
    return first if first < rows else rows


cdef inline void _gemm(const floating* A, Py_ssize_t lda, Py_ssize_t sak, const floating* B,
                       Py_ssize_t ldb, floating* C, Py_ssize_t ldc, Py_ssize_t M, Py_ssize_t Kd,
                       Py_ssize_t Lp) noexcept nogil:
    """C[M, Lp] = A[M, Kd] @ B[Kd, Lp], A[m, k] at A[m*lda + k*sak]; Lp % LB == 0."""
    if M <= 0:
        return
    if floating is float:
        fl_gemm_nn_f32(A, lda, sak, B, ldb, C, ldc, M, Kd, Lp, NULL, 0)
    else:
        fl_gemm_nn_f64(A, lda, sak, B, ldb, C, ldc, M, Kd, Lp, NULL, 0)


def _chunks(Py_ssize_t rows):
    return max(1, min(openmp.omp_get_max_threads(), rows // MB))


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b):
    """x (N, D), w (D, U), b (U,) -> y (N, U) = x @ w + b."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1], up = _round_up(u, LB)
    cdef Py_ssize_t chunks = _chunks(n), t, r0, r1
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
        for t in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
            r0 = _split(n, t, chunks)
            r1 = _split(n, t + 1, chunks)
            _gemm(&x[r0, 0], d, 1, &wp[0, 0], up, &yp[r0, 0], up, r1 - r0, d, up)
    y = yp_arr[:, :u] + np.asarray(b)
    return y


def linear_backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[:, ::1] w,
                    bint need_dx):
    """dy (N, U), x (N, D), w (D, U) -> (dx (N, D) | None, dW (D, U), db (U,)).
    dW = x^T @ dy (rows of dW split across threads; x read transposed in place),
    dx = dy @ w^T (rows of dx split across threads)."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], u = w.shape[1]
    cdef Py_ssize_t up = _round_up(u, LB), dp = _round_up(d, LB)
    cdef Py_ssize_t chunks = max(_chunks(d), _chunks(n)), t, r0, r1
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
        for t in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
            r0 = _split(d, t, chunks)
            r1 = _split(d, t + 1, chunks)
            # dW rows r0..r1: A[m, k] = x[k, m]
            _gemm(&x[0, 0] + r0, 1, d, &dyp[0, 0], up, &dwp[r0, 0], up, r1 - r0, n, up)
            if need_dx:
                r0 = _split(n, t, chunks)
                r1 = _split(n, t + 1, chunks)
                _gemm(&dyp[r0, 0], up, 1, &wt[0, 0], dp, &dxp[r0, 0], dp, r1 - r0, u, dp)
    else:
        dwp_arr[...] = 0
    dw = dwp_arr[:, :u].copy()                       # always copies: the workspaces are reused
    db = np.asarray(dy).sum(axis=0)
    dx = dxp_arr[:, :d].copy() if need_dx else None
    return dx, dw, db
