#ifndef FASTLENET_PEAK_H
#define FASTLENET_PEAK_H
#include "fl_common.h"

/* The FP32 multiply-add peak of one core, measured: a loop of independent vector FMAs
 * with nothing else in it (no loads, no stores), for benchmarks/peaks.py to compare
 * every backend's GFLOP/s with.
 *
 * Dimension legend: LB lanes per vector (FL_LB, the build's float vector width),
 * NACC independent accumulators.  Each iteration issues NACC multiply-adds of LB lanes
 * (2 * NACC * LB flops); NACC = 12 covers the FMA latency (4-5 cycles) times the
 * issue width (2 a cycle) of current x86 cores and still leaves registers free with
 * AVX2's 16.  The result is returned so that the loop is not optimised away.
 */
#define FL_PEAK_NACC 12

static float fl_fma_loop_f32(long iters, float seed) {
    fl_vec_f32 acc[FL_PEAK_NACC], mul, add;
    for (int i = 0; i < FL_PEAK_NACC; i++) { acc[i] = (fl_vec_f32){0}; acc[i] += seed + (float)i; }
    mul = (fl_vec_f32){0}; mul += 0.999999f;        /* |acc| stays bounded: no overflow, */
    add = (fl_vec_f32){0}; add += 1e-6f;            /* no denormals */
    for (long it = 0; it < iters; it++) {
        FL_OPAQUE(it);                              /* one FMA chain per accumulator, not folded */
        for (int i = 0; i < FL_PEAK_NACC; i++) acc[i] = acc[i] * mul + add;
    }
    float total = 0;
    for (int i = 0; i < FL_PEAK_NACC; i++)
        for (int j = 0; j < FL_LB; j++) total += acc[i][j];
    return total;
}

#endif
