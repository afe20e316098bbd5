#ifndef FASTLENET_GEMM_H
#define FASTLENET_GEMM_H
#include "fl_common.h"

/* Register-blocked GEMM micro-kernels for the small per-sample products of a
 * convolution and a dense layer (F = 6..120, K = 25..400, L = 25..784), and the tiled
 * transpose their operands need.
 *
 * Dimension legend: M rows of the output, Kd inner dimension, Lp (padded) columns;
 * MB x LB is the register tile.  An MB x LB tile of the output stays in registers
 * while the inner loop streams one row of B against MB broadcast values of A.
 * Callers pad Lp to a multiple of LB with zeros, so there is no remainder code; a
 * last block of fewer than MB rows repeats its last row and stores only the real ones.
 * The convolution products are this one shape: y = W @ cols (im2col forward),
 * dW += dZ @ rows (rows = im2col transposed, "im2row") and dcols = W^T @ dZ.
 */
/* The vector a GEMM of doubles computes in: one register of doubles (FL_LB / 2 lanes;
 * Lp, a multiple of FL_LB, is one of FL_LB / 2).  fl_vec_f64 holds FL_LB doubles, two
 * registers: a type with no machine mode of its size, which GCC keeps in memory, and a
 * scalar times one it builds by scalar stores and a wide reload (a failed store-to-load
 * forward per multiply-add: the 1 x 1 conv ran at 9 GFLOP/s in float64, 19x its float32
 * time).  The float GEMM computes in fl_vec_f32, one register. */
typedef double fl_reg_f64 __attribute__((vector_size(FL_LB / 2 * sizeof(double))));
#define FL_VLOAD(V, p) ({ V v_; memcpy(&v_, (p), sizeof v_); v_; })
#define FL_VSTORE(p, v) do { __typeof__(v) v2_ = (v); memcpy((p), &v2_, sizeof v2_); } while (0)
/* every GEMM vector (fl_vec_f32, fl_reg_f64) is one register: the float form of the hint holds */
#define FL_GEMM_IN_REGISTER(v) FL_IN_REGISTER_f32(v)

/* The 2 MB-row tile where 16 accumulators fit the registers (AVX-512's 32). */
#if FL_LB == 16
#define FL_GEMM_ROWS8_f32 1
#define FL_GEMM_ROWS8_f64 1
#else
#define FL_GEMM_ROWS8_f32 0
#define FL_GEMM_ROWS8_f64 0
#endif

/* The lane sums of each accumulator of a FL_MB x FL_MB tile of NL-lane vectors, lane by lane. */
#define FL_TILE_SUMS_LANES(T, acc, C, ldc, NL) do {                                           \
    for (int i = 0; i < FL_MB; i++)                                                           \
        for (int q = 0; q < FL_MB; q++) {                                                     \
            T total = 0;                                                                      \
            for (int j = 0; j < (NL); j++) total += acc[i][q][j];                             \
            (C)[i * (ldc) + q] += total;                                                      \
        }                                                                                     \
} while (0)

/* The lane sums of a 4 x 4 tile of 16-lane accumulators, in one vector (see
 * fl_add_tile_sums): lane k of the result is the sum of acc[k / 4][k % 4]. */
#if FL_LB == 16 && FL_MB == 4
#define FL_HALVES(a, b, L0, L1)                                                               \
    (__builtin_shufflevector(a, b, L0) + __builtin_shufflevector(a, b, L1))
