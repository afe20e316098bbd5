# Included by conv.pyx and linear.pyx: the GEMM tile sizes of csrc/microkernels.h,
# typed entries to its register-blocked product and its tiled transpose, and the
# size of a parallel region's team (the including file cimports `floating` and
# `openmp`).

cdef enum:
    MB = 4       # rows of a GEMM tile
    LB = 16      # columns of a GEMM tile (one AVX-512 float32 vector)


cdef extern from "microkernels.h" nogil:
    void fl_gemm_nn_f32(const float* A, long lda, long sak, const float* B, long ldb, float* C,
                        long ldc, long M, long Kd, long Lp, const float* bias, int accumulate)
    void fl_gemm_nn_f64(const double* A, long lda, long sak, const double* B, long ldb, double* C,
                        long ldc, long M, long Kd, long Lp, const double* bias, int accumulate)
    void fl_transpose_f32(const float* src, long lds, long R, long C, float* dst, long ldd)
    void fl_transpose_f64(const double* src, long lds, long R, long C, double* dst, long ldd)


cdef inline int _team_size(Py_ssize_t items) noexcept nogil:
    """Threads for a parallel loop over ``items`` work items: no more than there are items."""
    cdef int t = openmp.omp_get_max_threads()
    return <int> items if items < t else t


cdef inline Py_ssize_t _round_up(Py_ssize_t v, Py_ssize_t m) noexcept nogil:
    return (v + m - 1) // m * m


cdef inline void _gemm_nn(const floating* A, Py_ssize_t lda, Py_ssize_t sak, const floating* B,
                          Py_ssize_t ldb, floating* C, Py_ssize_t ldc, Py_ssize_t M, Py_ssize_t Kd,
                          Py_ssize_t Lp, const floating* bias, bint accumulate) noexcept nogil:
    """C[M, Lp] (+)= A[M, Kd] @ B[Kd, Lp] (+ bias[m] on row m), A[m, k] at A[m*lda + k*sak].
    Lp % LB == 0; any M (a last partial block of rows is handled)."""
    if M <= 0:
        return
    if floating is float:
        fl_gemm_nn_f32(A, lda, sak, B, ldb, C, ldc, M, Kd, Lp, bias, accumulate)
    else:
        fl_gemm_nn_f64(A, lda, sak, B, ldb, C, ldc, M, Kd, Lp, bias, accumulate)


cdef inline void _transpose(const floating* src, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t cols,
                            floating* dst, Py_ssize_t ldd) noexcept nogil:
    """dst[j, i] = src[i, j] for i < rows, j < cols (row strides lds, ldd)."""
    if floating is float:
        fl_transpose_f32(src, lds, rows, cols, dst, ldd)
    else:
        fl_transpose_f64(src, lds, rows, cols, dst, ldd)
