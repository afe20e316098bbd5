#ifndef FASTLENET_PLANE_POOL_H
#define FASTLENET_PLANE_POOL_H
#include "fl_common.h"

/* Max and average pooling of one (n, c) plane, any window and stride (the public
 * maxpool2d / avgpool2d kernels; pool.pyx runs planes in parallel).
 *
 * Dimension legend: H x W the input plane, OH x OW the output, S x S windows at
 * stride s; y[oy, ox] covers x[oy*s + i, ox*s + j] for i, j < S.  n lanes of a block.
 *
 * Fast path (strides 1 and 2): each output row in blocks of n consecutive outputs, a
 * block one vector of n lanes (n = the widest of 64 / 32 / 16 bytes this ISA has that
 * fits in OW; the last block of a row overlaps the one before, which recomputes the
 * same values).  Tap (i, j) of a block is one load (stride 1) or two loads and an
 * even- or odd-lane shuffle (stride 2), and its max a compare and two selects, with
 * no data-dependent branch: scanning a window per output instead compiled to branches
 * that mispredict on real data (measured 9 ns per 2x2 output; GCC's own vectorisation
 * of the tap-by-tap row loop did not cover rows shorter than 16).  Other strides, and
 * rows narrower than the narrowest vector, run the scalar scan.  The taps are visited
 * in the reference's order (row by row): the max keeps its first-max / first-NaN rule,
 * the mean its summation order.
 *
 * Every load stays inside its input row: a stride-2 tap whose even-lane pair would read
 * past the row reads one element earlier and takes the odd lanes instead.
 */
#define FL_EVEN_2 0, 2
#define FL_ODD_2 1, 3
#define FL_EVEN_4 0, 2, 4, 6
#define FL_ODD_4 1, 3, 5, 7
#define FL_EVEN_8 0, 2, 4, 6, 8, 10, 12, 14
#define FL_ODD_8 1, 3, 5, 7, 9, 11, 13, 15
#define FL_EVEN_16 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define FL_ODD_16 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define FL_LANES_2 0, 1
#define FL_LANES_4 0, 1, 2, 3
#define FL_LANES_8 0, 1, 2, 3, 4, 5, 6, 7
#define FL_LANES_16 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15

/* Blocks of n = NB / sizeof(T) lanes: tap loads, the max block and the mean block. */
#define FL_DEFINE_POOL_BLOCKS(T, IT, SUFFIX, NB, N, EVEN, ODD, LANES)                          \
typedef T fl_pv##N##_##SUFFIX __attribute__((vector_size(NB)));                               \
typedef IT fl_pm##N##_##SUFFIX __attribute__((vector_size(NB)));                              \
typedef int fl_pi##N##_##SUFFIX __attribute__((vector_size(N * sizeof(int))));                \
/* x[ox0*s + j + lane*s] of one input row r (W wide), lanes 0..N-1, for s = 1 or 2. */       \
static inline fl_pv##N##_##SUFFIX fl_pool_tap##N##_##SUFFIX(const T *r, long W, long s,       \
                                                            long ox0, long j) {               \
    typedef fl_pv##N##_##SUFFIX V;                                                            \
    V a, b;                                                                                   \
    long lo = ox0 * s + j;                                                                    \
    if (s == 1) { memcpy(&a, r + lo, sizeof a); return a; }                                   \
    if (lo + 2 * N <= W) {                            /* r[lo], r[lo + 2], ... */             \
        memcpy(&a, r + lo, sizeof a); memcpy(&b, r + lo + N, sizeof b);                      \
        return __builtin_shufflevector(a, b, EVEN);                                           \
    }                                                 /* the same, from one element back */   \
    memcpy(&a, r + lo - 1, sizeof a); memcpy(&b, r + lo - 1 + N, sizeof b);                   \
    return __builtin_shufflevector(a, b, ODD);                                                \
}                                                                                             \
/* y[ox0 ..], arg[ox0 ..] for N outputs of the row whose windows start at x row r (flat    \
 * offset base): the first max of each window, or its first NaN. */                          \
