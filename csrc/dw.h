#ifndef FASTLENET_DW_H
#define FASTLENET_DW_H
#include "fl_common.h"

/* dW of one sample straight from its padded input, without an im2row/im2col copy
 * (the plan's dw 'direct_filter_lanes' for KW 3 or 5, and 'direct_column_lanes' for
 * KW 3 or 5 at stride 1).
 *
 * Dimension legend: C channels, HS x WS the padded plane, KH x KW the kernel (KWC the
 * compile-time KW), s stride, OH x OW the conv output (OWr rounded up to LB), F filters
 * (Fq rounded up to LB), NR kernel rows held per pass, FB filters per tile.
 */
/* dW of one sample without im2row, for KW = 3 or 5 (every preset):
 *   dwt[(c, i, j), f] += sum_{oy, ox} xp[c, oy*s + i, ox*s + j] * dzt[oy*OW + ox, f]
 * dzt (L, ldt): the conv-output gradient transposed, filters along the vector lanes
 * (ldt a multiple of LB, padding lanes zero); dwt (C*KH*KW, ldt): dW transposed; the
 * first ``lanes`` of them (a multiple of LB; dzt and dwt may start at a later lane).
 * One pass over L holds NR kernel rows x KW taps of one channel in registers
 * (10 or 9 accumulators); each broadcast input value feeds one multiply-add. */
/* The inputs of output column ox: with 16 vector registers from a pointer hidden per
 * column (FL_OPAQUE: GCC's predictive commoning kept the NR x KW inputs one column shares
 * with the next in registers beside the accumulators, and spilled them: C3's dW on AVX2);
 * with 32 as indices from the row's start, where they fit. */
#if FL_VREGS == 16
#define FL_DW_INPUTS(T, xo, x0, ox, s) const T *xo = x0 + ox * s; FL_OPAQUE(xo)
#define FL_DW_COLUMN(ox, s) 0
#else
#define FL_DW_INPUTS(T, xo, x0, ox, s) const T *xo = x0
#define FL_DW_COLUMN(ox, s) ox * s
#endif
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
            FL_DW_INPUTS(T, xo, x0, ox, s);                                                   \
            for (int r = 0; r < nr; r++)                                                      \
                for (int j = 0; j < KWC; j++)                                                 \
                    acc[r * KWC + j] += xo[r * WS + FL_DW_COLUMN(ox, s) + j] * dv;            \
        }                                                                                     \
    }                                                                                         \
    for (int r = 0; r < nr; r++)                                                              \
        for (int j = 0; j < KWC; j++) fl_store_##SUFFIX(dwt + (r * KWC + j) * ldw, acc[r * KWC + j]); \
}                                                                                             \
/* Never inlined (as fl_direct_conv): its codegen should not depend on its callers. */    \
static __attribute__((noinline)) void                                                        \
fl_dw_direct_k##KWC##_##SUFFIX(const T *xp, long C, long HS, long WS, long KH, long s,        \
                               const T *dzt, long ldt, long lanes, long OH, long OW, T *dwt) { \
    for (long fb = 0; fb < lanes; fb += FL_LB)                                                \
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

/* KW 5: 3 filters x 5 taps (15 accumulators + 5 input vectors) with 32 vector registers,
 * 2 x 5 with 16 (3 x 5 spilled there: 21 registers' worth). */
#if FL_VREGS == 32
FL_DEFINE_DW_LANES(float, f32, 3, 5)
#define fl_dw_lanes_k5_f32 fl_dw_lanes_f3k5_f32
#else
FL_DEFINE_DW_LANES(float, f32, 2, 5)
#define fl_dw_lanes_k5_f32 fl_dw_lanes_f2k5_f32
#endif
FL_DEFINE_DW_LANES(double, f64, 3, 5)
#define fl_dw_lanes_k5_f64 fl_dw_lanes_f3k5_f64
/* KW 3: 6 filters x 3 taps (18 accumulators + 3 input vectors) with 32 vector registers
 * (AVX-512), 3 x 3 with 16; each input vector then feeds FB multiply-adds. */
#if FL_LB == 16
FL_DEFINE_DW_LANES(float, f32, 6, 3)
#define fl_dw_lanes_k3_f32 fl_dw_lanes_f6k3_f32
#else
FL_DEFINE_DW_LANES(float, f32, 3, 3)
#define fl_dw_lanes_k3_f32 fl_dw_lanes_f3k3_f32
#endif
FL_DEFINE_DW_LANES(double, f64, 3, 3)
#define fl_dw_lanes_k3_f64 fl_dw_lanes_f3k3_f64

#endif
