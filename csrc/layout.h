#ifndef FASTLENET_LAYOUT_H
#define FASTLENET_LAYOUT_H
#include "fl_common.h"

/* Layout copies of one sample that the convolution paths read or write: the padded
 * input planes, im2row (im2col transposed, for dw 'gemm_im2row') and the stride-1
 * col2im into padded planes (dx 'col2im_s1').
 *
 * Dimension legend: C channels, H x W the input, HS x WS the padded plane, p pad,
 * KH x KW the kernel, s stride, OH x OW the conv output, LB lanes.
 */
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

#endif