static inline void fl_max_block##N##_##SUFFIX(const T *r, long W, long S, long s, long ox0,   \
                                              int base, T *y, int *arg) {                     \
    typedef fl_pv##N##_##SUFFIX V;                                                            \
    typedef fl_pm##N##_##SUFFIX M;                                                            \
    typedef fl_pi##N##_##SUFFIX I;                                                            \
    const I lane_offset = (I){LANES} * (int)s + (int)(base + ox0 * s);                        \
    V m = fl_pool_tap##N##_##SUFFIX(r, W, s, ox0, 0);                                         \
    I k = lane_offset;                                                                        \
    for (long i = 0; i < S; i++)                                                              \
        for (long j = (i == 0); j < S; j++) {                                                 \
            V v = fl_pool_tap##N##_##SUFFIX(r + i * W, W, s, ox0, j);                         \
            M takes = (m == m) & ~(v <= m);           /* FL_TAKES, lane by lane */            \
            I takes_i = __builtin_convertvector(takes, I);                                    \
            m = FL_SEL(M, V, takes, v, m);                                                    \
            k = FL_SEL(I, I, takes_i, lane_offset + (int)(i * W + j), k);                     \
        }                                                                                     \
    memcpy(y + ox0, &m, sizeof m);                                                            \
    memcpy(arg + ox0, &k, sizeof k);                                                          \
}                                                                                             \
/* y[ox0 ..] = the mean of N windows (taps summed row by row, then scaled). */               \
static inline void fl_avg_block##N##_##SUFFIX(const T *r, long W, long S, long s, long ox0,   \
                                              T scale, T *y) {                                \
    typedef fl_pv##N##_##SUFFIX V;                                                            \
    V acc = fl_pool_tap##N##_##SUFFIX(r, W, s, ox0, 0);                                       \
    for (long i = 0; i < S; i++)                                                              \
        for (long j = (i == 0); j < S; j++)                                                   \
            acc += fl_pool_tap##N##_##SUFFIX(r + i * W, W, s, ox0, j);                        \
    acc *= scale;                                                                             \
    memcpy(y + ox0, &acc, sizeof acc);                                                        \
}                                                                                             \
/* One output row in blocks of N (the last overlapping): mean (avg) or max. */               \
static void fl_pool_row##N##_##SUFFIX(const T *r, long W, long OW, long S, long s, int base,  \
                                      int avg, T scale, T *y, int *arg) {                     \
    for (long ox0 = 0;; ox0 += N) {                                                           \
        if (ox0 + N > OW) ox0 = OW - N;                                                       \
        if (avg) fl_avg_block##N##_##SUFFIX(r, W, S, s, ox0, scale, y);                       \
        else fl_max_block##N##_##SUFFIX(r, W, S, s, ox0, base, y, arg);                       \
        if (ox0 + N >= OW) break;                                                             \
    }                                                                                         \
}

/* The scalar scans (other strides, narrow rows) and the dispatch per plane. */
#define FL_DEFINE_PLANE_POOL(T, SUFFIX, ROW_WIDE, ROW_HALF, ROW_QUARTER, WIDE, HALF, QUARTER)  \
static void fl_max_row_scalar_##SUFFIX(const T *r, long W, long OW, long S, long s, int base, \
                                       T *y, int *arg) {                                      \
    for (long ox = 0; ox < OW; ox++) {                                                        \
        T m = r[ox * s];                                                                      \
        int k = base + (int)(ox * s);                                                         \
        for (long i = 0; i < S; i++)                                                          \
            for (long j = 0; j < S; j++) {                                                    \
                T v = r[i * W + ox * s + j];                                                  \
                int takes = FL_TAKES(v, m);                                                   \
                k = takes ? base + (int)(i * W + ox * s + j) : k;                             \
                m = takes ? v : m;                                                            \
            }                                                                                 \
        y[ox] = m;                                                                            \
        arg[ox] = k;                                                                          \
    }                                                                                         \
}                                                                                             \
static void fl_avg_row_scalar_##SUFFIX(const T *r, long W, long OW, long S, long s, T scale,  \
                                       T *y) {                                                \
    for (long ox = 0; ox < OW; ox++) {                                                        \
        T acc = 0;                                                                            \
        for (long i = 0; i < S; i++)                                                          \
            for (long j = 0; j < S; j++) acc += r[i * W + ox * s + j];                        \
        y[ox] = acc * scale;                                                                  \
    }                                                                                         \
}                                                                                             \
/* x (H*W) -> y (OH*OW): the mean of each window (avg), or each window's first max (or    \
 * first NaN) and its flat offset h*W + w in arg. */                                         \
