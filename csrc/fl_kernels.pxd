# Every C kernel of csrc/*.h, declared once for Cython, and the typed dispatch
# (fused `floating` -> the _f32 / _f64 kernel) that conv.pyx and linear.pyx share.
#
# Dimension legend: M rows, Kd inner dimension, Lp padded columns of a GEMM; C channels,
# H/W input, HS/WS padded plane, KH/KW kernel, s stride, OH/OW conv output, PH/PW pooled
# output, F filters (Fq, F8 rounded up), L = OH*OW.  The headers' comments give each
# kernel's exact contract; the plan that picks between them is fastlenet/kernels/plan.py.
from cython cimport floating
cimport openmp

cdef extern from "fl_common.h":
    enum:
        FL_MB
        # lanes of a register-tile row: one float32 vector of the build's ISA (16 with
        # AVX-512, 8 with AVX2, 4 with SSE); the plan is made for it (conv.pyx LANES)
        LB "FL_LB"
    # whether a max-pool scan replaces its max m by v: larger, or the window's first NaN
    bint fl_takes "FL_TAKES"(double v, double m) nogil
cdef extern from "direct_conv.h":
    enum:
        FL_POOL_FLANES_TILE
        FL_FLANES_COLS

cdef enum:
    MB = 4       # rows of a GEMM register tile (FL_MB)

cdef extern from "gemm.h" nogil:
    void fl_gemm_nt_acc_f32(const float* A, long lda, const float* B, long ldb, float* C, long ldc,
                            long M, long N, long Lp)
    void fl_gemm_nt_acc_f64(const double* A, long lda, const double* B, long ldb, double* C, long ldc,
                            long M, long N, long Lp)
    void fl_gemm_nn_f32(const float* A, long lda, long sak, const float* B, long ldb, float* C,
                        long ldc, long M, long Kd, long Lp, const float* bias, int accumulate)
    void fl_gemm_nn_f64(const double* A, long lda, long sak, const double* B, long ldb, double* C,
                        long ldc, long M, long Kd, long Lp, const double* bias, int accumulate)
    void fl_transpose_f32(const float* src, long lds, long R, long C, float* dst, long ldd)
    void fl_transpose_f64(const double* src, long lds, long R, long C, double* dst, long ldd)

cdef extern from "layout.h" nogil:
    void fl_pad_copy_f32(const float* x, long C, long H, long W, long p, float* xp, long HS, long WS)
    void fl_pad_copy_f64(const double* x, long C, long H, long W, long p, double* xp, long HS, long WS)
    void fl_im2row_f32(const float* xp, long C, long HS, long WS, long KH, long KW, long s,
                       long OH, long OW, float* rows, long ldr)
    void fl_im2row_f64(const double* xp, long C, long HS, long WS, long KH, long KW, long s,
                       long OH, long OW, double* rows, long ldr)
    void fl_col2im_s1_f32(const float* cols, long ldc, long C, long KH, long KW, long OH, long OW,
                          float* xp, long HS, long WS)
    void fl_col2im_s1_f64(const double* cols, long ldc, long C, long KH, long KW, long OH, long OW,
                          double* xp, long HS, long WS)

cdef extern from "norm_pool.h" nogil:
    enum:
        FL_NP    # planes per group of the lane-parallel batch norm + ReLU + 2x2 pool
    void fl_bn_relu_maxpool2_planes_f32(const float* x, long H, long W, const float* m, const float* a,
                                        const float* b, float* zt, float* y, int* arg, long PH, long PW)
    void fl_bn_relu_maxpool2_planes_f64(const double* x, long H, long W, const double* m, const double* a,
                                        const double* b, double* zt, double* y, int* arg, long PH, long PW)

