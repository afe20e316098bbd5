#ifndef FASTLENET_COMMON_H
#define FASTLENET_COMMON_H

/* What every kernel header shares: the register-tile sizes, GCC vector types of
 * FL_LB lanes, unaligned loads/stores, selects, and the ReLU'd 2x2 window max.
 *
 * Dimension legend: LB lanes per vector row (FL_LB: one float vector of the build's ISA,
 * 16 / 8 / 4 for AVX-512 / AVX2 / SSE; as many doubles, i.e. two registers), MB rows per
 * GEMM tile.  T is float or double (suffix f32 / f64),
 * IT the integer type of T's width (int / long), so masks and selects are lane-wise.
 * Each header defines its kernels as static functions from one macro instantiated for
 * both types; every kernel is declared to Cython once, in csrc/kernels.pxd.
 */
#if defined(__GNUC__)   /* each extension uses some of these static kernels, not all */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <string.h>

#define FL_MB 4
/* Lanes of one register-tile row: one float vector of the widest ISA this build targets
 * (AVX-512 16, AVX/AVX2 8, SSE 4).  Never wider than a register: a GCC vector type with
 * no machine mode of its size (16 floats without AVX-512) lives in memory, and every
 * operation on it becomes loads and stores (measured: 20x slower kernels on AVX2). */
#if defined(__AVX512F__)
#define FL_LB 16
#elif defined(__AVX__)
#define FL_LB 8
#else
#define FL_LB 4
#endif
/* FL_LB lanes from the first FL_LB / 2 of a half vector h, each twice: 0, 0, 1, 1, ... */
#if FL_LB == 16
#define FL_DUP_HALF(h) __builtin_shufflevector(h, h, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
#elif FL_LB == 8
#define FL_DUP_HALF(h) __builtin_shufflevector(h, h, 0, 0, 1, 1, 2, 2, 3, 3)
#else
#define FL_DUP_HALF(h) __builtin_shufflevector(h, h, 0, 0, 1, 1)
#endif
#define FL_MAX_TAPS 8   /* col2im_s1 keeps the row masks of up to this many taps precomputed */

/* Keeps a loaded vector in its register: without it GCC folds the load into each
 * multiply-add that uses it, and the tile becomes load-bound (two loads a cycle).
 * Only where one register holds the vector (FL_LB floats: always, on x86 with AVX). */
#if defined(__GNUC__) && defined(__AVX__)
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

/* Vector registers of the build's ISA: 32 with AVX-512, else 16 (AVX/AVX2, SSE on x86-64).
 * A register tile sized for 32 spills on 16 (measured on AVX2: the stack stores and reloads
 * were the hottest instructions of C3's fused forward and dW). */
#if defined(__AVX512F__)
#define FL_VREGS 32
#else
#define FL_VREGS 16
#endif

/* a where mask (all ones), else b: a select between vectors, viewed as integer vectors IV */
#define FL_SEL(IV, VT, mask, a, b) ((VT)(((IV)(a) & (mask)) | ((IV)(b) & ~(mask))))


/* Whether a window scan replaces its max m by the next value v: v is larger, or v is the
 * window's first NaN (m stays once it is NaN) -- np.argmax's rule, NaN propagating. */
#define FL_TAKES(v, m) (((m) == (m)) & !((v) <= (m)))   /* '&', not '&&': no branch */

#define FL_DEFINE_VECTORS(T, IT, SUFFIX)                                                          \
typedef T fl_vec_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(T))));                   \
typedef IT fl_ivec_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(T))));                  \
typedef int fl_i32_##SUFFIX __attribute__((vector_size(FL_LB * sizeof(int))));               \
                                                                                              \
static inline fl_vec_##SUFFIX fl_load_##SUFFIX(const T *p) {                                  \
    fl_vec_##SUFFIX v; memcpy(&v, p, sizeof v); return v;                                     \
}                                                                                             \
static inline void fl_store_##SUFFIX(T *p, fl_vec_##SUFFIX v) { memcpy(p, &v, sizeof v); }    \
/* ReLU of the 2x2 pool window's max, lane by lane, from its corners a (0,0), b (0,1),    \
 * c (1,0), d (1,1): *k gets the corner 0..3 of the first max (scan order), *pos all ones \
 * where that max is > 0 (where the gradient flows).  NaN propagates, as in the reference \
 * (np.max / np.argmax, np.maximum): the first NaN is the window's max and its output,    \
 * and gets no gradient (NaN > 0 is false).  Selects, not branches. */                    \
static inline fl_vec_##SUFFIX fl_relu_max4_##SUFFIX(fl_vec_##SUFFIX a, fl_vec_##SUFFIX b,     \
        fl_vec_##SUFFIX c, fl_vec_##SUFFIX d, fl_ivec_##SUFFIX *k, fl_ivec_##SUFFIX *pos) {   \
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    IV kk = {0}, gt;                                                                          \
    IV one = kk + 1, two = one + 1, three = two + 1;        /* the corner numbers, splatted */ \
    V m = a, zero = {0};                                                                      \
    /* takes v where m is a number and v is not <= m: larger, or the first NaN */           \
    gt = (m == m) & ~(b <= m); m = FL_SEL(IV, V, gt, b, m); kk = FL_SEL(IV, IV, gt, one, kk); \
    gt = (m == m) & ~(c <= m); m = FL_SEL(IV, V, gt, c, m); kk = FL_SEL(IV, IV, gt, two, kk); \
    gt = (m == m) & ~(d <= m); m = FL_SEL(IV, V, gt, d, m); kk = FL_SEL(IV, IV, gt, three, kk); \
    *k = kk;                                                                                  \
    *pos = m > zero;                                                                          \
    return FL_SEL(IV, V, ~(m <= zero), m, zero);               /* NaN stays NaN */            \
}                                                                                             \
/* ... and *idx: the flat index in the conv output (row stride OW) of each window's first    \
 * max, from the window's top conv row y0 and left column x0 (per lane), or -1 where that    \
 * max is not > 0 (the pool's arg; every fused conv + ReLU + pool kernel stores these). */   \
static inline fl_vec_##SUFFIX fl_pool2_window_##SUFFIX(fl_vec_##SUFFIX a, fl_vec_##SUFFIX b, \
        fl_vec_##SUFFIX c, fl_vec_##SUFFIX d, IT y0, fl_ivec_##SUFFIX x0, IT OW,             \
        fl_ivec_##SUFFIX *idx) {                                                              \
    fl_ivec_##SUFFIX k, pos;                                                                  \
    fl_vec_##SUFFIX out = fl_relu_max4_##SUFFIX(a, b, c, d, &k, &pos);                        \
    fl_ivec_##SUFFIX i = (y0 + (k >> 1)) * OW + x0 + (k & 1);                                 \
    *idx = FL_SEL(fl_ivec_##SUFFIX, fl_ivec_##SUFFIX, pos, i, i * 0 - 1);                     \
    return out;                                                                               \
}

FL_DEFINE_VECTORS(float, int, f32)
FL_DEFINE_VECTORS(double, long, f64)

#endif
