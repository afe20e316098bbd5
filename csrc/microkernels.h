/* Register-blocked GEMM micro-kernels for the small per-sample GEMMs of a
 * convolution (F = 6..120, K = 25..400, L = 25..784), float and double.
 *
 * Dimension legend: M rows of the output, Kd inner dimension, Lp (padded)
 * columns; MB x LB is the register tile.
 *
 * GCC vector extensions hold an MB x LB tile of the output in registers
 * (LB = 16 lanes: one AVX-512 float vector, two double vectors) while the
 * inner loop streams one row of B against MB broadcast values of A.  Callers
 * pad M to a multiple of MB and Lp to a multiple of LB with zeros, so there
 * is no remainder code.  All three products of a convolution are this one
 * shape: y = W @ cols (forward), dW += dZ @ rows (rows = im2col transposed,
 * "im2row") and dcols = W^T @ dZ.  Unaligned loads and stores go through memcpy.
 */
#ifndef FASTLENET_MICROKERNELS_H
#define FASTLENET_MICROKERNELS_H
#if defined(__GNUC__)   /* each extension uses some of these static kernels, not all */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <string.h>

#define FL_MB 4
#define FL_LB 16
#define FL_MAX_TAPS 8   /* kernel widths whose col2im masks are kept precomputed */

/* Keeps a loaded vector in its register: without it GCC folds the load into each
 * multiply-add that uses it, and the tile becomes load-bound (two loads a cycle).
 * Only where one register holds the vector (16 floats in an AVX-512 register). */
#if defined(__GNUC__) && defined(__AVX512F__)
#define FL_IN_REGISTER_f32(v) __asm__("" : "+v"(v))
#else
#define FL_IN_REGISTER_f32(v) ((void)0)
#endif
#define FL_IN_REGISTER_f64(v) ((void)0)

/* Hides where a pointer came from, so GCC does not carry loaded values from one tap
 * to the next in registers (predictive commoning), which spills a full register tile. */
#if defined(__GNUC__)
#define FL_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define FL_OPAQUE(p) ((void)0)
#endif

/* a where mask (all ones), else b: a select between vectors, viewed as integer vectors IV */
#define FL_SEL(IV, VT, mask, a, b) ((VT)(((IV)(a) & (mask)) | ((IV)(b) & ~(mask))))

#define FL_DEFINE_KERNELS(T, IT, SUFFIX)                                                          \
typedef T fl_vec_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(T))));                   \
typedef IT fl_ivec_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(T))));                  \
typedef int fl_i32_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(int))));               \
                                                                                              \
static inline fl_vec_##SUFFIX fl_load_##SUFFIX(const T *p) {                                  \
    fl_vec_##SUFFIX v; memcpy(&v, p, sizeof v); return v;                                     \
}                                                                                             \
static inline void fl_store_##SUFFIX(T *p, fl_vec_##SUFFIX v) { memcpy(p, &v, sizeof v); }    \
/* v where keep != 0, else 0 (a select: garbage lanes are dropped, never multiplied) */      \
static inline fl_vec_##SUFFIX fl_select_##SUFFIX(fl_vec_##SUFFIX keep, fl_vec_##SUFFIX v) {    \
    fl_vec_##SUFFIX zero = {0};                                                               \
    fl_ivec_##SUFFIX mask = keep != zero;                                                     \
    return (fl_vec_##SUFFIX)((fl_ivec_##SUFFIX)v & mask);                                     \
}                                                                                             \
/* ReLU of the 2x2 pool window's max, lane by lane, from its corners a (0,0), b (0,1),    \
 * c (1,0), d (1,1): *k gets the corner 0..3 of the first max (scan order), *pos all ones \
 * where that max is > 0 (where the gradient flows).  Selects, not branches. */           \
static inline fl_vec_##SUFFIX fl_relu_max4_##SUFFIX(fl_vec_##SUFFIX a, fl_vec_##SUFFIX b,     \
        fl_vec_##SUFFIX c, fl_vec_##SUFFIX d, fl_ivec_##SUFFIX *k, fl_ivec_##SUFFIX *pos) {   \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    IV kk = {0}, gt;                                                                          \
    V m = a, zero = {0};                                                                      \
    gt = b > m; m = FL_SEL(IV, V, gt, b, m); kk = FL_SEL(IV, IV, gt, kk | 1, kk);             \
    gt = c > m; m = FL_SEL(IV, V, gt, c, m); kk = FL_SEL(IV, IV, gt, (kk & 0) | 2, kk);       \
    gt = d > m; m = FL_SEL(IV, V, gt, d, m); kk = FL_SEL(IV, IV, gt, (kk & 0) | 3, kk);       \
    *k = kk;                                                                                  \
    *pos = m > zero;                                                                          \
    return FL_SEL(IV, V, *pos, m, zero);                                                      \
}                                                                                             \
                                                                                              \
/* C[M, Lp] (+)= A[M, Kd] @ B[Kd, Lp]: overwrite (plus bias[m] on row m when bias is    \
 * not NULL) or, with accumulate, add to C.  A[m, k] is A[m*lda + k*sak] (sak = lda = 1  \
 * reads A transposed).  Tiles of MB rows x 2 vectors (8 independent accumulators:       \
 * enough multiply-adds in flight to cover the FMA latency), then one vector when        \
 * Lp % (2 LB) leaves one over; a last block of fewer than MB rows repeats its last row  \
 * and stores only the real ones. */                                                     \
