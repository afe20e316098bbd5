#ifndef FASTLENET_WINOGRAD_H
#define FASTLENET_WINOGRAD_H
#include "fl_common.h"
#include "gemm.h"

/* Winograd F(2x2, 3x3) and F(2x2, 5x5): a stride-1 3x3 (5x5) convolution of one zero-padded
 * sample as 16 (36) GEMMs over 4x4 (6x6) input tiles (the plan's forward, dx and dW paths
 * 'winograd_f2x2_3x3' and 'winograd_f2x2_5x5').
 *
 * Dimension legend: C input channels, F output channels (filters), K the kernel size (3 or
 * 5), HS x WS the padded input plane, OH x OW the conv output, TH x TW its tiles of 2x2
 * outputs (OH, OW rounded up, halved), TR tile rows per pass, P = round_up(TR * TW, LB)
 * tiles per pass (row stride P + LB), Q = (K + 1)^2 tile positions, xi = (K + 1) i + j;
 * tile p of a pass is tile row ty0 + p / TW, column p % TW, and LB tile columns of one row
 * share a vector.
 *
 * With d the (K + 1) x (K + 1) input tile at (2ty, 2tx) of a channel and g a K x K filter,
 *   Y = A^T [ (G g G^T) . (B^T d B) ] A                   (Lavin & Gray, 2015)
 * gives the tile's 2x2 outputs with 16 (36) multiplies per channel instead of 36 (100):
 *   U[xi, f, c] = (G g[f, c] G^T)[xi]   filters, transformed once per call
 *   V[xi, c, p] = (B^T d[c, p] B)[xi]    input tiles, tile columns along the lanes
 *   M[xi] = U[xi] @ V[xi]                (F, P): Q GEMMs (gemm.h), 2.25x (2.78x) fewer flops
 *   y[f, tile p] = A^T M[., f, p] A + bias[f]
 * F(2x2, 5x5) interpolates at 0, 1, -1, 2, -2 and infinity (B^T is F(4x4, 3x3)'s).
 * Rounding differs from the direct sum (transforms add and subtract tile values before
 * the products): within the contract's float32 tolerance, not the same bits.  A sample
 * whose result is not finite is computed again as plain sums (fl_conv_exact), so NaN
 * and Inf reach exactly the outputs they reach in the reference.
 */
/* Shuffle lanes of two LB-lane vectors a, b (b's lanes numbered LB ..): even and odd
 * lanes of their concatenation, and the first / second halves of a and b interleaved. */
#if FL_LB == 16
#define FL_EVEN_LANES 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define FL_ODD_LANES 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define FL_ZIP_LO_LANES 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define FL_ZIP_HI_LANES 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#elif FL_LB == 8
#define FL_EVEN_LANES 0, 2, 4, 6, 8, 10, 12, 14
#define FL_ODD_LANES 1, 3, 5, 7, 9, 11, 13, 15
#define FL_ZIP_LO_LANES 0, 8, 1, 9, 2, 10, 3, 11
#define FL_ZIP_HI_LANES 4, 12, 5, 13, 6, 14, 7, 15
#else
#define FL_EVEN_LANES 0, 2, 4, 6
#define FL_ODD_LANES 1, 3, 5, 7
#define FL_ZIP_LO_LANES 0, 4, 1, 5
#define FL_ZIP_HI_LANES 2, 6, 3, 7
#endif

/* filter pairs per block of the filter transforms */
#define FL_WB 64

/* the exponent bits of a float / double: all set for Inf and NaN */
#define FL_EXPONENT_BITS_f32 0x7f800000
#define FL_EXPONENT_BITS_f64 0x7ff0000000000000L

#define FL_DEFINE_WINOGRAD(T, SUFFIX)                                                          \
/* U (16, F, C) from w (F, C, 3, 3); with flip, U (16, C, F) of the dx convolution: its     \
 * filter c over input channel f is w[f, c] rotated by 180 degrees.  Blocks of FL_WB filter  \
 * pairs, in U's order: their taps gathered, then each step a vectorised loop over the      \
 * block and each U row stored whole (the per-call cost of a batch of one: 64 -> 64 on 8x8 \
 * spent 0.15 of its 0.24 ms here, pair by pair). */                                        \
