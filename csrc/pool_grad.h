#ifndef FASTLENET_POOL_GRAD_H
#define FASTLENET_POOL_GRAD_H
#include "fl_common.h"

/* The max pool's gradient inside a fused conv + ReLU + pool backward: the pooled
 * gradient turned into the conv-output gradient (the plan's pool_grad paths
 * 'expand_2x2' and 'route') and its bias gradient.
 *
 * Dimension legend: PH x PW the pooled plane, OH x OW the conv output, size x size
 * windows at stride ps, LB lanes; arg[py, px] = oy*OW + ox of the window's max, or
 * -1 where ReLU blocked the gradient.
 */
/* The pooled gradient of one plane routed to its window maxima, branch-free (the
 * -1 / window-offset tests of arg are data-dependent and would mispredict):
 *   out[oy*ystride + ox*xstride] (+)= dpy[py, px]   where arg[py, px] = oy*OW + ox >= 0
 * for windows of size x size at stride ps; returns the sum of the routed values
 * (the bias gradient).  ystride/xstride select the layout (plain, transposed, padded).
 * Windows that do not overlap (ps >= size) own their targets, so plain stores do;
 * out must start zeroed either way. */
#define FL_DEFINE_ROUTE(T, SUFFIX)                                                            \
/* sum of dpy where arg >= 0 (the bias gradient of one plane; vectorised). */              \
static T fl_routed_sum_##SUFFIX(const T *dpy, const int *arg, long n) {                       \
    T total = 0;                                                                              \
    for (long q = 0; q < n; q++) total += arg[q] >= 0 ? dpy[q] : 0;                           \
    return total;                                                                             \
}                                                                                             \
static T fl_route_pool_grad_##SUFFIX(const T *dpy, const int *arg, long PH, long PW, long OW, \
                                     long size, long ps, T *out, long ystride, long xstride) {\
    T total = fl_routed_sum_##SUFFIX(dpy, arg, PH * PW);                                     \
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
 * for oy < OH, ox < OW.  Rows are written LB lanes at a time, two rows per pooled row:
 * with ldrow >= round_up(OW, LB) the lanes past OW are zeros; with ldrow == OW (unpadded
 * rows) a row's spill-over (zeros) is overwritten by the next rows' own writes, and
 * nothing is written past the plane's OH*OW elements.  LB/2 pooled values are loaded at once where at least that many
 * remain before `end` (the end of the dpy array; arg is laid out alike); values past
 * the row are masked off. */
#define FL_DEFINE_EXPAND(T, IT, SUFFIX)                                                       \
static inline void fl_expand_store_##SUFFIX(T *dst, fl_vec_##SUFFIX val, long room, int whole) { \
    if (whole || room >= FL_LB)                                                               \
        fl_store_##SUFFIX(dst, val);                                                          \
    else                               /* unpadded rows: the plane's last vector */          \
        memcpy(dst, &val, room * sizeof(T));                                                  \
}                                                                                             \
static void fl_expand_pool2_grad_##SUFFIX(const T *dpy, const int *arg, long PH, long PW,     \
                                          long OH, long OW, T *out, long ldrow, const T *end) {\
    typedef fl_vec_##SUFFIX V;                                                                \
    typedef fl_ivec_##SUFFIX IV;                                                              \
    IV half, lane;                                                                            \
    for (int q = 0; q < FL_LB; q++) { half[q] = q >> 1; lane[q] = q; }                        \
    long nv = (OW + FL_LB - 1) / FL_LB;                                                       \
    /* both conv rows of a pooled row from one load of it (its window's rows 2py, 2py + 1), \
     * their vectors from the last: only a row's last vector spills into the next row (with \
     * ldrow == OW), and that next row's own first vector is then written after it */       \
    for (long oy = 0; oy < OH; oy += 2) {                                                     \
        long py = oy >> 1;                                                                    \
        for (long v = nv - 1; v >= 0; v--) {                                                  \
            long p0 = v * FL_LB / 2;                                                          \
            V val0 = {0}, val1 = {0};                                                         \
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
                V dd = FL_DUP_HALF(dh);                                                       \
                IV aa = __builtin_convertvector(FL_DUP_HALF(ah), IV);                         \
                IV idx = lane + (IT)(oy * OW + v * FL_LB);                                    \
                IV cols = half + (IT)p0 < (IT)PW;                                             \
                val0 = (V)((IV)dd & ((aa == idx) & cols));                                    \
                val1 = (V)((IV)dd & ((aa == idx + (IT)OW) & cols));                           \
            }                                                                                 \
            long at = oy * OW + v * FL_LB;                                                    \
            fl_expand_store_##SUFFIX(out + oy * ldrow + v * FL_LB, val0, OH * OW - at, ldrow != OW); \
            if (oy + 1 < OH)                                                                  \
                fl_expand_store_##SUFFIX(out + (oy + 1) * ldrow + v * FL_LB, val1, OH * OW - at - OW, \
                                         ldrow != OW);                                        \
        }                                                                                     \
    }                                                                                         \
}

FL_DEFINE_EXPAND(float, int, f32)
FL_DEFINE_EXPAND(double, long, f64)

#endif