cdef extern from "direct_conv.h" nogil:
    void fl_relu_maxpool2_f32(const float* z, long OW, float* y, int* arg, long PH, long PW)
    void fl_relu_maxpool2_f64(const double* z, long OW, double* y, int* arg, long PH, long PW)
    void fl_direct_conv_f32(const float* xp, long C, long HS, long WS, const float* wd, long F,
                            long KH, long KW, const float* bias, float* z, long ldz, long OH, long OW)
    void fl_direct_conv_f64(const double* xp, long C, long HS, long WS, const double* wd, long F,
                            long KH, long KW, const double* bias, double* z, long ldz, long OH, long OW)
    void fl_direct_conv_flanes_f32(const float* xp, long C, long HS, long WS, long s, const float* wq, long F,
            long Fq, long KH, long KW, const float* bias, float* z, long ldz, long OH, long OW)
    void fl_direct_conv_flanes_f64(const double* xp, long C, long HS, long WS, long s, const double* wq, long F,
            long Fq, long KH, long KW, const double* bias, double* z, long ldz, long OH, long OW)
    void fl_direct_conv_pool2_f8v1_f32(const float* xp, long C, long HS, long WS, const float* wd,
            long FP, long KH, long KW, const float* bias, long OW, long PH, long PW, float* y, int* arg, long ldy)
    void fl_direct_conv_pool2_f8v1_f64(const double* xp, long C, long HS, long WS, const double* wd,
            long FP, long KH, long KW, const double* bias, long OW, long PH, long PW, double* y, int* arg, long ldy)
    # the plan's tile_f6: fl_direct_conv_pool2_f6v2 (16 lanes) or _f6cols (fewer lanes)
    void fl_direct_conv_pool2_tile_f6_f32(const float* xp, long C, long HS, long WS, const float* wd,
            long FP, long KH, long KW, const float* bias, long OW, long PH, long PW, float* y, int* arg, long ldy)
    void fl_direct_conv_pool2_tile_f6_f64(const double* xp, long C, long HS, long WS, const double* wd,
            long FP, long KH, long KW, const double* bias, long OW, long PH, long PW, double* y, int* arg, long ldy)
    void fl_direct_conv_pool2_flanes5_f32(const float* xp, long C, long HS, long WS, const float* wq,
            long F, long Fq, long KH, long KW, const float* bias, long OW, long PH, long PW, float* y,
            int* arg, long ldy)
    void fl_direct_conv_pool2_flanes5_f64(const double* xp, long C, long HS, long WS, const double* wq,
            long F, long Fq, long KH, long KW, const double* bias, long OW, long PH, long PW, double* y,
            int* arg, long ldy)

cdef extern from "dw.h" nogil:
    void fl_dw_lanes_k5_f32(const float* xp, long C, long HS, long WS, long KH, const float* dzr,
                              long F, long OH, long OWr, float* dwv)
    void fl_dw_lanes_k5_f64(const double* xp, long C, long HS, long WS, long KH, const double* dzr,
                              long F, long OH, long OWr, double* dwv)
    void fl_dw_lanes_k3_f32(const float* xp, long C, long HS, long WS, long KH, const float* dzr,
                              long F, long OH, long OWr, float* dwv)
    void fl_dw_lanes_k3_f64(const double* xp, long C, long HS, long WS, long KH, const double* dzr,
                              long F, long OH, long OWr, double* dwv)
    void fl_dw_direct_k5_f32(const float* xp, long C, long HS, long WS, long KH, long s,
                             const float* dzt, long ldt, long lanes, long OH, long OW, float* dwt)
    void fl_dw_direct_k5_f64(const double* xp, long C, long HS, long WS, long KH, long s,
                             const double* dzt, long ldt, long lanes, long OH, long OW, double* dwt)
    void fl_dw_direct_k3_f32(const float* xp, long C, long HS, long WS, long KH, long s,
                             const float* dzt, long ldt, long lanes, long OH, long OW, float* dwt)
    void fl_dw_direct_k3_f64(const double* xp, long C, long HS, long WS, long KH, long s,
                             const double* dzt, long ldt, long lanes, long OH, long OW, double* dwt)

cdef extern from "pool_dw.h" nogil:
    void fl_dw_pooled_argmax_f32(const float* xp, const int* row_offsets, long rows, const float* dpy,
                                 const int* arg, long ldp, long P, const int* offsets, long nf, float* g,
                                 int* off, float* dwl)
    void fl_dw_pooled_argmax_f64(const double* xp, const int* row_offsets, long rows, const double* dpy,
                                 const int* arg, long ldp, long P, const int* offsets, long nf, double* g,
                                 int* off, double* dwl)
    int fl_all_finite_f32(const float* x, long n)
    int fl_all_finite_f64(const double* x, long n)