static void fl_winograd_filters_##SUFFIX(const T *w, long F, long C, int flip, T *U) {       \
    long cols = flip ? F : C, n = F * C;                                                      \
    for (long e0 = 0; e0 < n; e0 += FL_WB) {                                                  \
        int nb = n - e0 < FL_WB ? (int)(n - e0) : FL_WB;                                      \
        T k[9][FL_WB], t[12][FL_WB];                                                          \
        for (int q = 0; q < nb; q++) {          /* pair e = (row, col) of U: w[f, c] */       \
            long row = (e0 + q) / cols, col = (e0 + q) % cols;                                \
            const T *g = w + ((flip ? col : row) * C + (flip ? row : col)) * 9;               \
            for (int a = 0; a < 9; a++) k[a][q] = flip ? g[8 - a] : g[a];                     \
        }                                                                                     \
        for (int j = 0; j < 3; j++)             /* G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 */ \
            for (int q = 0; q < nb; q++) {                                                    \
                T g0 = k[j][q], g1 = k[3 + j][q], g2 = k[6 + j][q];                           \
                t[j][q] = g0;                                                                 \
                t[3 + j][q] = (g0 + g1 + g2) * (T)0.5;                                        \
                t[6 + j][q] = (g0 - g1 + g2) * (T)0.5;                                        \
                t[9 + j][q] = g2;                                                             \
            }                                                                                 \
        for (int i = 0; i < 4; i++) {           /* (G g) G^T, the same along the columns */   \
            T *u = U + 4 * i * n + e0;                                                        \
            for (int q = 0; q < nb; q++) {                                                    \
                T a = t[3 * i][q], b = t[3 * i + 1][q], c = t[3 * i + 2][q];                  \
                u[q] = a;                                                                     \
                u[n + q] = (a + b + c) * (T)0.5;                                              \
                u[2 * n + q] = (a - b + c) * (T)0.5;                                          \
                u[3 * n + q] = c;                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* V[xi] = (B^T d B)[xi] for the 16 vectors v[4i + j] = d[i, j] of LB tiles (stored at    \
 * V + xi ldv): rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the same along columns. */ \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_bt_d_b_##SUFFIX(const fl_vec_##SUFFIX v[16], T *V, long ldv) {                   \
    fl_vec_##SUFFIX t[16];                                                                    \
    for (int j = 0; j < 4; j++) {                                                             \
        t[0 + j] = v[0 + j] - v[8 + j];                                                       \
        t[4 + j] = v[4 + j] + v[8 + j];                                                       \
        t[8 + j] = v[8 + j] - v[4 + j];                                                       \
        t[12 + j] = v[4 + j] - v[12 + j];                                                     \
    }                                                                                         \
    T *o = V;                                     /* one pointer walks the 16 positions */    \
    for (int i = 0; i < 4; i++) {                                                             \
        const fl_vec_##SUFFIX *q = t + 4 * i;                                                 \
        fl_vec_##SUFFIX r[4] = {q[0] - q[2], q[1] + q[2], q[2] - q[1], q[1] - q[3]};          \
        for (int j = 0; j < 4; j++, o += ldv) {                                               \
            FL_OPAQUE(o);                                                                     \
            fl_store_##SUFFIX(o, r[j]);                                                       \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* y[2a + b] = (A^T M A)[a, b] + bias for LB tiles, M[xi] at M + xi ldm: rows (m0 + m1 + m2, \
 * m1 - m2 - m3), then the same along the columns. */                                       \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_at_m_a_##SUFFIX(const T *M, long ldm, T b, fl_vec_##SUFFIX y[4]) {              \
    fl_vec_##SUFFIX m[16], s[8];                                                              \
    const T *q = M;                               /* one pointer walks the 16 positions */    \
    for (int k = 0; k < 16; k++, q += ldm) {                                                  \
        FL_OPAQUE(q);                                                                         \
        m[k] = fl_load_##SUFFIX(q);                                                           \
    }                                                                                         \
    for (int j = 0; j < 4; j++) {                                                             \
        s[j] = m[j] + m[4 + j] + m[8 + j];                                                    \
        s[4 + j] = m[4 + j] - m[8 + j] - m[12 + j];                                           \
    }                                                                                         \
    for (int a = 0; a < 2; a++) {                                                             \
        const fl_vec_##SUFFIX *r = s + 4 * a;                                                 \
        y[2 * a] = r[0] + r[1] + r[2] + b;                                                    \
        y[2 * a + 1] = r[1] - r[2] - r[3] + b;                                                \
    }                                                                                         \
}                                                                                             \
/* Mq[xi] = (A g A^T)[xi] for the 2x2 tiles g of LB tiles (stored at Mq + xi ldm): each    \
 * column (g0, g1) -> (g0, g0 + g1, g0 - g1, -g1), then each row the same. */              \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_a_g_at_##SUFFIX(fl_vec_##SUFFIX g[2][2], fl_vec_##SUFFIX r[4][2], T *Mq,        \
                            long ldm) {                                                       \
    for (int b = 0; b < 2; b++) {                                                             \
        r[0][b] = g[0][b]; r[1][b] = g[0][b] + g[1][b];                                       \
        r[2][b] = g[0][b] - g[1][b]; r[3][b] = -g[1][b];                                      \
    }                                                                                         \
    for (int i = 0; i < 4; i++) {                                                             \
        fl_store_##SUFFIX(Mq + (4 * i + 0) * ldm, r[i][0]);                                   \
        fl_store_##SUFFIX(Mq + (4 * i + 1) * ldm, r[i][0] + r[i][1]);                         \
        fl_store_##SUFFIX(Mq + (4 * i + 2) * ldm, r[i][0] - r[i][1]);                         \
        fl_store_##SUFFIX(Mq + (4 * i + 3) * ldm, -r[i][1]);                                  \
    }                                                                                         \
}                                                                                             \
/* F(2x2, 5x5): U (36, F, C) from w (F, C, 5, 5), or with flip (36, C, F) rotated (as     \
 * fl_winograd_filters), U = G g G^T with G's rows (1/4, 0, 0, 0, 0), -(1, 1, 1, 1, 1)/6,  \
 * -(1, -1, 1, -1, 1)/6, (1/24, 1/12, 1/6, 1/3, 2/3), (1/24, -1/12, 1/6, -1/3, 2/3),       \
 * (0, 0, 0, 0, 1) (points 0, 1, -1, 2, -2, infinity), computed in double. */               \
static void fl_winograd5_g_##SUFFIX(const double g[5], double u[6]) {                         \
    double even = g[0] + g[2] + g[4], odd = g[1] + g[3];                                      \
    double e2 = g[0] / 24 + g[2] / 6 + g[4] * 2 / 3, o2 = g[1] / 12 + g[3] / 3;               \
    u[0] = g[0] / 4; u[1] = -(even + odd) / 6; u[2] = -(even - odd) / 6;                      \
    u[3] = e2 + o2; u[4] = e2 - o2; u[5] = g[4];                                              \
}                                                                                             \
static void fl_winograd5_filters_##SUFFIX(const T *w, long F, long C, int flip, T *U) {      \
    long cols = flip ? F : C, n = F * C;                                                      \
    for (long e0 = 0; e0 < n; e0 += FL_WB) {   /* as fl_winograd_filters: blocks of pairs */  \
        int nb = n - e0 < FL_WB ? (int)(n - e0) : FL_WB;                                      \
        double k[25][FL_WB], t[30][FL_WB];                                                    \
        for (int q = 0; q < nb; q++) {                                                        \
            long row = (e0 + q) / cols, col = (e0 + q) % cols;                                \
            const T *g = w + ((flip ? col : row) * C + (flip ? row : col)) * 25;              \
            for (int a = 0; a < 25; a++) k[a][q] = flip ? g[24 - a] : g[a];                   \
        }                                                                                     \
        for (int j = 0; j < 5; j++)             /* G g, column by column */                   \
            for (int q = 0; q < nb; q++) {                                                    \
                double col[5], u[6];                                                          \
                for (int i = 0; i < 5; i++) col[i] = k[5 * i + j][q];                         \
                fl_winograd5_g_##SUFFIX(col, u);                                              \
                for (int i = 0; i < 6; i++) t[5 * i + j][q] = u[i];                           \
            }                                                                                 \
        for (int i = 0; i < 6; i++) {           /* (G g) G^T, row by row */                   \
            T *out = U + 6 * i * n + e0;                                                      \
            for (int q = 0; q < nb; q++) {                                                    \
                double row[5], u[6];                                                          \
                for (int j = 0; j < 5; j++) row[j] = t[5 * i + j][q];                         \
                fl_winograd5_g_##SUFFIX(row, u);                                              \
                for (int j = 0; j < 6; j++) out[j * n + q] = (T)u[j];                         \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* U from w (F, C, K, K), K 3 or 5: fl_winograd_filters or fl_winograd5_filters. */           \
static void fl_winograd_transform_filters_##SUFFIX(const T *w, long F, long C, long K, int flip, \
                                                   T *U) {                                    \
    (K == 3 ? fl_winograd_filters_##SUFFIX : fl_winograd5_filters_##SUFFIX)(w, F, C, flip, U); \
}                                                                                             \
/* B^T d for one line of 6 vectors: (4 d0 - 5 d2 + d4, (d4 - 4 d2) +- (d3 - 4 d1),          \
 * (d4 - d2) +- 2 (d3 - d1), 4 d1 - 5 d3 + d5). */                                          \
static inline __attribute__((always_inline)) void                                            \
fl_winograd5_bt_##SUFFIX(fl_vec_##SUFFIX d0, fl_vec_##SUFFIX d1, fl_vec_##SUFFIX d2,          \
                         fl_vec_##SUFFIX d3, fl_vec_##SUFFIX d4, fl_vec_##SUFFIX d5,          \
                         fl_vec_##SUFFIX t[6]) {                                              \
    fl_vec_##SUFFIX a = d4 - (T)4 * d2, b = d3 - (T)4 * d1, e = d4 - d2, o = (T)2 * (d3 - d1); \
    t[0] = (T)4 * d0 - (T)5 * d2 + d4;                                                        \
    t[1] = a + b; t[2] = a - b; t[3] = e + o; t[4] = e - o;                                   \
    t[5] = (T)4 * d1 - (T)5 * d3 + d5;                                                        \
}                                                                                             \
/* V[xi] = (B^T d B)[xi] for the 36 vectors v[6i + j] = d[i, j] of LB tiles (V + xi ldv). */ \
static inline __attribute__((always_inline)) void                                            \
fl_winograd5_bt_d_b_##SUFFIX(const fl_vec_##SUFFIX v[36], T *V, long ldv) {                  \
    fl_vec_##SUFFIX t[36], r[6];                                                              \
    for (int j = 0; j < 6; j++) {                 /* along the rows, column by column */      \
        fl_winograd5_bt_##SUFFIX(v[j], v[6 + j], v[12 + j], v[18 + j], v[24 + j], v[30 + j], r); \
        for (int i = 0; i < 6; i++) t[6 * i + j] = r[i];                                      \
    }                                                                                         \
    T *o = V;                                     /* then along the columns */                \
    for (int i = 0; i < 6; i++) {                                                             \
        const fl_vec_##SUFFIX *q = t + 6 * i;                                                 \
        fl_winograd5_bt_##SUFFIX(q[0], q[1], q[2], q[3], q[4], q[5], r);                      \
        for (int j = 0; j < 6; j++, o += ldv) {                                               \
            FL_OPAQUE(o);                                                                     \
            fl_store_##SUFFIX(o, r[j]);                                                       \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* y[2a + b] = (A^T M A)[a, b] + bias for LB tiles (M[xi] at M + xi ldm): A^T's rows        \
 * (1, 1, 1, 1, 1, 0) and (0, 1, -1, 2, -2, 1), along each row of M as it is read (one     \
 * pointer walks the 36 positions: GCC would keep 36 on the stack), then the columns. */  \
static inline __attribute__((always_inline)) void                                            \
fl_winograd5_at_m_a_##SUFFIX(const T *M, long ldm, T b, fl_vec_##SUFFIX y[4]) {             \
    fl_vec_##SUFFIX r[2][6], m[6];                                                            \
    const T *q = M;                                                                           \
    for (int i = 0; i < 6; i++) {                                                             \
        for (int j = 0; j < 6; j++, q += ldm) {                                               \
            FL_OPAQUE(q);                                                                     \
            m[j] = fl_load_##SUFFIX(q);                                                       \
        }                                                                                     \
        r[0][i] = m[0] + (m[1] + m[2]) + (m[3] + m[4]);                                       \
        r[1][i] = (m[1] - m[2]) + (T)2 * (m[3] - m[4]) + m[5];                                \
    }                                                                                         \
    for (int c = 0; c < 2; c++) {                                                             \
        const fl_vec_##SUFFIX *v = r[c];                                                      \
        y[c] = v[0] + (v[1] + v[2]) + (v[3] + v[4]) + b;                                      \
        y[2 + c] = (v[1] - v[2]) + (T)2 * (v[3] - v[4]) + v[5] + b;                           \
    }                                                                                         \
}                                                                                             \
/* Mq[xi] = (A g A^T)[xi] for the 2x2 tiles g of LB tiles, F(2x2, 5x5)'s A: each column   \
 * (g0, g1) -> (g0, g0 + g1, g0 - g1, g0 + 2 g1, g0 - 2 g1, g1), then each row the same;   \
 * the 36 stored in order by one walking pointer. */                                         \
static inline __attribute__((always_inline)) void                                            \
fl_winograd5_a_g_at_##SUFFIX(fl_vec_##SUFFIX g[2][2], T *Mq, long ldm) {                     \
    fl_vec_##SUFFIX r[6][2];                                                                  \
    for (int b = 0; b < 2; b++) {                                                             \
        fl_vec_##SUFFIX g0 = g[0][b], g1 = g[1][b], d = (T)2 * g1;                            \
        r[0][b] = g0; r[1][b] = g0 + g1; r[2][b] = g0 - g1;                                   \
        r[3][b] = g0 + d; r[4][b] = g0 - d; r[5][b] = g1;                                     \
    }                                                                                         \
    T *o = Mq;                                                                                \
    for (int i = 0; i < 6; i++) {                                                             \
        fl_vec_##SUFFIX g0 = r[i][0], g1 = r[i][1], d = (T)2 * g1;                            \
        fl_vec_##SUFFIX row[6] = {g0, g0 + g1, g0 - g1, g0 + d, g0 - d, g1};                  \
        for (int j = 0; j < 6; j++, o += ldm) {                                               \
            FL_OPAQUE(o);                                                                     \
            fl_store_##SUFFIX(o, row[j]);                                                     \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* All ones in every lane where one of the four outputs y is not finite (its exponent bits  \
 * all set: integer tests, which -fassociative-math cannot reorder), else zero. */         \
static inline __attribute__((always_inline)) fl_ivec_##SUFFIX                                \
fl_winograd_nonfinite_##SUFFIX(const fl_vec_##SUFFIX y[4]) {                                 \
    fl_ivec_##SUFFIX bad = {0}, mask = bad + FL_EXPONENT_BITS_##SUFFIX;                       \
    for (int k = 0; k < 4; k++) bad |= (((fl_ivec_##SUFFIX)y[k]) & mask) == mask;            \
    return bad;                                                                               \
}                                                                                             \
/* V[xi, c, pb + q] for the tiles tx0 + q of tile row ty of channel plane xc, along the     \
 * lanes: rows 2ty .. 2ty+3 are read as whole vectors from column 2 tx0 and split into     \
 * their even and odd columns (d[., j] for tile column tx is input column 2 tx + j), then  \
 * B^T d B runs on whole vectors: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the     \
 * same along the columns.  Lanes past the row's last tile hold the next row's values     \
 * (or the padding's); the caller stores rows in order, so the next row overwrites them.  \
 * Reads columns up to 2 tx0 + 2 LB + 1. */                                                  \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_input_vec_##SUFFIX(const T *xc, long WS, long ty, long tx0, T *V, long ldv) {   \
    typedef fl_vec_##SUFFIX VT;                                                               \
    VT v[16];                                                                                 \
    const T *r = xc + 2 * ty * WS + 2 * tx0;                                                  \
    for (int i = 0; i < 4; i++, r += WS) {                                                    \
        VT a = fl_load_##SUFFIX(r), b = fl_load_##SUFFIX(r + FL_LB);                          \
        VT a2 = fl_load_##SUFFIX(r + 2), b2 = fl_load_##SUFFIX(r + 2 + FL_LB);                \
        v[4 * i + 0] = __builtin_shufflevector(a, b, FL_EVEN_LANES);                          \
        v[4 * i + 1] = __builtin_shufflevector(a, b, FL_ODD_LANES);                           \
        v[4 * i + 2] = __builtin_shufflevector(a2, b2, FL_EVEN_LANES);                        \
        v[4 * i + 3] = __builtin_shufflevector(a2, b2, FL_ODD_LANES);                         \
    }                                                                                         \
    fl_winograd_bt_d_b_##SUFFIX(v, V, ldv);                                                   \
}                                                                                             \
/* The same for F(2x2, 5x5)'s 6x6 tiles: rows 2ty .. 2ty+5, columns 2 tx + j, j < 6, from  \
 * vector rows read at 2 tx0, 2 tx0 + 2 and 2 tx0 + 4, each split into even and odd columns; \
 * each row is transformed along its columns as it is read.  Reads columns up to            \
 * 2 tx0 + 2 LB + 3. */                                                                       \
static inline __attribute__((always_inline)) void                                            \
fl_winograd5_input_vec_##SUFFIX(const T *xc, long WS, long ty, long tx0, T *V, long ldv) {  \
    typedef fl_vec_##SUFFIX VT;                                                               \
    VT t[36], d[6], r6[6];                                                                    \
    const T *r = xc + 2 * ty * WS + 2 * tx0;                                                  \
    for (int i = 0; i < 6; i++, r += WS) {                                                    \
        for (int h = 0; h < 3; h++) {                                                         \
            VT a = fl_load_##SUFFIX(r + 2 * h), b = fl_load_##SUFFIX(r + 2 * h + FL_LB);      \
            d[2 * h] = __builtin_shufflevector(a, b, FL_EVEN_LANES);                          \
            d[2 * h + 1] = __builtin_shufflevector(a, b, FL_ODD_LANES);                       \
        }                                                                                     \
        fl_winograd5_bt_##SUFFIX(d[0], d[1], d[2], d[3], d[4], d[5], r6);                     \
        for (int j = 0; j < 6; j++) t[6 * i + j] = r6[j];                                     \
    }                                                                                         \
    VT u[36];                                                                                 \
    for (int j = 0; j < 6; j++) {                 /* then along the rows */                   \
        fl_winograd5_bt_##SUFFIX(t[j], t[6 + j], t[12 + j], t[18 + j], t[24 + j], t[30 + j], r6); \
        for (int i = 0; i < 6; i++) u[6 * i + j] = r6[i];                                     \
    }                                                                                         \
    T *o = V;                                     /* stored in order, one pointer walking */  \
    for (int k = 0; k < 36; k++, o += ldv) {                                                  \
        FL_OPAQUE(o);                                                                         \
        fl_store_##SUFFIX(o, u[k]);                                                           \
    }                                                                                         \
}                                                                                             \
/* Output columns 2 tx0 .. of row o (n of them, at most 2 LB) from the tiles' column       \
 * outputs c0 (column 2 tx) and c1 (2 tx + 1), interleaved. */                               \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_store_row_##SUFFIX(T *o, fl_vec_##SUFFIX c0, fl_vec_##SUFFIX c1, long n) {       \
    fl_vec_##SUFFIX lo = __builtin_shufflevector(c0, c1, FL_ZIP_LO_LANES);                    \
    fl_vec_##SUFFIX hi = __builtin_shufflevector(c0, c1, FL_ZIP_HI_LANES);                    \
    if (n >= 2 * FL_LB) {                                                                     \
        fl_store_##SUFFIX(o, lo);                                                             \
        fl_store_##SUFFIX(o + FL_LB, hi);                                                     \
        return;                                                                               \
    }                                                                                         \
    T buf[2 * FL_LB];                                                                         \
    fl_store_##SUFFIX(buf, lo);                                                               \
    fl_store_##SUFFIX(buf + FL_LB, hi);                                                       \
    for (long k = 0; k < n; k++) o[k] = buf[k];                                               \
}                                                                                             \
/* out[2ty + a, 2tx + b] = (A^T M[., p] A)[a, b] + bias for the tiles tx0 + q of tile row   \
 * ty along the lanes (M[xi, p] at M + xi ldm + p, from tile pb): rows (m0 + m1 + m2,      \
 * m1 - m2 - m3), then the columns; only outputs inside OH x OW are stored. */              \
static inline __attribute__((always_inline)) fl_ivec_##SUFFIX                                \
fl_winograd_output_vec_##SUFFIX(const T *M, long ldm, T b, long ty, long tx0, T *out,        \
                                long OH, long OW, const int K) {                              \
    fl_vec_##SUFFIX y[4];                                                                     \
    if (K == 3) fl_winograd_at_m_a_##SUFFIX(M, ldm, b, y);                                    \
    else fl_winograd5_at_m_a_##SUFFIX(M, ldm, b, y);                                          \
    long n = OW - 2 * tx0 < 2 * FL_LB ? OW - 2 * tx0 : 2 * FL_LB;                             \
    fl_winograd_store_row_##SUFFIX(out + 2 * ty * OW + 2 * tx0, y[0], y[1], n);               \
    if (2 * ty + 1 < OH)                                                                      \
        fl_winograd_store_row_##SUFFIX(out + (2 * ty + 1) * OW + 2 * tx0, y[2], y[3], n);     \
    return fl_winograd_nonfinite_##SUFFIX(y);                                                 \
}                                                                                             \
/* d[R i + j][q] = src[2 ty + i, 2 tx + j] (rows of stride ld) for the LB tiles p0 + q of a \
 * pass, tile row ty0 + (p0 + q) / TW, column (p0 + q) % TW: R x R tiles (4 of the input,  \
 * 2 of dz) gathered value by value; lanes past the pass's nt tiles zero. */                \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_gather_##SUFFIX(const T *src, long ld, long TW, long ty0, long p0, long nt,      \
                            const int R, T d[][FL_LB]) {                                      \
    long ty = ty0 + p0 / TW, tx = p0 % TW;                                                    \
    for (int q = 0; q < FL_LB; q++) {                                                         \
        const T *s = src + 2 * ty * ld + 2 * tx;                                              \
        int real = p0 + q < nt;                                                               \
        for (int i = 0; i < R; i++)                                                           \
            for (int j = 0; j < R; j++) d[i * R + j][q] = real ? s[i * ld + j] : 0;           \
        if (++tx == TW) { tx = 0; ty++; }                                                     \
    }                                                                                         \
}                                                                                             \
/* The same for narrow rows (TW < LB / 2, e.g. 8x8 outputs: whole vector rows would leave   \
 * most lanes idle): V[xi, c, p0 + q] for the LB tiles p0 + q of a pass, gathered. */       \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_gather_vec_##SUFFIX(const T *xc, long WS, long TW, long ty0, long p0, long nt,   \
                                T *V, long ldv, const int K) {                                \
    T d[36][FL_LB];                                                                           \
    fl_winograd_gather_##SUFFIX(xc, WS, TW, ty0, p0, nt, K + 1, d);                           \
    fl_vec_##SUFFIX v[36];                                                                    \
    for (int k = 0; k < (K + 1) * (K + 1); k++) v[k] = fl_load_##SUFFIX(d[k]);                \
    if (K == 3) fl_winograd_bt_d_b_##SUFFIX(v, V, ldv);                                       \
    else fl_winograd5_bt_d_b_##SUFFIX(v, V, ldv);                                             \
}                                                                                             \
/* ... and its outputs, tile by tile: out[2ty + a, 2tx + b] for the LB tiles p0 + q of a    \
 * pass (M[xi, p] at M + xi ldm + p, from tile p0) that are among its nt tiles. */          \
static inline __attribute__((always_inline)) fl_ivec_##SUFFIX                                \
fl_winograd_scatter_vec_##SUFFIX(const T *M, long ldm, T b, long TW, long ty0, long p0,      \
                                 long nt, T *out, long OH, long OW, const int K) {           \
    fl_vec_##SUFFIX y[4];                                                                     \
    if (K == 3) fl_winograd_at_m_a_##SUFFIX(M, ldm, b, y);                                    \
    else fl_winograd5_at_m_a_##SUFFIX(M, ldm, b, y);                                          \
    T yv[4][FL_LB];                                                                           \
    for (int k = 0; k < 4; k++) fl_store_##SUFFIX(yv[k], y[k]);                               \
    long ty = ty0 + p0 / TW, tx = p0 % TW;                                                    \
    for (int q = 0; q < FL_LB && p0 + q < nt; q++) {                                          \
        long oy = 2 * ty, ox = 2 * tx;                                                        \
        T *o = out + oy * OW + ox;                                                            \
        int right = ox + 1 < OW, below = oy + 1 < OH;                                         \
        o[0] = yv[0][q];                                                                      \
        if (right) o[1] = yv[1][q];                                                           \
        if (below) { o[OW] = yv[2][q]; if (right) o[OW + 1] = yv[3][q]; }                     \
        if (++tx == TW) { tx = 0; ty++; }                                                     \
    }                                                                                         \
    return fl_winograd_nonfinite_##SUFFIX(y);                                                 \
}                                                                                             \
/* V[xi, c, p] (at V + xi ldv + c ldp + p) for every channel c and the P (a multiple of LB) \
 * tile columns of tile rows ty0 .. ty1-1: whole vector rows, or tile by tile where rows    \
 * are narrow (lanes past the nt tiles zero). */                                             \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_input_pass_##SUFFIX(const T *xp, long C, long HS, long WS, long TW, long ty0,    \
                                long ty1, long P, int narrow, T *V, long ldv, long ldp,       \
                                const int K) {                                                \
    long nt = (ty1 - ty0) * TW;                                                               \
    for (long c = 0; c < C; c++)                                                              \
        if (narrow)                                                                           \
            for (long p0 = 0; p0 < P; p0 += FL_LB)                                            \
                fl_winograd_gather_vec_##SUFFIX(xp + c * HS * WS, WS, TW, ty0, p0, nt,        \
                                                V + c * ldp + p0, ldv, K);                    \
        else                                                                                  \
            for (long ty = ty0; ty < ty1; ty++)                                               \
                for (long tx0 = 0; tx0 < TW; tx0 += FL_LB)                                    \
                    if (K == 3)                                                               \
                        fl_winograd_input_vec_##SUFFIX(xp + c * HS * WS, WS, ty, tx0,         \
                                                       V + c * ldp + (ty - ty0) * TW + tx0, ldv); \
                    else                                                                      \
                        fl_winograd5_input_vec_##SUFFIX(xp + c * HS * WS, WS, ty, tx0,        \
                                                        V + c * ldp + (ty - ty0) * TW + tx0, ldv); \
}                                                                                             \
/* Mq[xi, f, pb + q] = (A g A^T)[xi] for the 2x2 gradient tiles g of one plane dzq (rows    \
 * of stride WQ, zero past OH x OW), tiles tx0 + q of tile row ty along the lanes (A g: g0, \
 * g0 + g1, g0 - g1, -g1, along rows and columns).  Lanes past the row's last tile: see     \
 * fl_winograd_input_vec. */                                                                 \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_grad_vec_##SUFFIX(const T *dzq, long WQ, long ty, long tx0, T *Mq, long ldm,     \
                              const int K) {                                                  \
    fl_vec_##SUFFIX g[2][2], r[4][2];                                                         \
    for (int a = 0; a < 2; a++) {                                                             \
        const T *row = dzq + (2 * ty + a) * WQ + 2 * tx0;                                     \
        fl_vec_##SUFFIX lo = fl_load_##SUFFIX(row), hi = fl_load_##SUFFIX(row + FL_LB);       \
        g[a][0] = __builtin_shufflevector(lo, hi, FL_EVEN_LANES);                             \
        g[a][1] = __builtin_shufflevector(lo, hi, FL_ODD_LANES);                              \
    }                                                                                         \
    if (K == 3) fl_winograd_a_g_at_##SUFFIX(g, r, Mq, ldm);                                   \
    else fl_winograd5_a_g_at_##SUFFIX(g, Mq, ldm);                                            \
}                                                                                             \
/* ... the same for narrow rows, tile by tile: the LB tiles p0 + q of a pass (lanes past   \
 * its nt tiles zero). */                                                                    \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_grad_gather_##SUFFIX(const T *dzq, long WQ, long TW, long ty0, long p0, long nt, \
                                 T *Mq, long ldm, const int K) {                             \
    T d[4][FL_LB];                                                                            \
    fl_winograd_gather_##SUFFIX(dzq, WQ, TW, ty0, p0, nt, 2, d);                              \
    fl_vec_##SUFFIX g[2][2], r[4][2];                                                         \
    for (int k = 0; k < 4; k++) g[k / 2][k % 2] = fl_load_##SUFFIX(d[k]);                     \
    if (K == 3) fl_winograd_a_g_at_##SUFFIX(g, r, Mq, ldm);                                   \
    else fl_winograd5_a_g_at_##SUFFIX(g, Mq, ldm);                                            \
}                                                                                             \
/* The Winograd weight gradient's operands (F(2x2, KxK), K 3 or 5, Q = (K + 1)^2 positions)  \
 * for the tiles of tile rows ty0 .. ty1-1 of one sample, into columns from 0 of V (Q, Cp,  \
 * ldv / Cp) (xi stride ldv, channel stride ldp) and Mq (Q, Fp, .) (xi stride ldm):         \
 * V[xi, c, p] = (B^T d B)[xi] of the input tiles, as                                        \
 * the forward; Mq[xi, f, p] = (A g A^T)[xi] of the 2x2 output-gradient tiles.  xp (C, HS, \
 * WS) is the padded input as the forward reads it; dzq (F, 2 TH, WQ) the output gradient,  \
 * zero past OH x OW, WQ >= 2 round_up(TW, LB).  Mq's lanes from the pass's nt tiles up to  \
 * the next multiple of LB are zero, so V's spare lanes add nothing. */                      \
