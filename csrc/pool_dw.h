#ifndef FASTLENET_POOL_DW_H
#define FASTLENET_POOL_DW_H
#include "fl_common.h"

/* dW of a convolution fused with ReLU and a max pool, from the pooled gradient and the
 * pool's argmax directly (the plan's dW 'pooled_argmax'): only a window's maximum gets a
 * gradient, so of the conv output's OH*OW positions only the PH*PW argmaxes (a quarter
 * under a 2x2/2 pool, fewer still where the ReLU blocked a window) add to dW, and the
 * routed gradient dz (mostly zeros) is never laid out for it.
 *
 * Dimension legend: C channels, HS x WS the padded input plane, KH x KW the kernel (KW <=
 * LB: one vector covers a kernel row), s the conv stride, OH x OW the conv output (L =
 * OH*OW), P = PH*PW pooled outputs per plane, F filters, R rows (channel, kernel row)
 * per register tile, LB lanes.
 *
 * For one sample and each filter f, with a = arg[f, p] the conv-output position of
 * pooled output p's window maximum (a = oy*OW + ox, or -1: the window's max was <= 0 or
 * NaN, no gradient) and g = dpy[f, p]:
 *   dwl[f, c*KH + i, j] += g * xp[c, oy*s + i, ox*s + j]     for every c, i and j < KW
 * dwl (F, C*KH, LB): per-lane partial sums, lane j holding tap j (lanes from KW on hold
 * products with the row's next inputs and are never read).  xp's rows are long enough for
 * every such vector (WS >= s (OW - 1) + LB; conv.pyx _geometry).  The same products as
 * the dense dW over the routed gradient minus its zeros, so the result matches it where
 * the input is finite (the caller runs a dense path when it is not: 0 * Inf in the dense
 * sum is NaN). */

/* The active pooled outputs of one plane, compacted: g[e] and the offset in xp of its
 * window maximum's receptive field, off[e] = offsets[a] (offsets (L,): (a / OW) * s * WS +
 * (a % OW) * s); returns their count.  Branch-free (which windows the ReLU blocked is
 * data, and a branch on it mispredicted: 0.8 -> 0.24 ms for LeNet C1 at batch 256). */
#define FL_DEFINE_POOL_DW(T, SUFFIX, R, S)                                                     \
static inline long fl_pooled_active_##SUFFIX(const T *dpy, const int *arg, long P,           \
                                            const int *offsets, T *g, int *off) {            \
    long m = 0;                                                                               \
    for (long p = 0; p < P; p++) {                                                            \
        int a = arg[p];                                                                       \
        int none = a >> 31;               /* -1 where no gradient, else 0 */                 \
        g[m] = dpy[p];                                                                        \
        off[m] = offsets[a & ~none];                                                          \
        m += 1 + none;                                                                        \
    }                                                                                         \
    return m;                                                                                 \
}                                                                                             \
/* NR rows (channel, kernel row) of dwl from the m active outputs: NR accumulators, each    \
 * active output's gradient broadcast once and multiplied into NR input rows. */            \
FL_DEFINE_POOL_DW_TILE(T, SUFFIX, R)                                                          \
FL_DEFINE_POOL_DW_TILE(T, SUFFIX, S)                                                          \
FL_DEFINE_POOL_DW_TILE(T, SUFFIX, 1)                                                          \
static __attribute__((noinline)) void fl_dw_pooled_argmax_##SUFFIX(                          \
        const T *xp, const int *row_offsets, long rows, const T *dpy, const int *arg,        \
        long ldp, long P, const int *offsets, long nf, T *g, int *off, T *dwl) {             \
    for (long f = 0; f < nf; f++) {                                                           \
        long m = fl_pooled_active_##SUFFIX(dpy + f * ldp, arg + f * ldp, P, offsets, g, off); \
        T *d = dwl + f * rows * FL_LB;                                                        \
        long r = 0;                                                                           \
        for (; r + R <= rows; r += R)                                                         \
            fl_pooled_tile_r##R##_##SUFFIX(xp, row_offsets + r, g, off, m, d + r * FL_LB);    \
        for (; r + S <= rows; r += S)                                                         \
            fl_pooled_tile_r##S##_##SUFFIX(xp, row_offsets + r, g, off, m, d + r * FL_LB);    \
        for (; r < rows; r++)                                                                 \
            fl_pooled_tile_r1_##SUFFIX(xp, row_offsets + r, g, off, m, d + r * FL_LB);        \
    }                                                                                         \
}

#define FL_DEFINE_POOL_DW_TILE(T, SUFFIX, NR)                                                 \
static inline __attribute__((always_inline)) void fl_pooled_tile_r##NR##_##SUFFIX(           \
        const T *xp, const int *row_offsets, const T *g, const int *off, long m, T *d) {     \
    fl_vec_##SUFFIX acc[NR];                                                                  \
    long ro[NR];                                                                              \
    for (int r = 0; r < NR; r++) {                                                            \
        acc[r] = fl_load_##SUFFIX(d + r * FL_LB);                                             \
        ro[r] = row_offsets[r];                                                               \
    }                                                                                         \
    for (long e = 0; e < m; e++) {                                                            \
        const T *xe = xp + off[e];                                                            \
        T ge = g[e];                                                                          \
        for (int r = 0; r < NR; r++) acc[r] += ge * fl_load_##SUFFIX(xe + ro[r]);             \
    }                                                                                         \
    for (int r = 0; r < NR; r++) fl_store_##SUFFIX(d + r * FL_LB, acc[r]);                    \
}

/* rows per register tile R: 10 accumulators of 16 vector registers (20 of 32; a vector of
 * LB doubles takes two), then tiles of S = R/2 rows (a 5x5 kernel's single channel), then 1 */
#if FL_VREGS == 32
FL_DEFINE_POOL_DW(float, f32, 20, 10)
FL_DEFINE_POOL_DW(double, f64, 10, 5)
#else
FL_DEFINE_POOL_DW(float, f32, 10, 5)
FL_DEFINE_POOL_DW(double, f64, 5, 2)
#endif

/* Whether all n elements of x are finite: none has every exponent bit set (Inf, NaN).
 * Integer tests of the bits: the build's float flags (-fno-signed-zeros, associative
 * math) let GCC fold float tests such as x * 0 == 0 to true. */
#define FL_DEFINE_ALL_FINITE(T, IT, SUFFIX, EXPONENT)                                         \
static int fl_all_finite_##SUFFIX(const T *x, long n) {                                      \
    fl_ivec_##SUFFIX bad = {0};                                                               \
    long i = 0;                                                                               \
    for (; i + FL_LB <= n; i += FL_LB) {                                                      \
        fl_ivec_##SUFFIX bits;                                                                \
        memcpy(&bits, x + i, sizeof bits);                                                    \
        bad |= (bits & EXPONENT) == EXPONENT;                                                 \
    }                                                                                         \
    IT any = 0;                                                                               \
    for (; i < n; i++) {                                                                      \
        IT bits;                                                                              \
        memcpy(&bits, x + i, sizeof bits);                                                    \
        any |= (bits & EXPONENT) == EXPONENT;                                                 \
    }                                                                                         \
    for (int q = 0; q < FL_LB; q++) any |= bad[q];                                            \
    return any == 0;                                                                          \
}
FL_DEFINE_ALL_FINITE(float, int, f32, 0x7f800000)
FL_DEFINE_ALL_FINITE(double, long, f64, 0x7ff0000000000000L)

#endif