#define FL_LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define FL_HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define FL_LO4 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27
#define FL_HI4 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31
#define FL_LO2 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29
#define FL_HI2 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31
#define FL_LO1 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define FL_HI1 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define FL_TILE_SUMS_VEC(VT, T, acc, C, ldc) do {                                             \
    VT h8[8], h4[4], h2[2], total;                                                            \
    for (int k = 0; k < 8; k++)                                                               \
        h8[k] = FL_HALVES(acc[(2 * k) / 4][(2 * k) % 4], acc[(2 * k + 1) / 4][(2 * k + 1) % 4], \
                          FL_LO8, FL_HI8);                                                    \
    for (int k = 0; k < 4; k++) h4[k] = FL_HALVES(h8[2 * k], h8[2 * k + 1], FL_LO4, FL_HI4);  \
    for (int k = 0; k < 2; k++) h2[k] = FL_HALVES(h4[2 * k], h4[2 * k + 1], FL_LO2, FL_HI2);  \
    total = FL_HALVES(h2[0], h2[1], FL_LO1, FL_HI1);                                          \
    T sums[16];                                                                               \
    memcpy(sums, &total, sizeof sums);                                                        \
    for (int i = 0; i < 4; i++)                                                               \
        for (int q = 0; q < 4; q++) (C)[i * (ldc) + q] += sums[i * 4 + q];                    \
} while (0)
#define FL_TILE_SUMS_f32(acc, C, ldc, NL) FL_TILE_SUMS_VEC(fl_vec_f32, float, acc, C, ldc)
#define FL_TILE_SUMS_f64(acc, C, ldc, NL) FL_TILE_SUMS_LANES(double, acc, C, ldc, NL)
#else
#define FL_TILE_SUMS_f32(acc, C, ldc, NL) FL_TILE_SUMS_LANES(float, acc, C, ldc, NL)
#define FL_TILE_SUMS_f64(acc, C, ldc, NL) FL_TILE_SUMS_LANES(double, acc, C, ldc, NL)
#endif

/* A 16 x 16 tile of floats transposed in registers (AVX-512): four stages, each swapping the
 * off-diagonal b x b blocks of every 2b x 2b block (b = 8, 4, 2, 1) with one two-vector
 * shuffle per row; 16 loads and 16 stores instead of 256 scalar moves (the scalar loop ran
 * at two elements per load-insert-store round: 6% of LeNet C3's backward).  Returns 0 (not
 * done) where there is no such kernel: float64, or narrower vectors. */
#if FL_LB == 16
#define FL_T_SWAP(b, LO, HI)                                                                  \
    for (int i = 0; i < 16; i++)                                                              \
        if ((i & (b)) == 0) {                                                                 \
            fl_vec_f32 a_ = r[i], c_ = r[i + (b)];                                            \
            r[i] = __builtin_shufflevector(a_, c_, LO);                                       \
            r[i + (b)] = __builtin_shufflevector(a_, c_, HI);                                 \
        }
#define FL_T8_LO 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define FL_T8_HI 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define FL_T4_LO 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define FL_T4_HI 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define FL_T2_LO 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define FL_T2_HI 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define FL_T1_LO 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define FL_T1_HI 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
static inline int fl_transpose_tile_f32(const float *src, long lds, float *dst, long ldd) {
    fl_vec_f32 r[16];
    for (int i = 0; i < 16; i++) r[i] = fl_load_f32(src + i * lds);
    FL_T_SWAP(8, FL_T8_LO, FL_T8_HI)
    FL_T_SWAP(4, FL_T4_LO, FL_T4_HI)
    FL_T_SWAP(2, FL_T2_LO, FL_T2_HI)
    FL_T_SWAP(1, FL_T1_LO, FL_T1_HI)
    for (int i = 0; i < 16; i++) fl_store_f32(dst + i * ldd, r[i]);
    return 1;
}
#else
static inline int fl_transpose_tile_f32(const float *src, long lds, float *dst, long ldd) {
    (void)src; (void)lds; (void)dst; (void)ldd;
    return 0;
}
#endif
static inline int fl_transpose_tile_f64(const double *src, long lds, double *dst, long ldd) {
    (void)src; (void)lds; (void)dst; (void)ldd;
    return 0;
}

#define FL_DEFINE_GEMM(T, SUFFIX, V, NL)                                                          \
/* C[M, Lp] (+)= A[M, Kd] @ B[Kd, Lp]: overwrite (plus bias[m] on row m when bias is    \
 * not NULL) or, with accumulate, add to C.  A[m, k] is A[m*lda + k*sak] (sak = lda = 1  \
 * reads A transposed).  Tiles of MB rows x 2 vectors (8 independent accumulators:       \
 * enough multiply-adds in flight to cover the FMA latency), then one vector when        \
 * Lp % (2 LB) leaves one over; a last block of fewer than MB rows repeats its last row  \
 * and stores only the real ones. */                                                     \