static inline __attribute__((always_inline)) void                                            \
fl_winograd_dw_tiles_k_##SUFFIX(const T *xp, long C, long HS, long WS, const T *dzq, long F,  \
                                long WQ, long OH, long OW, long ty0, long ty1, T *V, long ldv, \
                                T *Mq, long ldm, long ldp, const int K) {                     \
    long TH = (OH + 1) / 2, TW = (OW + 1) / 2, nt = (ty1 - ty0) * TW;                         \
    long P = (nt + FL_LB - 1) / FL_LB * FL_LB;                                                \
    int narrow = 2 * TW < FL_LB;                                                              \
    fl_winograd_input_pass_##SUFFIX(xp, C, HS, WS, TW, ty0, ty1, P, narrow, V, ldv, ldp, K);   \
    for (long f = 0; f < F; f++) {                                                            \
        const T *plane = dzq + f * 2 * TH * WQ;                                               \
        T *mf = Mq + f * ldp;                                                                 \
        if (narrow) {                                                                         \
            for (long p0 = 0; p0 < P; p0 += FL_LB)                                            \
                fl_winograd_grad_gather_##SUFFIX(plane, WQ, TW, ty0, p0, nt, mf + p0, ldm, K); \
            continue;                                                                         \
        }                                                                                     \
        for (long ty = ty0; ty < ty1; ty++)                                                   \
            for (long tx0 = 0; tx0 < TW; tx0 += FL_LB)                                        \
                fl_winograd_grad_vec_##SUFFIX(plane, WQ, ty, tx0, mf + (ty - ty0) * TW + tx0, ldm, K); \
        for (int xi = 0; xi < (K + 1) * (K + 1); xi++)                                        \
            memset(mf + xi * ldm + nt, 0, (P - nt) * sizeof(T));                              \
    }                                                                                         \
}                                                                                             \
static void fl_winograd_dw_tiles_##SUFFIX(const T *xp, long C, long HS, long WS, const T *dzq, \
                                          long F, long WQ, long OH, long OW, long ty0,         \
                                          long ty1, T *V, long ldv, T *Mq, long ldm, long ldp,  \
                                          long K) {                                           \
    if (K == 3)                                                                               \
        fl_winograd_dw_tiles_k_##SUFFIX(xp, C, HS, WS, dzq, F, WQ, OH, OW, ty0, ty1, V, ldv,   \
                                        Mq, ldm, ldp, 3);                                     \
    else                                                                                      \
        fl_winograd_dw_tiles_k_##SUFFIX(xp, C, HS, WS, dzq, F, WQ, OH, OW, ty0, ty1, V, ldv,   \
                                        Mq, ldm, ldp, 5);                                     \
}                                                                                             \
/* dU[xi] (Fp, Cp) += Mq[xi] (Fp, Lp) @ V[xi] (Cp, Lp)^T for the Q positions xi: the       \
 * weight gradient summed over Lp tile columns (rows of stride ldp, xi strides ldv, ldm). */ \