static void fl_pool_plane_##SUFFIX(const T *x, long W, long OH, long OW, long S, long s,      \
                                   int avg, T scale, T *y, int *arg) {                        \
    /* stride 2 with 1 x 1 windows can need a row's last element in the even lanes */        \
    int lanes = s == 1 || (s == 2 && S >= 2);                                                 \
    for (long oy = 0; oy < OH; oy++) {                                                        \
        const T *r = x + oy * s * W;                                                          \
        int base = (int)(oy * s * W);                                                         \
        T *yr = y + oy * OW;                                                                  \
        int *ar = avg ? arg : arg + oy * OW;                                                  \
        if (lanes && OW >= WIDE) ROW_WIDE(r, W, OW, S, s, base, avg, scale, yr, ar);          \
        else if (lanes && OW >= HALF) ROW_HALF(r, W, OW, S, s, base, avg, scale, yr, ar);     \
        else if (lanes && QUARTER > 1 && OW >= QUARTER)                                       \
            ROW_QUARTER(r, W, OW, S, s, base, avg, scale, yr, ar);                            \
        else if (avg) fl_avg_row_scalar_##SUFFIX(r, W, OW, S, s, scale, yr);                  \
        else fl_max_row_scalar_##SUFFIX(r, W, OW, S, s, base, yr, ar);                        \
    }                                                                                         \
}                                                                                             \
static void fl_maxpool_plane_##SUFFIX(const T *x, long W, long OH, long OW, long S, long s,   \
                                      T *y, int *arg) {                                       \
    fl_pool_plane_##SUFFIX(x, W, OH, OW, S, s, 0, 0, y, arg);                                 \
}                                                                                             \
static void fl_avgpool_plane_##SUFFIX(const T *x, long W, long OH, long OW, long S, long s,   \
                                      T scale, T *y) {                                        \
    fl_pool_plane_##SUFFIX(x, W, OH, OW, S, s, 1, scale, y, NULL);                            \
}                                                                                             \
/* Backward of the mean, beside its forward: dx (H*W, zeroed by the caller) += every         \
 * window tap's share g[oy, ox] * scale, tap by tap across a row (within one tap the       \
 * columns ox*s + j are distinct, so GCC vectorises the pass; overlapping windows          \
 * accumulate across taps). */                                                              \
static void fl_avgpool_plane_grad_##SUFFIX(const T *restrict g, long W, long OH, long OW,    \
                                           long S, long s, T scale, T *restrict dx) {         \
    for (long oy = 0; oy < OH; oy++)                                                          \
        for (long i = 0; i < S; i++)                                                          \
            for (long j = 0; j < S; j++) {                                                    \
                T *restrict d = dx + (oy * s + i) * W + j;                                    \
                const T *restrict gr = g + oy * OW;                                           \
                if (s == 2)                                                                   \
                    for (long ox = 0; ox < OW; ox++) d[ox * 2] += gr[ox] * scale;             \
                else                                                                          \
                    for (long ox = 0; ox < OW; ox++) d[ox * s] += gr[ox] * scale;             \
            }                                                                                 \
}

/* Vector widths: a register (FL_LB floats), half and a quarter of one. */
#if FL_LB == 16
FL_DEFINE_POOL_BLOCKS(float, int, f32, 64, 16, FL_EVEN_16, FL_ODD_16, FL_LANES_16)
FL_DEFINE_POOL_BLOCKS(double, long, f64, 64, 8, FL_EVEN_8, FL_ODD_8, FL_LANES_8)
#endif
#if FL_LB >= 8
FL_DEFINE_POOL_BLOCKS(float, int, f32, 32, 8, FL_EVEN_8, FL_ODD_8, FL_LANES_8)
FL_DEFINE_POOL_BLOCKS(double, long, f64, 32, 4, FL_EVEN_4, FL_ODD_4, FL_LANES_4)
#endif
FL_DEFINE_POOL_BLOCKS(float, int, f32, 16, 4, FL_EVEN_4, FL_ODD_4, FL_LANES_4)
FL_DEFINE_POOL_BLOCKS(double, long, f64, 16, 2, FL_EVEN_2, FL_ODD_2, FL_LANES_2)

#if FL_LB == 16
FL_DEFINE_PLANE_POOL(float, f32, fl_pool_row16_f32, fl_pool_row8_f32, fl_pool_row4_f32, 16, 8, 4)
FL_DEFINE_PLANE_POOL(double, f64, fl_pool_row8_f64, fl_pool_row4_f64, fl_pool_row2_f64, 8, 4, 2)
#elif FL_LB == 8
FL_DEFINE_PLANE_POOL(float, f32, fl_pool_row8_f32, fl_pool_row4_f32, fl_pool_row4_f32, 8, 4, 1)
FL_DEFINE_PLANE_POOL(double, f64, fl_pool_row4_f64, fl_pool_row2_f64, fl_pool_row2_f64, 4, 2, 1)
#else
FL_DEFINE_PLANE_POOL(float, f32, fl_pool_row4_f32, fl_pool_row4_f32, fl_pool_row4_f32, 4, 4, 1)
FL_DEFINE_PLANE_POOL(double, f64, fl_pool_row2_f64, fl_pool_row2_f64, fl_pool_row2_f64, 2, 2, 1)
#endif

#endif