/* Rows m0 .. m0+2MB-1 of C (all real rows), for builds with 32 vector registers: 2 MB rows   \
 * x 2 vectors = 16 accumulators, so each pair of B vectors loaded feeds 16 multiply-adds     \
 * (8 in the MB-row tile).  The same sums in the same order as the MB-row tile: only the    \
 * speed differs. */                                                                         \
static inline __attribute__((always_inline)) void                                            \
fl_gemm_nn_rows8_##SUFFIX(const T *A, long lda, long sak, const T *B, long ldb, T *C,        \
                          long ldc, long Kd, long Lp, const T *bias, int accumulate) {       \
    V init[2 * FL_MB];                                                          \
    for (int r = 0; r < 2 * FL_MB; r++) {                                                     \
        init[r] = (V){0};                                                       \
        if (bias && !accumulate) init[r] += bias[r];                                          \
    }                                                                                         \
    long l0 = 0;                                                                              \
    for (; l0 + 2 * NL <= Lp; l0 += 2 * NL) {                                           \
        V c[2 * FL_MB], d[2 * FL_MB];                                           \
        for (int r = 0; r < 2 * FL_MB; r++) {                                                 \
            c[r] = accumulate ? FL_VLOAD(V, C + r * ldc + l0) : init[r];                 \
            d[r] = accumulate ? FL_VLOAD(V, C + r * ldc + l0 + NL) : init[r];         \
        }                                                                                     \
        const T *b = B + l0;                                                                  \
        for (long k = 0; k < Kd; k++, b += ldb) {                                             \
            V bv = FL_VLOAD(V, b), bw = FL_VLOAD(V, b + NL);       \
            FL_GEMM_IN_REGISTER(bv); FL_GEMM_IN_REGISTER(bw);                         \
            for (int r = 0; r < 2 * FL_MB; r++) {                                             \
                T x = A[r * lda + k * sak];                                                   \
                c[r] += x * bv; d[r] += x * bw;                                               \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < 2 * FL_MB; r++) {                                                 \
            FL_VSTORE(C + r * ldc + l0, c[r]);                                        \
            FL_VSTORE(C + r * ldc + l0 + NL, d[r]);                                \
        }                                                                                     \
    }                                                                                         \
    if (l0 < Lp) {                                                                            \
        V c[2 * FL_MB];                                                         \
        for (int r = 0; r < 2 * FL_MB; r++)                                                   \
            c[r] = accumulate ? FL_VLOAD(V, C + r * ldc + l0) : init[r];                 \
        const T *b = B + l0;                                                                  \
        for (long k = 0; k < Kd; k++, b += ldb) {                                             \
            V bv = FL_VLOAD(V, b);                                         \
            for (int r = 0; r < 2 * FL_MB; r++) c[r] += A[r * lda + k * sak] * bv;            \
        }                                                                                     \
        for (int r = 0; r < 2 * FL_MB; r++) FL_VSTORE(C + r * ldc + l0, c[r]);        \
    }                                                                                         \
}                                                                                             \
static inline __attribute__((always_inline)) void                                            \
fl_gemm_nn_core_##SUFFIX(const T *A, long lda, long sak, const T *B, long ldb, T *C,          \
                         long ldc, long M, long Kd, long Lp, const T *bias, int accumulate) { \
    long m0 = 0;                                                                              \
    if (FL_GEMM_ROWS8_##SUFFIX)                                                               \
        for (; m0 + 2 * FL_MB <= M; m0 += 2 * FL_MB)                                          \
            fl_gemm_nn_rows8_##SUFFIX(A + m0 * lda, lda, sak, B, ldb, C + m0 * ldc, ldc, Kd,   \
                                      Lp, bias ? bias + m0 : bias, accumulate);               \
    for (; m0 < M; m0 += FL_MB) {                                                             \
        long r1 = m0 + 1 < M ? 1 : 0, r2 = m0 + 2 < M ? 2 : r1, r3 = m0 + 3 < M ? 3 : r2;     \
        const T *a0 = A + m0 * lda, *a1 = a0 + r1 * lda, *a2 = a0 + r2 * lda, *a3 = a0 + r3 * lda; \
        T *c0p = C + m0 * ldc, *c1p = c0p + r1 * ldc, *c2p = c0p + r2 * ldc, *c3p = c0p + r3 * ldc; \
        int store1 = r1 == 1, store2 = r2 == 2, store3 = r3 == 3;                             \
        V init0 = {0}, init1 = {0}, init2 = {0}, init3 = {0};                   \
        if (bias && !accumulate) {                                                            \
            init0 += bias[m0]; init1 += bias[m0 + r1];                                        \
            init2 += bias[m0 + r2]; init3 += bias[m0 + r3];                                   \
        }                                                                                     \
        long l0 = 0;                                                                          \
        for (; l0 + 2 * NL <= Lp; l0 += 2 * NL) {                                       \
            V c0 = init0, c1 = init1, c2 = init2, c3 = init3;                   \
            V d0 = init0, d1 = init1, d2 = init2, d3 = init3;                   \
            if (accumulate) {                                                                 \
                c0 = FL_VLOAD(V, c0p + l0); d0 = FL_VLOAD(V, c0p + l0 + NL);     \
                c1 = FL_VLOAD(V, c1p + l0); d1 = FL_VLOAD(V, c1p + l0 + NL);     \
                c2 = FL_VLOAD(V, c2p + l0); d2 = FL_VLOAD(V, c2p + l0 + NL);     \
                c3 = FL_VLOAD(V, c3p + l0); d3 = FL_VLOAD(V, c3p + l0 + NL);     \
            }                                                                                 \
            const T *b = B + l0;                                                              \
            for (long k = 0; k < Kd; k++, b += ldb) {                                         \
                V bv = FL_VLOAD(V, b), bw = FL_VLOAD(V, b + NL);   \
                FL_GEMM_IN_REGISTER(bv); FL_GEMM_IN_REGISTER(bw);                             \
                T x0 = a0[k * sak], x1 = a1[k * sak], x2 = a2[k * sak], x3 = a3[k * sak];     \
                c0 += x0 * bv; d0 += x0 * bw; c1 += x1 * bv; d1 += x1 * bw;                   \
                c2 += x2 * bv; d2 += x2 * bw; c3 += x3 * bv; d3 += x3 * bw;                   \
            }                                                                                 \
            FL_VSTORE(c0p + l0, c0); FL_VSTORE(c0p + l0 + NL, d0);         \
            if (store1) { FL_VSTORE(c1p + l0, c1); FL_VSTORE(c1p + l0 + NL, d1); } \
            if (store2) { FL_VSTORE(c2p + l0, c2); FL_VSTORE(c2p + l0 + NL, d2); } \
            if (store3) { FL_VSTORE(c3p + l0, c3); FL_VSTORE(c3p + l0 + NL, d3); } \
        }                                                                                     \
        if (l0 < Lp) {                                                                        \
            V c0 = init0, c1 = init1, c2 = init2, c3 = init3;                   \
            if (accumulate) {                                                                 \
                c0 = FL_VLOAD(V, c0p + l0); c1 = FL_VLOAD(V, c1p + l0);             \
                c2 = FL_VLOAD(V, c2p + l0); c3 = FL_VLOAD(V, c3p + l0);             \
            }                                                                                 \
            const T *b = B + l0;                                                              \
            for (long k = 0; k < Kd; k++, b += ldb) {                                         \
                V bv = FL_VLOAD(V, b);                                     \
                c0 += a0[k * sak] * bv; c1 += a1[k * sak] * bv;                               \
                c2 += a2[k * sak] * bv; c3 += a3[k * sak] * bv;                               \
            }                                                                                 \
            FL_VSTORE(c0p + l0, c0);                                                  \
            if (store1) FL_VSTORE(c1p + l0, c1);                                      \
            if (store2) FL_VSTORE(c2p + l0, c2);                                      \
            if (store3) FL_VSTORE(c3p + l0, c3);                                      \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
static void fl_gemm_nn_##SUFFIX(const T *A, long lda, long sak, const T *B, long ldb, T *C,  \
                                long ldc, long M, long Kd, long Lp, const T *bias,           \
                                int accumulate) {                                             \
    if (sak == 1)       /* contiguous rows of A: unit-stride broadcasts */                    \
        fl_gemm_nn_core_##SUFFIX(A, lda, 1, B, ldb, C, ldc, M, Kd, Lp, bias, accumulate);     \
    else                                                                                      \
        fl_gemm_nn_core_##SUFFIX(A, lda, sak, B, ldb, C, ldc, M, Kd, Lp, bias, accumulate);   \
}                                                                                              \
/* C[i, q] += the sum of the lanes of acc[i][q], for a FL_MB x FL_MB tile.  With 16 lanes and  \
 * 4 x 4 accumulators, a butterfly sums the 16 vectors into one vector of their 16 totals    \
 * (15 shuffle pairs and adds: each level adds the two halves of every vector and packs two  \
 * vectors into one); otherwise each total is summed lane by lane. */                        \
static inline __attribute__((always_inline)) void                                            \
fl_add_tile_sums_##SUFFIX(V acc[FL_MB][FL_MB], T *C, long ldc) {               \
    FL_TILE_SUMS_##SUFFIX(acc, C, ldc, NL);                                                       \
}                                                                                             \
/* C[M, N] += A[M, Lp] @ B[N, Lp]^T, reduced over the columns: the dW product when L is     \
 * long and K short (a first layer), where an im2row copy would cost more than it saves. */ \
static void fl_gemm_nt_acc_##SUFFIX(const T *A, long lda, const T *B, long ldb, T *C,        \
                                    long ldc, long M, long N, long Lp) {                      \
    for (long m0 = 0; m0 < M; m0 += FL_MB) {                                                  \
        for (long n0 = 0; n0 < N; n0 += FL_MB) {                                              \
            V acc[FL_MB][FL_MB];                                                \
            memset(acc, 0, sizeof acc);                                                       \
            for (long l0 = 0; l0 < Lp; l0 += NL) {                                         \
                V a[FL_MB], b[FL_MB];                                           \
                for (int i = 0; i < FL_MB; i++) {                                             \
                    a[i] = FL_VLOAD(V, A + (m0 + i) * lda + l0);                         \
                    b[i] = FL_VLOAD(V, B + (n0 + i) * ldb + l0);                         \
                }                                                                             \
                for (int i = 0; i < FL_MB; i++)                                               \
                    for (int q = 0; q < FL_MB; q++)                                           \
                        acc[i][q] += a[i] * b[q];                                             \
            }                                                                                 \
            fl_add_tile_sums_##SUFFIX(acc, C + m0 * ldc + n0, ldc);                           \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* dzt[l, f] = dz[f, l] for f < F, l < L (row strides ldz, ldt), e.g. filters to the lanes. */         \
static void fl_transpose_##SUFFIX(const T *dz, long ldz, long F, long L, T *dzt, long ldt) {  \
    /* in LB x LB tiles: reads and writes each stay within a few cache lines */               \
    for (long f0 = 0; f0 < F; f0 += NL)                                                    \
        for (long l0 = 0; l0 < L; l0 += NL) {                                              \
            long f1 = f0 + NL < F ? f0 + NL : F, l1 = l0 + NL < L ? l0 + NL : L;  \
            if (f1 - f0 == 16 && l1 - l0 == 16 &&                                             \
                    fl_transpose_tile_##SUFFIX(dz + f0 * ldz + l0, ldz, dzt + l0 * ldt + f0, ldt)) \
                continue;                                                                     \
            for (long l = l0; l < l1; l++)                                                    \
                for (long f = f0; f < f1; f++) dzt[l * ldt + f] = dz[f * ldz + l];           \
        }                                                                                     \
}

FL_DEFINE_GEMM(float, f32, fl_vec_f32, FL_LB)
FL_DEFINE_GEMM(double, f64, fl_reg_f64, FL_LB / 2)

#endif