static void fl_winograd_dw_gemms_##SUFFIX(const T *V, long ldv, const T *Mq, long ldm,        \
                                          long ldp, long Cp, long Fp, long Lp, long Q, T *dU) { \
    for (int xi = 0; xi < Q; xi++)                                                            \
        fl_gemm_nt_acc_##SUFFIX(Mq + xi * ldm, ldp, V + xi * ldv, ldp, dU + xi * Fp * Cp, Cp,  \
                                Fp, Cp, Lp);                                                  \
}                                                                                             \
/* dw (F, C, 3, 3) = G^T dU[., f, c] G from dU (16, Fp, Cp): the weight gradient in the     \
 * filter domain (G^T rows: (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1)). */      \
static void fl_winograd_dw_filters_##SUFFIX(const T *dU, long F, long C, long Fp, long Cp,    \
                                            T *dw) {                                          \
    for (long f = 0; f < F; f++)                                                              \
        for (long c = 0; c < C; c++) {                                                        \
            T u[4][4], t[3][4];                                                               \
            for (int k = 0; k < 16; k++) u[k / 4][k % 4] = dU[(k * Fp + f) * Cp + c];         \
            for (int j = 0; j < 4; j++) {                                                     \
                t[0][j] = u[0][j] + (u[1][j] + u[2][j]) * (T)0.5;                             \
                t[1][j] = (u[1][j] - u[2][j]) * (T)0.5;                                       \
                t[2][j] = (u[1][j] + u[2][j]) * (T)0.5 + u[3][j];                             \
            }                                                                                 \
            T *o = dw + (f * C + c) * 9;                                                      \
            for (int i = 0; i < 3; i++) {                                                     \
                o[i * 3 + 0] = t[i][0] + (t[i][1] + t[i][2]) * (T)0.5;                        \
                o[i * 3 + 1] = (t[i][1] - t[i][2]) * (T)0.5;                                  \
                o[i * 3 + 2] = (t[i][1] + t[i][2]) * (T)0.5 + t[i][3];                        \
            }                                                                                 \
        }                                                                                     \
}                                                                                             \
/* dw (F, C, 5, 5) = G^T dU[., f, c] G from dU (36, Fp, Cp), F(2x2, 5x5)'s G (see          \
 * fl_winograd5_g), in double: per line u (6) -> (u0/4 - (u1+u2)/6 + (u3+u4)/24,           \
 * -(u1-u2)/6 + (u3-u4)/12, -(u1+u2)/6 + (u3+u4)/6, -(u1-u2)/6 + (u3-u4)/3,                 \
 * -(u1+u2)/6 + 2(u3+u4)/3 + u5). */                                                         \
