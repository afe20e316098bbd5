#ifndef FASTLENET_DIRECT_CONV_H
#define FASTLENET_DIRECT_CONV_H
#include "fl_common.h"

/* Direct convolution of one zero-padded sample with register tiles, and its fusions
 * with ReLU and a 2x2/stride-2 max pool (the plan's forward 'direct' and its pool
 * paths: tile_f8, tile_f6, tile_filter_lanes, and after_conv_2x2 over a stored output).
 *
 * Dimension legend: C channels, HS x WS the padded input plane, KH x KW the kernel,
 * OH x OW the conv output, PH x PW the pooled output, F filters (F8 rounded up to 8,
 * Fq to LB), FB filters per register tile, NV vectors per conv row.
 */
/* Direct stride-1 convolution of one sample, for layers whose output rows are wide
 * enough to fill most of a vector (both LeNet convolutions), where im2col would copy
 * about as much as the GEMM computes:
 *   z[f, oy*OW + ox] = bias[f] + sum_{c,i,j} w[f,c,i,j] * xp[c, oy+i, ox+j]
 * xp (C, HS, WS): the zero-padded input, row stride WS >= round_up(OW, LB) + KW - 1.
 * wd (F8/8, C*KH*KW, 8): the weights regrouped so that the 8 filters of a block are
 * contiguous for each tap (F padded to a multiple of 8 with zero filters); only the F
 * real filters are stored, so z may be the layer's output itself (ldz = OH*OW).
 * The register tile is 8 filters x R output rows x LB output columns: each input vector
 * loaded feeds 8 multiply-adds, each broadcast weight R.  R = FL_DIRECT_ROWS_<T> (2 for
 * float where the ISA has 32 vector registers: 16 accumulators; else 1) for every R rows,
 * and 1 for the rows left over.  Every output is the same sum in the same order
 * whatever R, so the tile changes the speed, never the bits. */