cdef extern from "winograd.h" nogil:
    void fl_winograd_transform_filters_f32(const float* w, long F, long C, long K, int flip, float* U)
    void fl_winograd_transform_filters_f64(const double* w, long F, long C, long K, int flip, double* U)
    int fl_winograd_run_f32(const float* xp, long C, long HS, long WS, long K, const float* U, long uq, long F,
                            const float* bias, long OH, long OW, long TR, long P, float* V, float* M,
                            float* out, long ldo)
    int fl_winograd_run_f64(const double* xp, long C, long HS, long WS, long K, const double* U, long uq, long F,
                            const double* bias, long OH, long OW, long TR, long P, double* V, double* M,
                            double* out, long ldo)
    void fl_winograd_dw_tiles_f32(const float* xp, long C, long HS, long WS, const float* dzq, long F, long WQ,
                                  long OH, long OW, long ty0, long ty1, float* V, long ldv, float* Mq,
                                  long ldm, long ldp, long K)
    void fl_winograd_dw_tiles_f64(const double* xp, long C, long HS, long WS, const double* dzq, long F,
                                  long WQ, long OH, long OW, long ty0, long ty1, double* V, long ldv,
                                  double* Mq, long ldm, long ldp, long K)
    void fl_winograd_dw_gemms_f32(const float* V, long ldv, const float* Mq, long ldm, long ldp, long Cp,
                                  long Fp, long Lp, long Q, float* dU)
    void fl_winograd_dw_gemms_f64(const double* V, long ldv, const double* Mq, long ldm, long ldp, long Cp,
                                  long Fp, long Lp, long Q, double* dU)
    void fl_winograd_dw_to_filters_f32(const float* dU, long F, long C, long Fp, long Cp, long K, float* dw)
    void fl_winograd_dw_to_filters_f64(const double* dU, long F, long C, long Fp, long Cp, long K, double* dw)
    void fl_conv_exact_f32(const float* xp, long C, long HS, long WS, const float* w, long K, int flip,
                           long F, const float* bias, long OH, long OW, float* out, long ldo)
    void fl_conv_exact_f64(const double* xp, long C, long HS, long WS, const double* w, long K, int flip,
                           long F, const double* bias, long OH, long OW, double* out, long ldo)

cdef extern from "plane_pool.h" nogil:
    void fl_maxpool_plane_f32(const float* x, long W, long OH, long OW, long S, long s, float* y, int* arg)
    void fl_maxpool_plane_f64(const double* x, long W, long OH, long OW, long S, long s, double* y, int* arg)
    void fl_avgpool_plane_f32(const float* x, long W, long OH, long OW, long S, long s, float scale, float* y)
    void fl_avgpool_plane_f64(const double* x, long W, long OH, long OW, long S, long s, double scale,
                              double* y)
    void fl_avgpool_plane_grad_f32(const float* g, long W, long OH, long OW, long S, long s, float scale,
                                   float* dx)
    void fl_avgpool_plane_grad_f64(const double* g, long W, long OH, long OW, long S, long s, double scale,
                                   double* dx)

cdef extern from "pool_grad.h" nogil:
    float fl_route_pool_grad_f32(const float* dpy, const int* arg, long PH, long PW, long OW,
                                 long size, long ps, float* out, long ystride, long xstride)
    double fl_route_pool_grad_f64(const double* dpy, const int* arg, long PH, long PW, long OW,
                                  long size, long ps, double* out, long ystride, long xstride)
    void fl_expand_pool2_grad_f32(const float* dpy, const int* arg, long PH, long PW, long OH, long OW,
                                  float* out, long ldrow, const float* end)
    void fl_expand_pool2_grad_f64(const double* dpy, const int* arg, long PH, long PW, long OH, long OW,
                                  double* out, long ldrow, const double* end)
    float fl_routed_sum_f32(const float* dpy, const int* arg, long n)
    double fl_routed_sum_f64(const double* dpy, const int* arg, long n)


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


cdef inline void _gemm_nt_acc(const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                              floating* C, Py_ssize_t ldc, Py_ssize_t M, Py_ssize_t N,
                              Py_ssize_t Lp) noexcept nogil:
    """C[M, N] += A[M, Lp] @ B[N, Lp]^T.  M % MB == 0, N % MB == 0, Lp % LB == 0."""
    if floating is float:
        fl_gemm_nt_acc_f32(A, lda, B, ldb, C, ldc, M, N, Lp)
    else:
        fl_gemm_nt_acc_f64(A, lda, B, ldb, C, ldc, M, N, Lp)


cdef inline void _winograd_filters(const floating* w, Py_ssize_t f, Py_ssize_t c, Py_ssize_t k,
                                   bint flip, floating* u) noexcept nogil:
    """u (Q, F, C) = the Winograd F(2x2, KxK) transform of w (F, C, K, K), K 3 or 5 (Q 16 or
    36 tile positions); with flip, u (Q, C, F) of the dx convolution (w[f, c] rotated by
    180 degrees)."""
    if floating is float:
        fl_winograd_transform_filters_f32(w, f, c, k, flip, u)
    else:
        fl_winograd_transform_filters_f64(w, f, c, k, flip, u)


cdef inline void _pad_copy(const floating* x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t p,
                           floating* xp, Py_ssize_t hs, Py_ssize_t ws) noexcept nogil:
    """x (C, H, W) -> the interior of xp (C, HS, WS) (zero borders left as they are)."""
    if floating is float:
        fl_pad_copy_f32(x, c, h, w, p, xp, hs, ws)
    else:
        fl_pad_copy_f64(x, c, h, w, p, xp, hs, ws)