static void fl_winograd5_gt_##SUFFIX(const double u[6], double o[5]) {                        \
    double e = u[1] + u[2], d = u[1] - u[2], e2 = u[3] + u[4], d2 = u[3] - u[4];              \
    o[0] = u[0] / 4 - e / 6 + e2 / 24; o[1] = -d / 6 + d2 / 12; o[2] = (e2 - e) / 6;          \
    o[3] = -d / 6 + d2 / 3; o[4] = -e / 6 + e2 * 2 / 3 + u[5];                                \
}                                                                                             \
static void fl_winograd5_dw_filters_##SUFFIX(const T *dU, long F, long C, long Fp, long Cp,   \
                                             T *dw) {                                         \
    for (long f = 0; f < F; f++)                                                              \
        for (long c = 0; c < C; c++) {                                                        \
            double u[6][6], t[5][6], col[6], o[5];                                            \
            for (int k = 0; k < 36; k++) u[k / 6][k % 6] = dU[(k * Fp + f) * Cp + c];         \
            for (int j = 0; j < 6; j++) {             /* G^T along the rows, column by column */ \
                for (int i = 0; i < 6; i++) col[i] = u[i][j];                                 \
                fl_winograd5_gt_##SUFFIX(col, o);                                             \
                for (int i = 0; i < 5; i++) t[i][j] = o[i];                                   \
            }                                                                                 \
            T *out = dw + (f * C + c) * 25;                                                   \
            for (int i = 0; i < 5; i++) {             /* then along the columns */            \
                fl_winograd5_gt_##SUFFIX(t[i], o);                                            \
                for (int j = 0; j < 5; j++) out[i * 5 + j] = (T)o[j];                         \
            }                                                                                 \
        }                                                                                     \
}                                                                                             \
/* dw (F, C, K, K) from dU, K 3 or 5: fl_winograd_dw_filters or fl_winograd5_dw_filters. */  \
static void fl_winograd_dw_to_filters_##SUFFIX(const T *dU, long F, long C, long Fp, long Cp,  \
                                               long K, T *dw) {                               \
    (K == 3 ? fl_winograd_dw_filters_##SUFFIX : fl_winograd5_dw_filters_##SUFFIX)(dU, F, C, Fp, \
                                                                                  Cp, dw);    \
}                                                                                             \
/* out (F planes of stride ldo, rows of OW) = convKxK(xp) + bias (bias may be NULL) for     \
 * one sample, by F(2x2, KxK), K 3 or 5 (Q = (K + 1)^2 tile positions): xp (C, HS, WS)     \
 * zero-padded, HS >= 2 TH + K - 1 and WS >= 2 round_up(TW, LB) + K - 1 (the tiles' vector \
 * rows read past the output's edge); U (Q, F, C) from fl_winograd_filters / 5_filters,    \
 * position xi's F x C filters at U + xi uq (uq = F C, or more for a share of the filters); \
 * V (Q, C, P + LB) and M (Q, F, P + LB) workspaces with P = round_up(TR * TW, LB) (a row's \
 * last vector spills up to LB - 1 lanes past the pass).  Passes of TR tile rows keep V    \
 * and M in L2 while the Q GEMMs stream them.  Returns 1 where an output was not finite. */ \