#if FL_LB == 16
#define FL_DIRECT_ROWS_f32 2     /* 16 accumulators of 32 registers */
#else
#define FL_DIRECT_ROWS_f32 1
#endif
#define FL_DIRECT_ROWS_f64 1     /* a vector of LB doubles takes two registers already */
#define FL_DEFINE_DIRECT_TILE(T, SUFFIX, R)                                                   \
static inline __attribute__((always_inline)) void fl_direct_tile_r##R##_##SUFFIX(             \
        const T *xp, long C, long HS, long WS, const T *wb, long KH, long KW,                 \
        const T *bias, T *z, long ldz, long oy, long OW, long ox0, long nf) {                 \
    fl_vec_##SUFFIX acc[R][8];                                                                \
    for (int r = 0; r < R; r++)                                                               \
        for (int f = 0; f < 8; f++) { acc[r][f] = (fl_vec_##SUFFIX){0}; acc[r][f] += bias[f]; } \
    const T *wt = wb;                                                                         \
    for (long c = 0; c < C; c++)                                                              \
        for (long i = 0; i < KH; i++) {                                                       \
            const T *row = xp + (c * HS + oy + i) * WS + ox0;                                 \
            for (long j = 0; j < KW; j++, wt += 8) {                                          \
                const T *rj = row + j;                                                        \
                FL_OPAQUE(rj);                                                                \
                fl_vec_##SUFFIX v[R];                                                         \
                for (int r = 0; r < R; r++) v[r] = fl_load_##SUFFIX(rj + r * WS);             \
                for (int f = 0; f < 8; f++) {                                                 \
                    T wv = wt[f];                                                             \
                    for (int r = 0; r < R; r++) acc[r][f] += wv * v[r];                       \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    long n = OW - ox0 < FL_LB ? OW - ox0 : FL_LB;                                             \
    /* a whole tile: constant bounds, the stores unrolled (kept apart from the nf < 8 case */ \
    /* below: a variable bound looked 5-20% slower on 3 -> 32, whose tiles have 27 taps) */   \
    if (nf == 8 && n == FL_LB) {                                                              \
        for (int r = 0; r < R; r++)                                                           \
            for (int f = 0; f < 8; f++)                                                       \
                fl_store_##SUFFIX(z + f * ldz + (oy + r) * OW + ox0, acc[r][f]);              \
        return;                                                                               \
    }                                                                                         \
    if (n == FL_LB) {                   /* whole rows of the real filters (LeNet C1: 6) */  \
        for (int r = 0; r < R; r++)                                                           \
            for (int f = 0; f < nf; f++)                                                      \
                fl_store_##SUFFIX(z + f * ldz + (oy + r) * OW + ox0, acc[r][f]);              \
        return;                                                                               \
    }                                                                                         \
    /* the row's last columns: an element loop (a memcpy of n elements became `rep movs`, */  \
    /* whose start-up cost 30% of C1's forward on AVX2) */                                    \
    for (int r = 0; r < R; r++)                                                               \
        for (int f = 0; f < nf; f++) {          /* the real filters and columns only */     \
            T *zr = z + f * ldz + (oy + r) * OW + ox0;                                        \
            for (long q = 0; q < n; q++) zr[q] = acc[r][f][q];                                \
        }                                                                                     \
}
#define FL_DEFINE_DIRECT(T, SUFFIX)                                                           \
FL_DEFINE_DIRECT_TILE(T, SUFFIX, 1)                                                           \
FL_DEFINE_DIRECT_TILE(T, SUFFIX, 2)                                                           \
/* Never inlined: inside conv.pyx's forward loop GCC allocates its tile's registers worse    \
 * (float64 3 -> 32 on 32x32, batch 32, 1 thread: 3.1 -> 5.5 ms when it was inlined). */    \
static __attribute__((noinline)) void                                                        \
fl_direct_conv_##SUFFIX(const T *xp, long C, long HS, long WS, const T *wd, long F, long KH,  \
                        long KW, const T *bias, T *z, long ldz, long OH, long OW) {          \
    long taps = C * KH * KW;                                                                  \
    for (long fb = 0; fb < F; fb += 8) {                                                      \
        const T *wb = wd + (fb / 8) * taps * 8;                                               \
        T *zb = z + fb * ldz;                                                                 \
        long nf = F - fb < 8 ? F - fb : 8;                                                    \
        long oy = 0;                                                                          \
        for (; oy + FL_DIRECT_ROWS_##SUFFIX <= OH; oy += FL_DIRECT_ROWS_##SUFFIX)             \
            for (long ox0 = 0; ox0 < OW; ox0 += FL_LB)                                        \
                FL_DIRECT_TILE_CALL(SUFFIX, FL_DIRECT_ROWS_##SUFFIX)(xp, C, HS, WS, wb, KH, KW, \
                                                        bias + fb, zb, ldz, oy, OW, ox0, nf); \
        for (; oy < OH; oy++)                                                                 \
            for (long ox0 = 0; ox0 < OW; ox0 += FL_LB)                                        \
                fl_direct_tile_r1_##SUFFIX(xp, C, HS, WS, wb, KH, KW, bias + fb, zb, ldz,     \
                                           oy, OW, ox0, nf);                                  \
    }                                                                                         \
}
#define FL_DIRECT_TILE_CALL_(SUFFIX, R) fl_direct_tile_r##R##_##SUFFIX
#define FL_DIRECT_TILE_CALL(SUFFIX, R) FL_DIRECT_TILE_CALL_(SUFFIX, R)

FL_DEFINE_DIRECT(float, f32)
FL_DEFINE_DIRECT(double, f64)

/* ReLU then 2x2/stride-2 max pool of one conv-output plane z (OH, OW) (row stride OW):
 * y (PH, PW) = max(0, window max) and arg = flat index of the window's first max in z,
 * or -1 where that max is not > 0 (ReLU blocks the gradient).  NaN propagates: a window
 * holding one gives NaN and no gradient, as the reference's ReLU then pool does.
 * Branch-free selects. */
#define FL_DEFINE_POOL2(T, SUFFIX)                                                            \
static void fl_relu_maxpool2_##SUFFIX(const T *z, long OW, T *y, int *arg, long PH, long PW) {\
    for (long oy = 0; oy < PH; oy++) {                                                        \
        const T *a = z + 2 * oy * OW, *b = a + OW;                                            \
        for (long ox = 0; ox < PW; ox++) {                                                    \
            T p = a[2 * ox], q = a[2 * ox + 1], r = b[2 * ox], u = b[2 * ox + 1];            \
            T m = p; int k = 0;                                                               \
            k = q > m ? 1 : k; m = q > m ? q : m;                                             \
            k = r > m ? 2 : k; m = r > m ? r : m;                                             \
            k = u > m ? 3 : k; m = u > m ? u : m;                                             \
            /* a NaN anywhere in the window: the output is NaN (their sum is), no gradient */  \
            int nan = (p != p) | (q != q) | (r != r) | (u != u);                              \
            long idx = (2 * oy + (k >> 1)) * OW + 2 * ox + (k & 1);                           \
            y[oy * PW + ox] = nan ? p + q + r + u : (m > 0 ? m : 0);                          \
            arg[oy * PW + ox] = (m > 0) & !nan ? (int)idx : -1;                               \
        }                                                                                     \
    }                                                                                         \
}

FL_DEFINE_POOL2(float, f32)
FL_DEFINE_POOL2(double, f64)

/* Direct stride-1 convolution fused with ReLU and a 2x2/stride-2 max pool, for one
 * sample, without writing the conv output:
 *   y[f, py, px] = max(0, max over the window of z[f, 2py + a, 2px + b])
 *   arg[f, py, px] = (2py + a)*OW + 2px + b of the window's first maximum (order
 *                    (0,0), (0,1), (1,0), (1,1)), or -1 where that maximum is <= 0
 * with z as in fl_direct_conv.  wd (F/FB, C*KH*KW, FB): FB filters contiguous per tap.
 * The register tile is FB filters x 2 conv rows x NV vectors (NV*LB >= OW): each
 * loaded input vector feeds FB multiply-adds and each broadcast weight 2*NV; the two
 * rows and the even/odd lanes of the tile are exactly the pooling windows, so the
 * pool runs on the accumulators (lane shuffles and selects, no scalar loop).  Never
 * inlined (as fl_direct_conv): inlined, its code followed its caller's (LeNet C1, batch
 * 256, 1 thread: 0.89 -> 0.95 ms after a change to the forward loop around it). */
#define FL_DEFINE_DIRECT_POOL(T, IT, SUFFIX, FB, NV)                                          \
static __attribute__((noinline)) void fl_direct_conv_pool2_f##FB##v##NV##_##SUFFIX(           \
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
                IV idx;                                                                       \
                V out = fl_pool2_window_##SUFFIX(a, b, cc, d, (IT)(2 * py), lane2, (IT)OW, &idx); \
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

/* The same fused conv + ReLU + 2x2 max pool for builds with 16 vector registers (the plan's
 * 'tile_f6' where lanes < 16), on rows of any width: the register tile is 6 filters x 2
 * conv rows x one vector of LB conv columns (12 accumulators, 2 input vectors, a broadcast
 * weight: the f6v2 tile's 24 accumulators spill on 16 registers, and the f8v1 tile's 16),
 * and tiles run along the conv row in blocks of LB columns (LB/2 pooled columns each; the
 * last block's columns past OW are computed from the row padding and never stored).
 * xp's rows (stride WS >= round_up(OW, LB) + KW - 1), wd (F6/6, C*KH*KW, 6), y, arg as in
 * fl_direct_conv_pool2.  LeNet C1 (6 filters, 28 columns) on AVX2: one tile per filter
 * block and 4 blocks per row, no stored conv output and no second pass. */
#define FL_DEFINE_DIRECT_POOL_COLUMNS(T, IT, SUFFIX)                                         \
static __attribute__((noinline)) void fl_direct_conv_pool2_f6cols_##SUFFIX(                  \
        const T *xp, long C, long HS, long WS, const T *wd, long FP, long KH, long KW,        \
        const T *bias, long OW, long PH, long PW, T *y, int *arg, long ldy) {                 \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    long taps = C * KH * KW;                                                                  \
    IV even, odd;                                                                             \
    for (int q = 0; q < FL_LB; q++) { even[q] = 2 * q; odd[q] = 2 * q + 1; }                  \
    for (long fb = 0; fb < FP; fb += 6)                                                       \
        for (long py = 0; py < PH; py++)                                                      \
            for (long x0 = 0; x0 < 2 * PW; x0 += FL_LB) {                                     \
                V acc[2][6];                                                                  \
                for (int f = 0; f < 6; f++) {                                                 \
                    acc[0][f] = (V){0}; acc[0][f] += bias[fb + f]; acc[1][f] = acc[0][f];     \
                }                                                                             \
                const T *wt = wd + (fb / 6) * taps * 6;                                       \
                for (long c = 0; c < C; c++)                                                  \
                    for (long i = 0; i < KH; i++) {                                           \
                        const T *row0 = xp + (c * HS + 2 * py + i) * WS + x0;                 \
                        for (long j = 0; j < KW; j++, wt += 6) {                              \
                            const T *r0 = row0 + j;                                           \
                            FL_OPAQUE(r0);                                                    \
                            V v0 = fl_load_##SUFFIX(r0), v1 = fl_load_##SUFFIX(r0 + WS);      \
                            for (int f = 0; f < 6; f++) {                                     \
                                T wv = wt[f];                                                 \
                                acc[0][f] += wv * v0;                                         \
                                acc[1][f] += wv * v1;                                         \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                long px0 = x0 / 2, np = PW - px0 < FL_LB / 2 ? PW - px0 : FL_LB / 2;         \
                for (int f = 0; f < 6 && fb + f < FP; f++) {                                  \
                    V a = __builtin_shuffle(acc[0][f], even), b = __builtin_shuffle(acc[0][f], odd); \
                    V cc = __builtin_shuffle(acc[1][f], even), d = __builtin_shuffle(acc[1][f], odd); \
                    IV idx;                                                                   \
                    V out = fl_pool2_window_##SUFFIX(a, b, cc, d, (IT)(2 * py), (IT)x0 + even,   \
                                                     (IT)OW, &idx);                           \
                    T *yr = y + (fb + f) * ldy + py * PW + px0;                               \
                    int *ar = arg + (fb + f) * ldy + py * PW + px0;                           \
                    if (np == FL_LB / 2) {          /* constant sizes: half-vector stores */ \
                        fl_i32_##SUFFIX ai = __builtin_convertvector(idx, fl_i32_##SUFFIX);   \
                        memcpy(yr, &out, FL_LB / 2 * sizeof(T));                              \
                        memcpy(ar, &ai, FL_LB / 2 * sizeof(int));                             \
                    } else {                                                                  \
                        for (long q = 0; q < np; q++) { yr[q] = out[q]; ar[q] = (int)idx[q]; } \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
}

#if FL_LB < 16
FL_DEFINE_DIRECT_POOL_COLUMNS(float, int, f32)
FL_DEFINE_DIRECT_POOL_COLUMNS(double, long, f64)
#define fl_direct_conv_pool2_tile_f6_f32 fl_direct_conv_pool2_f6cols_f32
#define fl_direct_conv_pool2_tile_f6_f64 fl_direct_conv_pool2_f6cols_f64
#else
#define fl_direct_conv_pool2_tile_f6_f32 fl_direct_conv_pool2_f6v2_f32
#define fl_direct_conv_pool2_tile_f6_f64 fl_direct_conv_pool2_f6v2_f64
#endif

/* The same fused conv + ReLU + 2x2 max pool with the filters along the vector lanes,
 * for layers with many filters and narrow rows (LeNet C3: 16 filters, 10 columns),
 * where columns-in-lanes would leave lanes idle:
 *   wq (Fq/LB, C*KH*KW, LB): the weights in blocks of LB filters, contiguous per tap
 *   (Fq a multiple of LB, zero past F); bias (Fq,).
 * The register tile is 2 conv rows x 2*PC conv columns (PC pooled columns) of LB
 * filters; each weight vector loaded feeds 4*PC multiply-adds against broadcast
 * inputs.  y, arg as in fl_direct_conv_pool2 (plane stride ldy), written lane by lane. */
/* The accumulators acc[2][2*PC] of one tile: both conv rows in one pass over the taps where
 * 32 vector registers hold them (4*PC of them) and the weight; one row per pass where there
 * are 16 (2*PC, the first row's parked in memory during the second pass: each weight vector
 * is loaded twice, and nothing spills inside the tap loop).  The same sums either way. */
#if FL_VREGS == 32
#define FL_POOL_FLANES_PASSES(T, SUFFIX, PC)                                                  \
    for (int r = 0; r < 2; r++)                                                               \
        for (int q = 0; q < 2 * PC; q++) acc[r][q] = b0;                                      \
    const T *wt = wq + (fb / FL_LB) * taps * FL_LB;                                           \
    for (long c = 0; c < C; c++)                                                              \
        for (long i = 0; i < KH; i++) {                                                       \
            const T *row0 = xp + (c * HS + 2 * py + i) * WS + 2 * px0;                        \
            const T *row1 = row0 + WS;                                                        \
            for (long j = 0; j < KW; j++, wt += FL_LB) {                                      \
                V wv = fl_load_##SUFFIX(wt);                                                  \
                FL_IN_REGISTER_##SUFFIX(wv);                                                  \
                const T *x0 = row0 + j, *x1 = row1 + j;                                       \
                FL_OPAQUE(x0); FL_OPAQUE(x1);                                                 \
                for (int q = 0; q < 2 * PC; q++) {                                            \
                    acc[0][q] += x0[q] * wv;                                                  \
                    acc[1][q] += x1[q] * wv;                                                  \
                }                                                                             \
            }                                                                                 \
        }
#else
#define FL_POOL_FLANES_PASSES(T, SUFFIX, PC)                                                  \
    for (int r = 0; r < 2; r++) {                                                             \
        V part[2 * PC];                                                                       \
        for (int q = 0; q < 2 * PC; q++) part[q] = b0;                                        \
        const T *wt = wq + (fb / FL_LB) * taps * FL_LB;                                       \
        for (long c = 0; c < C; c++)                                                          \
            for (long i = 0; i < KH; i++) {                                                   \
                const T *row = xp + (c * HS + 2 * py + r + i) * WS + 2 * px0;                 \
                for (long j = 0; j < KW; j++, wt += FL_LB) {                                  \
                    V wv = fl_load_##SUFFIX(wt);                                              \
                    FL_IN_REGISTER_##SUFFIX(wv);                                              \
                    const T *x0 = row + j;                                                    \
                    FL_OPAQUE(x0);                                                            \
                    for (int q = 0; q < 2 * PC; q++) part[q] += x0[q] * wv;                   \
                }                                                                             \
            }                                                                                 \
        for (int q = 0; q < 2 * PC; q++) acc[r][q] = part[q];                                 \
    }
#endif
#define FL_DEFINE_DIRECT_POOL_FLANES(T, IT, SUFFIX, PC)                                       \
static __attribute__((noinline)) void fl_direct_conv_pool2_flanes##PC##_##SUFFIX(             \
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
                FL_POOL_FLANES_PASSES(T, SUFFIX, PC)                                          \
                for (int q = 0; q < PC && px0 + q < PW; q++) {                                \
                    V a = acc[0][2 * q], b = acc[0][2 * q + 1];                               \
                    V cc = acc[1][2 * q], d = acc[1][2 * q + 1];                              \
                    IV idx, left = {0};                                                       \
                    long px = px0 + q;                                                        \
                    V out = fl_pool2_window_##SUFFIX(a, b, cc, d, (IT)(2 * py), left + (IT)(2 * px), \
                                                     (IT)OW, &idx);                           \
                    T *yo = y + fb * ldy + py * PW + px;                                      \
                    int *ao = arg + fb * ldy + py * PW + px;                                  \
                    for (long f = 0; f < nf; f++) { yo[f * ldy] = out[f]; ao[f * ldy] = (int)idx[f]; } \
                }                                                                             \
            }                                                                                 \
    }                                                                                         \
}

/* Direct convolution of one sample at stride s (1 or 2) with the filters along the vector
 * lanes (the plan's forward 'direct_filter_lanes'), for layers whose filters fill more lanes
 * than their output columns (LeNet C3 unfused: 16 filters, 10 columns; 64 filters on 8x8),
 * and stride-2 layers of many filters (no im2col copy):
 *   z[f, oy*OW + ox] = bias[f] + sum_{c,i,j} w[f,c,i,j] * xp[c, oy*s + i, ox*s + j]
 * as fl_direct_conv computes it at stride 1 (the same sums in the same order), with
 *   wq (Fq/LB, C*KH*KW, LB): the weights in blocks of LB filters, contiguous per tap
 *   (Fq a multiple of LB, zero past F); bias (Fq,);
 *   xp (C, HS, WS) with WS >= s (round_up(OW, FL_FLANES_COLS) - 1) + KW.
 * The register tile is R conv rows x Q conv columns of LB filters (R = FL_DIRECT_ROWS_<T>,
 * 1 for the rows left over; Q = OW for rows of 9 to 12, else FL_FLANES_COLS): each weight
 * vector loaded feeds R * Q multiply-adds against broadcast inputs.  z rows of stride ldz.
 * Every output is the same sum in the same order whatever the tile. */
#define FL_FLANES_COLS 8
#define FL_DEFINE_DIRECT_FLANES_TILE(T, SUFFIX, R, Q, S)                                      \
static inline __attribute__((always_inline)) void                                            \
fl_direct_flanes_tile_r##R##q##Q##s##S##_##SUFFIX(                                            \
        const T *xp, long C, long HS, long WS, const T *wb, long KH, long KW,                 \
        fl_vec_##SUFFIX b0, long nf, T *z, long ldz, long oy, long OW, long ox0) {            \
    fl_vec_##SUFFIX acc[R][Q];                                                                \
    for (int r = 0; r < R; r++)                                                               \
        for (int q = 0; q < Q; q++) acc[r][q] = b0;                                           \
    const T *wt = wb;                                                                         \
    for (long c = 0; c < C; c++)                                                              \
        for (long i = 0; i < KH; i++) {                                                       \
            const T *row = xp + (c * HS + oy * S + i) * WS + ox0 * S;                         \
            for (long j = 0; j < KW; j++, wt += FL_LB) {                                      \
                fl_vec_##SUFFIX wv = fl_load_##SUFFIX(wt);                                    \
                FL_IN_REGISTER_##SUFFIX(wv);                                                  \
                const T *x0 = row + j;                                                        \
                FL_OPAQUE(x0);                                                                \
                for (int r = 0; r < R; r++)                                                   \
                    for (int q = 0; q < Q; q++) acc[r][q] += x0[r * S * WS + q * S] * wv;     \
            }                                                                                 \
        }                                                                                     \
    long nq = OW - ox0 < Q ? OW - ox0 : Q;                                                    \
    for (int r = 0; r < R; r++)                                                               \
        for (long f = 0; f < nf; f++) {                                                       \
            T *zr = z + f * ldz + (oy + r) * OW + ox0;                                        \
            for (long q = 0; q < nq; q++) zr[q] = acc[r][q][f];                               \
        }                                                                                     \
}
/* The rows of one block of LB filters with tiles of Q columns at stride S: R rows at a time,
 * then one. */
#define FL_FLANES_ROWS(SUFFIX, Q, S)                                                          \
    for (; oy + FL_DIRECT_ROWS_##SUFFIX <= OH; oy += FL_DIRECT_ROWS_##SUFFIX)                 \
        for (long ox0 = 0; ox0 < OW; ox0 += Q)                                                \
            FL_DIRECT_FLANES_TILE_CALL(SUFFIX, FL_DIRECT_ROWS_##SUFFIX, Q, S)(                \
                xp, C, HS, WS, wb, KH, KW, b0, nf, zb, ldz, oy, OW, ox0);                     \
    for (; oy < OH; oy++)                                                                     \
        for (long ox0 = 0; ox0 < OW; ox0 += Q)                                                \
            FL_DIRECT_FLANES_TILE_CALL(SUFFIX, 1, Q, S)(xp, C, HS, WS, wb, KH, KW, b0, nf, zb, \
                                                        ldz, oy, OW, ox0);
/* Rows of 9 to 12 outputs take one tile of exactly that many columns (LeNet C3 unfused,
 * 10; lenet5-bn's C3, 12), which the 8-column tiles would fill to 10/16 or 12/16. */
#define FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, Q, S)                                        \
FL_DEFINE_DIRECT_FLANES_TILE(T, SUFFIX, 1, Q, S)                                              \
FL_DEFINE_DIRECT_FLANES_TILE(T, SUFFIX, 2, Q, S)
#define FL_DEFINE_DIRECT_FLANES(T, SUFFIX)                                                    \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 8, 1)                                                \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 8, 2)                                                \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 9, 1)                                                 \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 10, 1)                                                \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 11, 1)                                                \
FL_DEFINE_DIRECT_FLANES_TILES(T, SUFFIX, 12, 1)                                                \
static __attribute__((noinline)) void fl_direct_conv_flanes_##SUFFIX(const T *xp, long C, long HS, \
                                           long WS, long s,                                   \
                                           const T *wq, long F, long Fq, long KH, long KW,    \
                                           const T *bias, T *z, long ldz, long OH, long OW) { \
    long taps = C * KH * KW;                                                                  \
    for (long fb = 0; fb < Fq; fb += FL_LB) {                                                 \
        const T *wb = wq + (fb / FL_LB) * taps * FL_LB;                                       \
        fl_vec_##SUFFIX b0 = fl_load_##SUFFIX(bias + fb);                                     \
        long nf = F - fb < FL_LB ? F - fb : FL_LB;                                            \
        T *zb = z + fb * ldz;                                                                 \
        long oy = 0;                                                                          \
        if (s == 2) {                                                                         \
            FL_FLANES_ROWS(SUFFIX, 8, 2)                                                      \
            continue;                                                                         \
        }                                                                                     \
        switch (OW) {                                                                         \
        case 9: FL_FLANES_ROWS(SUFFIX, 9, 1) break;                                           \
        case 10: FL_FLANES_ROWS(SUFFIX, 10, 1) break;                                         \
        case 11: FL_FLANES_ROWS(SUFFIX, 11, 1) break;                                         \
        case 12: FL_FLANES_ROWS(SUFFIX, 12, 1) break;                                         \
        default: FL_FLANES_ROWS(SUFFIX, 8, 1) break;                                          \
        }                                                                                     \
    }                                                                                         \
}
#define FL_DIRECT_FLANES_TILE_CALL_(SUFFIX, R, Q, S) fl_direct_flanes_tile_r##R##q##Q##s##S##_##SUFFIX
#define FL_DIRECT_FLANES_TILE_CALL(SUFFIX, R, Q, S) FL_DIRECT_FLANES_TILE_CALL_(SUFFIX, R, Q, S)

FL_DEFINE_DIRECT_FLANES(float, f32)
FL_DEFINE_DIRECT_FLANES(double, f64)

/* pooled columns per filter-lanes tile: 2 rows x 2*5 columns = 20 vector accumulators and
 * the weight vector fit AVX-512's 32 registers, one row of 10 at a time 16 registers
 * (plan.FLANES_TILE must match: it pads WS) */
#define FL_POOL_FLANES_TILE 5
FL_DEFINE_DIRECT_POOL_FLANES(float, int, f32, 5)
FL_DEFINE_DIRECT_POOL_FLANES(double, long, f64, 5)

#endif