static inline __attribute__((always_inline)) void                                            \
fl_gemm_nn_core_##SUFFIX(const T *A, long lda, long sak, const T *B, long ldb, T *C,          \
                         long ldc, long M, long Kd, long Lp, const T *bias, int accumulate) { \
    for (long m0 = 0; m0 < M; m0 += FL_MB) {                                                  \
        long r1 = m0 + 1 < M ? 1 : 0, r2 = m0 + 2 < M ? 2 : r1, r3 = m0 + 3 < M ? 3 : r2;     \
        const T *a0 = A + m0 * lda, *a1 = a0 + r1 * lda, *a2 = a0 + r2 * lda, *a3 = a0 + r3 * lda; \
        T *c0p = C + m0 * ldc, *c1p = c0p + r1 * ldc, *c2p = c0p + r2 * ldc, *c3p = c0p + r3 * ldc; \
        int store1 = r1 == 1, store2 = r2 == 2, store3 = r3 == 3;                             \
        fl_vec_##SUFFIX init0 = {0}, init1 = {0}, init2 = {0}, init3 = {0};                   \
        if (bias && !accumulate) {                                                            \
            init0 += bias[m0]; init1 += bias[m0 + r1];                                        \
            init2 += bias[m0 + r2]; init3 += bias[m0 + r3];                                   \
        }                                                                                     \
        long l0 = 0;                                                                          \
        for (; l0 + 2 * FL_LB <= Lp; l0 += 2 * FL_LB) {                                       \
            fl_vec_##SUFFIX c0 = init0, c1 = init1, c2 = init2, c3 = init3;                   \
            fl_vec_##SUFFIX d0 = init0, d1 = init1, d2 = init2, d3 = init3;                   \
            if (accumulate) {                                                                 \
                c0 = fl_load_##SUFFIX(c0p + l0); d0 = fl_load_##SUFFIX(c0p + l0 + FL_LB);     \
                c1 = fl_load_##SUFFIX(c1p + l0); d1 = fl_load_##SUFFIX(c1p + l0 + FL_LB);     \
                c2 = fl_load_##SUFFIX(c2p + l0); d2 = fl_load_##SUFFIX(c2p + l0 + FL_LB);     \
                c3 = fl_load_##SUFFIX(c3p + l0); d3 = fl_load_##SUFFIX(c3p + l0 + FL_LB);     \
            }                                                                                 \
            const T *b = B + l0;                                                              \
            for (long k = 0; k < Kd; k++, b += ldb) {                                         \
                fl_vec_##SUFFIX bv = fl_load_##SUFFIX(b), bw = fl_load_##SUFFIX(b + FL_LB);   \
                FL_IN_REGISTER_##SUFFIX(bv); FL_IN_REGISTER_##SUFFIX(bw);                             \
                T x0 = a0[k * sak], x1 = a1[k * sak], x2 = a2[k * sak], x3 = a3[k * sak];     \
                c0 += x0 * bv; d0 += x0 * bw; c1 += x1 * bv; d1 += x1 * bw;                   \
                c2 += x2 * bv; d2 += x2 * bw; c3 += x3 * bv; d3 += x3 * bw;                   \
            }                                                                                 \
            fl_store_##SUFFIX(c0p + l0, c0); fl_store_##SUFFIX(c0p + l0 + FL_LB, d0);         \
            if (store1) { fl_store_##SUFFIX(c1p + l0, c1); fl_store_##SUFFIX(c1p + l0 + FL_LB, d1); } \
            if (store2) { fl_store_##SUFFIX(c2p + l0, c2); fl_store_##SUFFIX(c2p + l0 + FL_LB, d2); } \
            if (store3) { fl_store_##SUFFIX(c3p + l0, c3); fl_store_##SUFFIX(c3p + l0 + FL_LB, d3); } \
        }                                                                                     \
        if (l0 < Lp) {                                                                        \
            fl_vec_##SUFFIX c0 = init0, c1 = init1, c2 = init2, c3 = init3;                   \
            if (accumulate) {                                                                 \
                c0 = fl_load_##SUFFIX(c0p + l0); c1 = fl_load_##SUFFIX(c1p + l0);             \
                c2 = fl_load_##SUFFIX(c2p + l0); c3 = fl_load_##SUFFIX(c3p + l0);             \
            }                                                                                 \
            const T *b = B + l0;                                                              \
            for (long k = 0; k < Kd; k++, b += ldb) {                                         \
                fl_vec_##SUFFIX bv = fl_load_##SUFFIX(b);                                     \
                c0 += a0[k * sak] * bv; c1 += a1[k * sak] * bv;                               \
                c2 += a2[k * sak] * bv; c3 += a3[k * sak] * bv;                               \
            }                                                                                 \
            fl_store_##SUFFIX(c0p + l0, c0);                                                  \
            if (store1) fl_store_##SUFFIX(c1p + l0, c1);                                      \
            if (store2) fl_store_##SUFFIX(c2p + l0, c2);                                      \
            if (store3) fl_store_##SUFFIX(c3p + l0, c3);                                      \
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
/* C[M, N] += A[M, Lp] @ B[N, Lp]^T, reduced over the columns: the dW product when L is     \
 * long and K short (a first layer), where an im2row copy would cost more than it saves. */ \
static void fl_gemm_nt_acc_##SUFFIX(const T *A, long lda, const T *B, long ldb, T *C,        \
                                    long ldc, long M, long N, long Lp) {                      \
    for (long m0 = 0; m0 < M; m0 += FL_MB) {                                                  \
        for (long n0 = 0; n0 < N; n0 += FL_MB) {                                              \
            fl_vec_##SUFFIX acc[FL_MB][FL_MB];                                                \
            memset(acc, 0, sizeof acc);                                                       \
            for (long l0 = 0; l0 < Lp; l0 += FL_LB) {                                         \
                fl_vec_##SUFFIX a[FL_MB], b[FL_MB];                                           \
                for (int i = 0; i < FL_MB; i++) {                                             \
                    a[i] = fl_load_##SUFFIX(A + (m0 + i) * lda + l0);                         \
                    b[i] = fl_load_##SUFFIX(B + (n0 + i) * ldb + l0);                         \
                }                                                                             \
                for (int i = 0; i < FL_MB; i++)                                               \
                    for (int q = 0; q < FL_MB; q++)                                           \
                        acc[i][q] += a[i] * b[q];                                             \
            }                                                                                 \
            for (int i = 0; i < FL_MB; i++)                                                   \
                for (int q = 0; q < FL_MB; q++) {                                             \
                    T total = 0;                                                              \
                    for (int j = 0; j < FL_LB; j++) total += acc[i][q][j];                    \
                    C[(m0 + i) * ldc + n0 + q] += total;                                      \
                }                                                                             \
        }                                                                                     \
    }                                                                                         \
}


FL_DEFINE_KERNELS(float, int, f32)
FL_DEFINE_KERNELS(double, long, f64)

/* Direct stride-1 convolution of one sample, for layers whose output rows are wide
 * enough to fill most of a vector (both LeNet convolutions), where im2col would copy
 * about as much as the GEMM computes:
 *   z[f, oy*OW + ox] = bias[f] + sum_{c,i,j} w[f,c,i,j] * xp[c, oy+i, ox+j]
 * xp (C, HS, WS): the zero-padded input, row stride WS >= round_up(OW, LB) + KW - 1.
 * wd (F/8, C*KH*KW, 8): the weights regrouped so that the 8 filters of a block are
 * contiguous for each tap (F padded to a multiple of 8 with zero filters).
 * Eight filters x LB output columns are held in registers; each input vector
 * loaded feeds eight multiply-adds. */
#define FL_DEFINE_DIRECT(T, SUFFIX)                                                           \
static void fl_direct_conv_##SUFFIX(const T *xp, long C, long HS, long WS, const T *wd,      \
                                    long F8, long KH, long KW, const T *bias, T *z,          \
                                    long ldz, long OH, long OW) {                            \
    long taps = C * KH * KW;                                                                  \
    for (long fb = 0; fb < F8; fb += 8) {                                                     \
        const T *wb = wd + (fb / 8) * taps * 8;                                               \
        for (long oy = 0; oy < OH; oy++) {                                                    \
            for (long ox0 = 0; ox0 < OW; ox0 += FL_LB) {                                      \
                fl_vec_##SUFFIX acc[8];                                                       \
                for (int f = 0; f < 8; f++) { acc[f] = (fl_vec_##SUFFIX){0}; acc[f] += bias[fb + f]; } \
                const T *wt = wb;                                                             \
                for (long c = 0; c < C; c++)                                                  \
                    for (long i = 0; i < KH; i++) {                                           \
                        const T *row = xp + (c * HS + oy + i) * WS + ox0;                     \
                        for (long j = 0; j < KW; j++, wt += 8) {                              \
                            fl_vec_##SUFFIX v = fl_load_##SUFFIX(row + j);                    \
                            for (int f = 0; f < 8; f++) acc[f] += wt[f] * v;                  \
                        }                                                                     \
                    }                                                                         \
                long n = OW - ox0 < FL_LB ? OW - ox0 : FL_LB;                                 \
                for (int f = 0; f < 8; f++) {                                                 \
                    T tmp[FL_LB];                                                             \
                    memcpy(tmp, &acc[f], sizeof tmp);                                         \
                    memcpy(z + (fb + f) * ldz + oy * OW + ox0, tmp, n * sizeof(T));           \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

FL_DEFINE_DIRECT(float, f32)
FL_DEFINE_DIRECT(double, f64)

/* ReLU then 2x2/stride-2 max pool of one conv-output plane z (OH, OW) (row stride OW):
 * y (PH, PW) = max(0, window max) and arg = flat index of the window's first max in z,
 * or -1 where that max is <= 0 (ReLU blocks the gradient).  Branch-free selects. */
#define FL_DEFINE_POOL2(T, SUFFIX)                                                            \
static void fl_relu_maxpool2_##SUFFIX(const T *z, long OW, T *y, int *arg, long PH, long PW) {\
    for (long oy = 0; oy < PH; oy++) {                                                        \
        const T *a = z + 2 * oy * OW, *b = a + OW;                                            \
        for (long ox = 0; ox < PW; ox++) {                                                    \
            T m = a[2 * ox]; int k = 0;                                                       \
            T v = a[2 * ox + 1]; k = v > m ? 1 : k; m = v > m ? v : m;                       \
            v = b[2 * ox];       k = v > m ? 2 : k; m = v > m ? v : m;                       \
            v = b[2 * ox + 1];   k = v > m ? 3 : k; m = v > m ? v : m;                       \
            long idx = (2 * oy + (k >> 1)) * OW + 2 * ox + (k & 1);                           \
            y[oy * PW + ox] = m > 0 ? m : 0;                                                  \
            arg[oy * PW + ox] = m > 0 ? (int)idx : -1;                                        \
        }                                                                                     \
    }                                                                                         \
}

FL_DEFINE_POOL2(float, f32)
FL_DEFINE_POOL2(double, f64)

/* Layout helpers of one sample, each a plain copy loop the compiler vectorises.
 * xp (C, HS, WS): a zero-padded plane set, HS >= H + 2p, WS >= W + 2p; only the
 * interior is written, so zero borders written once stay zero. */
#define FL_DEFINE_LAYOUT(T, IT, SUFFIX)                                                           \
static void fl_pad_copy_##SUFFIX(const T *x, long C, long H, long W, long p, T *xp,          \
                                 long HS, long WS) {                                          \
    for (long c = 0; c < C; c++)                                                              \
        for (long y = 0; y < H; y++) {                                                        \
            const T *src = x + (c * H + y) * W;                                               \
            T *dst = xp + (c * HS + y + p) * WS + p;                                          \
            for (long q = 0; q < W; q++) dst[q] = src[q];                                     \
        }                                                                                     \
}                                                                                             \
/* rows[l, (c, i, j)] = xp[c, oy*s + i, ox*s + j] for l = oy*OW + ox: im2col transposed, \
 * read from the padded copy so that no index needs a bounds test (row stride ldr). */   \
static void fl_im2row_##SUFFIX(const T *xp, long C, long HS, long WS, long KH, long KW,      \
                               long s, long OH, long OW, T *rows, long ldr) {                 \
    for (long oy = 0; oy < OH; oy++)                                                          \
        for (long ox = 0; ox < OW; ox++) {                                                    \
            T *dst = rows + (oy * OW + ox) * ldr;                                             \
            for (long c = 0; c < C; c++)                                                      \
                for (long i = 0; i < KH; i++) {                                               \
                    const T *src = xp + (c * HS + oy * s + i) * WS + ox * s;                  \
                    for (long j = 0; j < KW; j++) dst[j] = src[j];                            \
                    dst += KW;                                                                \
                }                                                                             \
        }                                                                                     \
}                                                                                             \
/* Stride 1: xp[c, oy + i, ox + j] += cols[(c, i, j), oy*OW + ox] (col2im into the padded  \
 * plane set).  For each (c, i, oy) the KW taps are summed in a register first, each    \
 * loaded shifted by j lanes and masked to the row, so each output vector is read and   \
 * written once instead of KW times.  cols rows are ldc >= OH*OW long; the reads reach  \
 * up to KW - 1 elements before a row and 2 LB past it (the caller allocates that slack \
 * around the array); WS >= round_up(OW + KW - 1, LB) keeps every vector in its row.    */ \
static void fl_col2im_s1_##SUFFIX(const T *cols, long ldc, long C, long KH, long KW,         \
                                  long OH, long OW, T *xp, long HS, long WS) {                \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    IV lane;                                                                                  \
    for (int q = 0; q < FL_LB; q++) lane[q] = q;                                              \
    long nv = (OW + KW - 1 + FL_LB - 1) / FL_LB;                                              \
    for (long v = 0; v < nv; v++) {                                                           \
        IV x = lane + (IT)(v * FL_LB), in_row[FL_MAX_TAPS];                                   \
        for (long j = 0; j < KW && j < FL_MAX_TAPS; j++)                                      \
            in_row[j] = (x >= (IT)j) & (x < (IT)(OW + j));                                    \
        for (long c = 0; c < C; c++)                                                          \
            for (long i = 0; i < KH; i++) {                                                   \
                const T *src = cols + (c * KH + i) * KW * ldc + v * FL_LB;                    \
                T *dst = xp + (c * HS + i) * WS + v * FL_LB;                                  \
                for (long oy = 0; oy < OH; oy++, src += OW, dst += WS) {                      \
                    V sum = {0};                                                              \
                    if (KW == 5) {          /* the LeNet kernel, unrolled */                  \
                        sum += (V)((IV)fl_load_##SUFFIX(src) & in_row[0]);                    \
                        sum += (V)((IV)fl_load_##SUFFIX(src + ldc - 1) & in_row[1]);          \
                        sum += (V)((IV)fl_load_##SUFFIX(src + 2 * ldc - 2) & in_row[2]);      \
                        sum += (V)((IV)fl_load_##SUFFIX(src + 3 * ldc - 3) & in_row[3]);      \
                        sum += (V)((IV)fl_load_##SUFFIX(src + 4 * ldc - 4) & in_row[4]);      \
                    } else {                                                                  \
                        for (long j = 0; j < KW; j++) {                                       \
                            IV m = j < FL_MAX_TAPS ? in_row[j]                                \
                                                   : (x >= (IT)j) & (x < (IT)(OW + j));       \
                            sum += (V)((IV)fl_load_##SUFFIX(src + j * ldc - j) & m);          \
                        }                                                                     \
                    }                                                                         \
                    fl_store_##SUFFIX(dst, fl_load_##SUFFIX(dst) + sum);                      \
                }                                                                             \
            }                                                                                 \
    }                                                                                         \
}

FL_DEFINE_LAYOUT(float, int, f32)
FL_DEFINE_LAYOUT(double, long, f64)

/* dW of one sample without im2row, for KW = 3 or 5 (every preset):
 *   dwt[(c, i, j), f] += sum_{oy, ox} xp[c, oy*s + i, ox*s + j] * dzt[oy*OW + ox, f]
 * dzt (L, ldt): the conv-output gradient transposed, filters along the vector lanes
 * (ldt a multiple of LB, padding lanes zero); dwt (C*KH*KW, ldt): dW transposed.
 * One pass over L holds NR kernel rows x KW taps of one channel in registers
 * (10 or 9 accumulators); each broadcast input value feeds one multiply-add. */
#define FL_DEFINE_DW(T, SUFFIX, KWC, NR)                                                     \
static inline __attribute__((always_inline)) void                                            \
fl_dw_pass_k##KWC##_##SUFFIX(const T *xc, long WS, long s, const T *dzt, long ldt, long OH,  \
                             long OW, T *dwt, long ldw, const int nr) {                       \
    fl_vec_##SUFFIX acc[NR * KWC];                                                            \
    for (int r = 0; r < nr; r++)                                                              \
        for (int j = 0; j < KWC; j++) acc[r * KWC + j] = fl_load_##SUFFIX(dwt + (r * KWC + j) * ldw); \
    for (long oy = 0; oy < OH; oy++) {                                                        \
        const T *x0 = xc + oy * s * WS;                                                       \
        const T *d = dzt + oy * OW * ldt;                                                     \
        for (long ox = 0; ox < OW; ox++, d += ldt) {                                          \
            fl_vec_##SUFFIX dv = fl_load_##SUFFIX(d);                                         \
            for (int r = 0; r < nr; r++)                                                      \
                for (int j = 0; j < KWC; j++)                                                 \
                    acc[r * KWC + j] += x0[r * WS + ox * s + j] * dv;                         \
        }                                                                                     \
    }                                                                                         \
    for (int r = 0; r < nr; r++)                                                              \
        for (int j = 0; j < KWC; j++) fl_store_##SUFFIX(dwt + (r * KWC + j) * ldw, acc[r * KWC + j]); \
}                                                                                             \
static void fl_dw_direct_k##KWC##_##SUFFIX(const T *xp, long C, long HS, long WS, long KH,   \
                                           long s, const T *dzt, long ldt, long OH, long OW, \
                                           T *dwt) {                                          \
    for (long fb = 0; fb < ldt; fb += FL_LB)                                                  \
        for (long c = 0; c < C; c++)                                                          \
            for (long i0 = 0; i0 < KH; ) {                                                    \
                const T *xc = xp + (c * HS + i0) * WS;                                        \
                T *dw = dwt + (c * KH + i0) * KWC * ldt + fb;                                 \
                int nr = KH - i0 >= NR ? NR : 1;                                              \
                if (s == 1 && nr == NR)    /* constants: simple addressing, no spills */     \
                    fl_dw_pass_k##KWC##_##SUFFIX(xc, WS, 1, dzt + fb, ldt, OH, OW, dw, ldt, NR); \
                else if (s == 1)                                                              \
                    fl_dw_pass_k##KWC##_##SUFFIX(xc, WS, 1, dzt + fb, ldt, OH, OW, dw, ldt, 1); \
                else                                                                          \
                    fl_dw_pass_k##KWC##_##SUFFIX(xc, WS, s, dzt + fb, ldt, OH, OW, dw, ldt, nr); \
                i0 += nr;                                                                     \
            }                                                                                 \
}

FL_DEFINE_DW(float, f32, 5, 2)
FL_DEFINE_DW(double, f64, 5, 2)
FL_DEFINE_DW(float, f32, 3, 3)
FL_DEFINE_DW(double, f64, 3, 3)

/* Direct stride-1 convolution fused with ReLU and a 2x2/stride-2 max pool, for one
 * sample, without writing the conv output:
 *   y[f, py, px] = max(0, max over the window of z[f, 2py + a, 2px + b])
 *   arg[f, py, px] = (2py + a)*OW + 2px + b of the window's first maximum (order
 *                    (0,0), (0,1), (1,0), (1,1)), or -1 where that maximum is <= 0
 * with z as in fl_direct_conv.  wd (F/FB, C*KH*KW, FB): FB filters contiguous per tap.
 * The register tile is FB filters x 2 conv rows x NV vectors (NV*LB >= OW): each
 * loaded input vector feeds FB multiply-adds and each broadcast weight 2*NV; the two
 * rows and the even/odd lanes of the tile are exactly the pooling windows, so the
 * pool runs on the accumulators (lane shuffles and selects, no scalar loop). */
#define FL_DEFINE_DIRECT_POOL(T, IT, SUFFIX, FB, NV)                                          \
static void fl_direct_conv_pool2_f##FB##v##NV##_##SUFFIX(                                     \
        const T *xp, long C, long HS, long WS, const T *wd, long FP, long KH, long KW,        \
        const T *bias, long OW, long PH, long PW, T *y, int *arg, long ldy) {                 \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    long taps = C * KH * KW;                                                                  \
    IV even, odd, lane2;                                                                      \
    for (int q = 0; q < FL_LB; q++) { even[q] = 2 * q; odd[q] = 2 * q + 1; lane2[q] = 2 * q; } \
    for (long fb = 0; fb < FP; fb += FB) {                                                    \
        const T *wb = wd + (fb / FB) * taps * FB;                                             \
        for (long py = 0; py < PH; py++) {                                                    \
            V acc[2][NV][FB];                                                                 \
            for (int r = 0; r < 2; r++)                                                       \
                for (int v = 0; v < NV; v++)                                                  \
                    for (int f = 0; f < FB; f++) { acc[r][v][f] = (V){0}; acc[r][v][f] += bias[fb + f]; } \
            const T *wt = wb;                                                                 \
            for (long c = 0; c < C; c++)                                                      \
                for (long i = 0; i < KH; i++) {                                               \
                    const T *row0 = xp + (c * HS + 2 * py + i) * WS, *row1 = row0 + WS;       \
                    for (long j = 0; j < KW; j++, wt += FB) {                                 \
                        V x0[NV], x1[NV];                                                     \
                        const T *r0 = row0 + j, *r1 = row1 + j;                               \
                        FL_OPAQUE(r0); FL_OPAQUE(r1);                                         \
                        for (int v = 0; v < NV; v++) {                                        \
                            x0[v] = fl_load_##SUFFIX(r0 + v * FL_LB);                         \
                            x1[v] = fl_load_##SUFFIX(r1 + v * FL_LB);                         \
                        }                                                                     \
                        for (int f = 0; f < FB; f++) {                                        \
                            T wv = wt[f];                                                     \
                            for (int v = 0; v < NV; v++) {                                    \
                                acc[0][v][f] += wv * x0[v];                                   \
                                acc[1][v][f] += wv * x1[v];                                   \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            for (int f = 0; f < FB && fb + f < FP; f++) {                                     \
                /* window corners: a (row 0, even col), b (row 0, odd), c (row 1, even), d */ \
                V a, b, cc, d;                                                                \
                if (NV == 1) {                                                                \
                    a = __builtin_shuffle(acc[0][0][f], acc[0][0][f], even);                  \
                    b = __builtin_shuffle(acc[0][0][f], acc[0][0][f], odd);                   \
                    cc = __builtin_shuffle(acc[1][0][f], acc[1][0][f], even);                 \
                    d = __builtin_shuffle(acc[1][0][f], acc[1][0][f], odd);                   \
                } else {                                                                      \
                    a = __builtin_shuffle(acc[0][0][f], acc[0][NV - 1][f], even);             \
                    b = __builtin_shuffle(acc[0][0][f], acc[0][NV - 1][f], odd);              \
                    cc = __builtin_shuffle(acc[1][0][f], acc[1][NV - 1][f], even);            \
                    d = __builtin_shuffle(acc[1][0][f], acc[1][NV - 1][f], odd);              \
                }                                                                             \
                IV k, pos;                                                                    \
                V out = fl_relu_max4_##SUFFIX(a, b, cc, d, &k, &pos);                         \
                IV idx = ((IT)(2 * py) + (k >> 1)) * (IT)OW + lane2 + (k & 1);                   \
                idx = FL_SEL(IV, IV, pos, idx, idx * 0 - 1);                                  \
                T *yr = y + (fb + f) * ldy + py * PW;                                         \
                int *ar = arg + (fb + f) * ldy + py * PW;                                     \
                /* a whole vector where its spill stays in this plane's later rows (written  \
                 * after this one); the plane's last lanes exactly */                        \
                if ((PH - py) * PW >= FL_LB) {                                                \
                    fl_i32_##SUFFIX ai = __builtin_convertvector(idx, fl_i32_##SUFFIX);       \
                    fl_store_##SUFFIX(yr, out);                                               \
                    memcpy(ar, &ai, sizeof ai);                                               \
                } else {                                                                      \
                    for (long q = 0; q < PW; q++) { yr[q] = out[q]; ar[q] = (int)idx[q]; }    \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

FL_DEFINE_DIRECT_POOL(float, int, f32, 8, 1)
FL_DEFINE_DIRECT_POOL(double, long, f64, 8, 1)
FL_DEFINE_DIRECT_POOL(float, int, f32, 6, 2)
FL_DEFINE_DIRECT_POOL(double, long, f64, 6, 2)

/* dW of one sample with the output columns along the vector lanes, for wide rows
 * and few filters (a first layer: OW 28, F 6), where filters-in-lanes would leave
 * most lanes idle; stride 1:
 *   dwv[f, c, i, j, :] += sum_{oy, v} dzr[f, oy, v*LB + :] * xp[c, oy + i, v*LB + j + :]
 * dzr (F, OH, OWr): the conv-output gradient with rows padded to OWr (a multiple of
 * LB) with zeros past OW; dwv (F, C, KH, KWC, LB): per-lane partial sums, summed over
 * the lanes once per batch.  A tile is FB filters x KWC taps of one kernel row: each
 * dz vector feeds KWC multiply-adds, each input vector FB; the input vectors are
 * unaligned (they straddle cache lines), so each is loaded once into a register. */
#define FL_DEFINE_DW_LANES(T, SUFFIX, FB, KWC)                                               \
static void fl_dw_lanes_f##FB##k##KWC##_##SUFFIX(const T *xp, long C, long HS, long WS,      \
                                                  long KH, const T *dzr, long F, long OH,     \
                                                  long OWr, T *dwv) {                         \
    for (long f0 = 0; f0 < F; f0 += FB)                                                       \
        for (long c = 0; c < C; c++)                                                          \
            for (long i = 0; i < KH; i++) {                                                   \
                fl_vec_##SUFFIX acc[FB][KWC];                                                 \
                T *out[FB];                                                                   \
                for (int f = 0; f < FB; f++) {                                                \
                    long ff = f0 + f < F ? f0 + f : F - 1;   /* a partial block repeats */    \
                    out[f] = dwv + ((ff * C + c) * KH + i) * KWC * FL_LB;                     \
                    for (int j = 0; j < KWC; j++) acc[f][j] = fl_load_##SUFFIX(out[f] + j * FL_LB); \
                }                                                                             \
                for (long oy = 0; oy < OH; oy++)                                              \
                    for (long v = 0; v < OWr; v += FL_LB) {                                   \
                        const T *xr = xp + (c * HS + oy + i) * WS + v;                        \
                        fl_vec_##SUFFIX xv[KWC];                                              \
                        for (int j = 0; j < KWC; j++) {  /* unaligned: load each just once */ \
                            xv[j] = fl_load_##SUFFIX(xr + j);                                 \
                            FL_IN_REGISTER_##SUFFIX(xv[j]);                                   \
                        }                                                                     \
                        for (int f = 0; f < FB; f++) {                                        \
                            long ff = f0 + f < F ? f0 + f : F - 1;                            \
                            fl_vec_##SUFFIX d = fl_load_##SUFFIX(dzr + (ff * OH + oy) * OWr + v); \
                            for (int j = 0; j < KWC; j++) acc[f][j] += d * xv[j];             \
                        }                                                                     \
                    }                                                                         \
                for (int f = 0; f < FB; f++)        /* the real filters only */             \
                    if (f0 + f < F)                                                           \
                        for (int j = 0; j < KWC; j++) fl_store_##SUFFIX(out[f] + j * FL_LB, acc[f][j]); \
            }                                                                                 \
}

FL_DEFINE_DW_LANES(float, f32, 3, 5)
FL_DEFINE_DW_LANES(double, f64, 3, 5)

/* The pooled gradient of one plane routed to its window maxima, branch-free (the
 * -1 / window-offset tests of arg are data-dependent and would mispredict):
 *   out[oy*ystride + ox*xstride] (+)= dpy[py, px]   where arg[py, px] = oy*OW + ox >= 0
 * for windows of size x size at stride ps; returns the sum of the routed values
 * (the bias gradient).  ystride/xstride select the layout (plain, transposed, padded).
 * Windows that do not overlap (ps >= size) own their targets, so plain stores do;
 * out must start zeroed either way. */
#define FL_DEFINE_ROUTE(T, SUFFIX)                                                            \
static T fl_route_pool_grad_##SUFFIX(const T *dpy, const int *arg, long PH, long PW, long OW, \
                                     long size, long ps, T *out, long ystride, long xstride) {\
    T total = 0;                                                                              \
    for (long q = 0; q < PH * PW; q++) total += arg[q] >= 0 ? dpy[q] : 0;   /* vectorised */  \
    if (size == 2 && ps == 2) {       /* the LeNet pool: offset 0, 1, OW or OW + 1 */       \
        for (long py = 0; py < PH; py++)                                                      \
            for (long px = 0; px < PW; px++) {                                                \
                long a = arg[py * PW + px];                                                   \
                T v = a >= 0 ? dpy[py * PW + px] : 0;                                         \
                long rel = a >= 0 ? a - 2 * (py * OW + px) : 0;                               \
                long down = rel >= OW;                                                        \
                out[(2 * py + down) * ystride + (2 * px + rel - down * OW) * xstride] = v;    \
            }                                                                                 \
        return total;                                                                         \
    }                                                                                         \
    int overlap = ps < size;                                                                  \
    for (long py = 0; py < PH; py++)                                                          \
        for (long px = 0; px < PW; px++) {                                                    \
            long a = arg[py * PW + px], oy = py * ps;                                         \
            int keep = a >= 0;                                                                \
            T v = keep ? dpy[py * PW + px] : 0;                                               \
            long rel = keep ? a - oy * OW - px * ps : 0;    /* offset inside the window */    \
            for (long k = 1; k < size; k++) {                                                 \
                long down = rel >= OW;                                                        \
                oy += down;                                                                   \
                rel -= down * OW;                                                             \
            }                                                                                 \
            T *target = out + oy * ystride + (px * ps + rel) * xstride;                       \
            *target = overlap ? *target + v : v;                                              \
        }                                                                                     \
    return total;                                                                             \
}

FL_DEFINE_ROUTE(float, f32)
FL_DEFINE_ROUTE(double, f64)

/* The 2x2/stride-2 pooled gradient of one plane expanded to conv-output rows, with
 * vector selects instead of a scatter (and no zeroing pass):
 *   out[oy*ldrow + ox] = dpy[oy/2, ox/2] if arg[oy/2, ox/2] == oy*OW + ox else 0
 * for oy < OH, ox < OW.  Rows are written LB lanes at a time, in order: with
 * ldrow >= round_up(OW, LB) the lanes past OW are zeros; with ldrow == OW (unpadded
 * rows) a row's spill-over (zeros) is overwritten by the next rows, and nothing is
 * written past the plane's OH*OW elements.  LB/2 pooled values are loaded at once where at least that many
 * remain before `end` (the end of the dpy array; arg is laid out alike); values past
 * the row are masked off. */
#define FL_DEFINE_EXPAND(T, IT, SUFFIX)                                                       \
static void fl_expand_pool2_grad_##SUFFIX(const T *dpy, const int *arg, long PH, long PW,     \
                                          long OH, long OW, T *out, long ldrow, const T *end) {\
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    IV half, lane;                                                                            \
    for (int q = 0; q < FL_LB; q++) { half[q] = q >> 1; lane[q] = q; }                        \
    long nv = (OW + FL_LB - 1) / FL_LB;                                                       \
    for (long oy = 0; oy < OH; oy++) {                                                        \
        long py = oy >> 1;                                                                    \
        for (long v = 0; v < nv; v++) {                                                       \
            long p0 = v * FL_LB / 2;                                                          \
            V val = {0};                                                                      \
            if (py < PH) {                                                                    \
                const T *dp = dpy + py * PW + p0;                                             \
                const int *ap = arg + py * PW + p0;                                           \
                typedef T H __attribute__((vector_size(FL_LB / 2 * sizeof(T))));            \
                typedef int HI __attribute__((vector_size(FL_LB / 2 * sizeof(int))));        \
                H dh = {0}; HI ah = {0};                                                      \
                if (dp + FL_LB / 2 <= end) {                                                  \
                    memcpy(&dh, dp, sizeof dh);                                               \
                    memcpy(&ah, ap, sizeof ah);                                               \
                } else {                                                                      \
                    for (long q = 0; q < FL_LB / 2 && q < PW - p0; q++) {                     \
                        dh[q] = dp[q]; ah[q] = ap[q];                                         \
                    }                                                                         \
                }                                                                             \
                /* each pooled value twice: lanes 2q and 2q + 1 are the columns of window q */ \
                V dd = __builtin_shufflevector(dh, dh, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7); \
                IV aa = __builtin_convertvector(                                              \
                    __builtin_shufflevector(ah, ah, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), IV); \
                IV idx = lane + (IT)(oy * OW + v * FL_LB);                                    \
                IV hit = (aa == idx) & (half + (IT)p0 < (IT)PW);                              \
                val = (V)((IV)dd & hit);                                                      \
            }                                                                                 \
            T *dst = out + oy * ldrow + v * FL_LB;                                            \
            long room = OH * OW - (oy * OW + v * FL_LB);   /* unpadded rows: plane's end */   \
            if (ldrow == OW && room < FL_LB)                                                  \
                memcpy(dst, &val, room * sizeof(T));                                          \
            else                                                                              \
                fl_store_##SUFFIX(dst, val);                                                  \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* sum of dpy where arg >= 0 (the bias gradient of one plane; vectorised). */              \
static T fl_routed_sum_##SUFFIX(const T *dpy, const int *arg, long n) {                       \
    T total = 0;                                                                              \
    for (long q = 0; q < n; q++) total += arg[q] >= 0 ? dpy[q] : 0;                           \
    return total;                                                                             \
}                                                                                             \
/* dzt[l, f] = dz[f, l] for f < F, l < L: filters along the lanes (ldt per row). */         \
static void fl_transpose_##SUFFIX(const T *dz, long ldz, long F, long L, T *dzt, long ldt) {  \
    /* in LB x LB tiles: reads and writes each stay within a few cache lines */               \
    for (long f0 = 0; f0 < F; f0 += FL_LB)                                                    \
        for (long l0 = 0; l0 < L; l0 += FL_LB) {                                              \
            long f1 = f0 + FL_LB < F ? f0 + FL_LB : F, l1 = l0 + FL_LB < L ? l0 + FL_LB : L;  \
            for (long l = l0; l < l1; l++)                                                    \
                for (long f = f0; f < f1; f++) dzt[l * ldt + f] = dz[f * ldz + l];           \
        }                                                                                     \
}

FL_DEFINE_EXPAND(float, int, f32)
FL_DEFINE_EXPAND(double, long, f64)

/* The same fused conv + ReLU + 2x2 max pool with the filters along the vector lanes,
 * for layers with many filters and narrow rows (LeNet C3: 16 filters, 10 columns),
 * where columns-in-lanes would leave lanes idle:
 *   wq (Fq/LB, C*KH*KW, LB): the weights in blocks of LB filters, contiguous per tap
 *   (Fq a multiple of LB, zero past F); bias (Fq,).
 * The register tile is 2 conv rows x 2*PC conv columns (PC pooled columns) of LB
 * filters; each weight vector loaded feeds 4*PC multiply-adds against broadcast
 * inputs.  y, arg as in fl_direct_conv_pool2 (plane stride ldy), written lane by lane. */
#define FL_DEFINE_DIRECT_POOL_FLANES(T, IT, SUFFIX, PC)                                       \
static void fl_direct_conv_pool2_flanes##PC##_##SUFFIX(                                       \
        const T *xp, long C, long HS, long WS, const T *wq, long F, long Fq, long KH,         \
        long KW, const T *bias, long OW, long PH, long PW, T *y, int *arg, long ldy) {        \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    (void)HS;                                                                                 \
    long taps = C * KH * KW;                                                                  \
    for (long fb = 0; fb < Fq; fb += FL_LB) {                                                 \
        V b0 = fl_load_##SUFFIX(bias + fb);                                                   \
        long nf = F - fb < FL_LB ? F - fb : FL_LB;                                            \
        for (long py = 0; py < PH; py++)                                                      \
            for (long px0 = 0; px0 < PW; px0 += PC) {                                         \
                V acc[2][2 * PC];                                                             \
                for (int r = 0; r < 2; r++)                                                   \
                    for (int q = 0; q < 2 * PC; q++) acc[r][q] = b0;                          \
                const T *wt = wq + (fb / FL_LB) * taps * FL_LB;                               \
                for (long c = 0; c < C; c++)                                                  \
                    for (long i = 0; i < KH; i++) {                                           \
                        const T *row0 = xp + (c * HS + 2 * py + i) * WS + 2 * px0;            \
                        const T *row1 = row0 + WS;                                            \
                        for (long j = 0; j < KW; j++, wt += FL_LB) {                          \
                            V wv = fl_load_##SUFFIX(wt);                                      \
                            FL_IN_REGISTER_##SUFFIX(wv);                                      \
                            const T *x0 = row0 + j, *x1 = row1 + j;                           \
                            FL_OPAQUE(x0); FL_OPAQUE(x1);                                     \
                            for (int q = 0; q < 2 * PC; q++) {                                \
                                acc[0][q] += x0[q] * wv;                                      \
                                acc[1][q] += x1[q] * wv;                                      \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                for (int q = 0; q < PC && px0 + q < PW; q++) {                                \
                    V a = acc[0][2 * q], b = acc[0][2 * q + 1];                               \
                    V cc = acc[1][2 * q], d = acc[1][2 * q + 1];                              \
                    IV k, pos;                                                                \
                    V out = fl_relu_max4_##SUFFIX(a, b, cc, d, &k, &pos);                     \
                    long px = px0 + q;                                                        \
                    IV idx = ((IT)(2 * py) + (k >> 1)) * (IT)OW + (IT)(2 * px) + (k & 1);     \
                    idx = FL_SEL(IV, IV, pos, idx, idx * 0 - 1);                              \
                    T *yo = y + fb * ldy + py * PW + px;                                      \
                    int *ao = arg + fb * ldy + py * PW + px;                                  \
                    for (long f = 0; f < nf; f++) { yo[f * ldy] = out[f]; ao[f * ldy] = (int)idx[f]; } \
                }                                                                             \
            }                                                                                 \
    }                                                                                         \
}

FL_DEFINE_DIRECT_POOL_FLANES(float, int, f32, 5)
FL_DEFINE_DIRECT_POOL_FLANES(double, long, f64, 5)

#endif