static inline __attribute__((always_inline)) int                                             \
fl_winograd_conv_##SUFFIX(const T *xp, long C, long HS, long WS, const T *U, long uq, long F,  \
                          const T *bias, long OH, long OW, long TR, long P, T *V, T *M,       \
                          T *out, long ldo, const int K) {                                    \
    long TH = (OH + 1) / 2, TW = (OW + 1) / 2, ldp = P + FL_LB, Q = (K + 1) * (K + 1);        \
    /* V[xi, c, p] at V + xi vpos + c vrow + p, M[xi, f, p] at M + xi mpos + f mrow + p: by    \
     * position for 3x3 (the GEMMs' operands contiguous), by channel for 5x5 (a tile's 36    \
     * values of one channel within 36 (P + LB) floats: 16 -> 32 on 24x24 11.3 -> 8.7 ms) */ \
    long vpos = K == 3 ? C * ldp : ldp, vrow = K == 3 ? ldp : Q * ldp;                        \
    long mpos = K == 3 ? F * ldp : ldp, mrow = K == 3 ? ldp : Q * ldp;                        \
    fl_ivec_##SUFFIX check = {0};            /* lanes where an output was not finite */       \
    int narrow = 2 * TW < FL_LB;            /* gathered tile by tile: see _gather_vec */      \
    for (long ty0 = 0; ty0 < TH; ty0 += TR) {                                                 \
        long ty1 = TH - ty0 < TR ? TH : ty0 + TR;                                             \
        long nt = (ty1 - ty0) * TW;                                                           \
        fl_winograd_input_pass_##SUFFIX(xp, C, HS, WS, TW, ty0, ty1, P, narrow, V, vpos, vrow, K); \
        for (int xi = 0; xi < Q; xi++)                                                        \
            fl_gemm_nn_##SUFFIX(U + xi * uq, C, 1, V + xi * vpos, vrow, M + xi * mpos, mrow,      \
                                F, C, P, NULL, 0);                                            \
        for (long f = 0; f < F; f++)                                                          \
            if (narrow)                                                                       \
                for (long p0 = 0; p0 < nt; p0 += FL_LB)                                       \
                    check |= fl_winograd_scatter_vec_##SUFFIX(M + f * mrow + p0, mpos,        \
                        bias ? bias[f] : 0, TW, ty0, p0, nt, out + f * ldo, OH, OW, K);       \
            else                                                                              \
                for (long ty = ty0; ty < ty1; ty++)                                           \
                    for (long tx0 = 0; tx0 < TW; tx0 += FL_LB)                                \
                        check |= fl_winograd_output_vec_##SUFFIX(M + f * mrow + (ty - ty0) * TW + tx0, \
                            mpos, bias ? bias[f] : 0, ty, tx0, out + f * ldo, OH, OW, K);     \
    }                                                                                         \
    for (int q = 0; q < FL_LB; q++)                                                           \
        if (check[q]) return 1;                                                               \
    return 0;                                                                                 \
}                                                                                             \
static __attribute__((noinline)) int                                                         \
fl_winograd_f2k3_##SUFFIX(const T *xp, long C, long HS, long WS, const T *U,                  \
                                     long uq, long F, const T *bias, long OH, long OW,       \
                                     long TR, long P, T *V, T *M, T *out, long ldo) {        \
    return fl_winograd_conv_##SUFFIX(xp, C, HS, WS, U, uq, F, bias, OH, OW, TR, P, V, M, out, ldo, 3); \
}                                                                                             \
static __attribute__((noinline)) int                                                         \
fl_winograd_f2k5_##SUFFIX(const T *xp, long C, long HS, long WS, const T *U,                  \
                                     long uq, long F, const T *bias, long OH, long OW,       \
                                     long TR, long P, T *V, T *M, T *out, long ldo) {        \
    return fl_winograd_conv_##SUFFIX(xp, C, HS, WS, U, uq, F, bias, OH, OW, TR, P, V, M, out, ldo, 5); \
}                                                                                             \
/* The entry point for K 3 or 5: each size compiled on its own (never inlined here, so their \
 * code does not depend on this dispatch). */                                                \
