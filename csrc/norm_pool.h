#ifndef FASTLENET_NORM_POOL_H
#define FASTLENET_NORM_POOL_H
#include "fl_common.h"

/* Batch norm, ReLU and a 2x2/stride-2 max pool over FL_NP planes at once, the planes
 * along the vector lanes.
 *
 * Dimension legend: NP planes per group (FL_NP), H x W a plane, PH x PW its pooled plane.
 *
 * Plane by plane (fl_relu_maxpool2 on a normalised plane) the pool's vector loop runs
 * along a pooled row, and LeNet's are 14 and 5 wide: a vector of 16 never fills, so it
 * ran in its scalar remainder (about 300 ns a 10x10 plane).  Here the NP planes are
 * normalised into zt interleaved, zt[(y*W + x)*NP + p] (a gather across the planes per
 * pixel: a plane at a time, the strided stores took 1.7x as long on 28x28), and every
 * window is one vector per tap across the planes.  Each lane computes what fl_relu_maxpool2 does for its
 * plane, in the same order: the same values, the same first maximum, NaN propagated
 * with no gradient.
 *
 * x: NP consecutive planes (H*W each); m, a, b (NP,): each plane's mean, scale
 * (gamma * inv_std) and shift (beta); zt (H*W*NP) workspace; y, arg: NP consecutive
 * pooled planes (PH*PW each), arg = y*W + x of the window's first max in its plane, or -1
 * where that max is not > 0. */
#define FL_NP 16
#define FL_DEFINE_BN_POOL2_PLANES(T, SUFFIX)                                                  \
static void fl_bn_relu_maxpool2_planes_##SUFFIX(const T *x, long H, long W, const T *m,      \
                                                const T *a, const T *b, T *zt, T *y,         \
                                                int *arg, long PH, long PW) {                \
    long hw = H * W, out = PH * PW;                                                           \
    for (long i = 0; i < hw; i++)                                                             \
        for (int p = 0; p < FL_NP; p++) zt[i * FL_NP + p] = (x[p * hw + i] - m[p]) * a[p] + b[p]; \
    for (long oy = 0; oy < PH; oy++)                                                          \
        for (long ox = 0; ox < PW; ox++) {                                                    \
            long i00 = 2 * oy * W + 2 * ox;                                                   \
            const T *t0 = zt + i00 * FL_NP, *t1 = t0 + FL_NP;                                 \
            const T *t2 = t0 + W * FL_NP, *t3 = t2 + FL_NP;                                  \
            T ym[FL_NP];                                                                      \
            int am[FL_NP];                                                                    \
            for (int p = 0; p < FL_NP; p++) {                                                 \
                T v0 = t0[p], v1 = t1[p], v2 = t2[p], v3 = t3[p];                             \
                T mx = v0; int k = 0;                                                         \
                k = v1 > mx ? 1 : k; mx = v1 > mx ? v1 : mx;                                  \
                k = v2 > mx ? 2 : k; mx = v2 > mx ? v2 : mx;                                  \
                k = v3 > mx ? 3 : k; mx = v3 > mx ? v3 : mx;                                  \
                int nan = (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);                  \
                long idx = i00 + (k >> 1) * W + (k & 1);                                      \
                ym[p] = nan ? v0 + v1 + v2 + v3 : (mx > 0 ? mx : 0);                          \
                am[p] = (mx > 0) & !nan ? (int)idx : -1;                                      \
            }                                                                                 \
            for (int p = 0; p < FL_NP; p++) {                                                 \
                y[p * out + oy * PW + ox] = ym[p];                                            \
                arg[p * out + oy * PW + ox] = am[p];                                          \
            }                                                                                 \
        }                                                                                     \
}

FL_DEFINE_BN_POOL2_PLANES(float, f32)
FL_DEFINE_BN_POOL2_PLANES(double, f64)

#endif