static int fl_winograd_run_##SUFFIX(const T *xp, long C, long HS, long WS, long K, const T *U, \
                                    long uq, long F, const T *bias, long OH, long OW, long TR, \
                                    long P, T *V, T *M, T *out, long ldo) {                   \
    return (K == 3 ? fl_winograd_f2k3_##SUFFIX : fl_winograd_f2k5_##SUFFIX)(                  \
        xp, C, HS, WS, U, uq, F, bias, OH, OW, TR, P, V, M, out, ldo);                        \
}                                                                                             \
/* The same convolution as plain sums in the reference's order (c, i, j), for a sample      \
 * whose Winograd result is not finite: a NaN or Inf there would reach, through the         \
 * transforms, outputs of its tiles that do not depend on it (Inf - Inf).  w is            \
 * (F, C, K, K); with flip, the dx convolution's: its filter f over input channel c is     \
 * w[c, f] rotated by 180 degrees (w (C, F, K, K)). */                                       \
static void fl_conv_exact_##SUFFIX(const T *xp, long C, long HS, long WS, const T *w, long K, \
                                   int flip, long F, const T *bias, long OH, long OW,         \
                                   T *out, long ldo) {                                        \
    for (long f = 0; f < F; f++)                                                              \
        for (long oy = 0; oy < OH; oy++)                                                      \
            for (long ox = 0; ox < OW; ox++) {                                                \
                T acc = bias ? bias[f] : 0;                                                   \
                for (long c = 0; c < C; c++)                                                  \
                    for (long i = 0; i < K; i++)                                              \
                        for (long j = 0; j < K; j++) {                                        \
                            T wv = flip ? w[((c * F + f) * K + K - 1 - i) * K + K - 1 - j]    \
                                        : w[((f * C + c) * K + i) * K + j];                   \
                            acc += wv * xp[(c * HS + oy + i) * WS + ox + j];                  \
                        }                                                                     \
                out[f * ldo + oy * OW + ox] = acc;                                            \
            }                                                                                 \
}

FL_DEFINE_WINOGRAD(float, f32)
FL_DEFINE_WINOGRAD(double, f64)

#endif
