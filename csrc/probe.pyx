# Machine probes for the benchmarks: the measured FP32 multiply-add peak of this build
# on this CPU (csrc/peak.h), and the vector width and ISA the build targets.
#
# Dimension legend: T threads, I iterations per thread; each iteration is
# FL_PEAK_NACC vector multiply-adds of LB lanes (2 flops a lane).
from cython.parallel cimport parallel
cimport openmp
from libc.stdlib cimport malloc, free

from fl_kernels cimport LB

cdef extern from "peak.h" nogil:
    enum:
        FL_PEAK_NACC
    float fl_fma_loop_f32(long iters, float seed)

#: float lanes of the build's vectors (AVX-512 16, AVX2 8, SSE 4)
LANES = LB


def isa():
    """The widest x86 vector extension the build was compiled for ('avx512f', 'avx2', ...)."""
    return _ISA.decode()


cdef extern from *:
    """
    #if defined(__AVX512F__)
    static const char *FL_ISA = "avx512f";
    #elif defined(__AVX2__) && defined(__FMA__)
    static const char *FL_ISA = "avx2+fma";
    #elif defined(__AVX__)
    static const char *FL_ISA = "avx";
    #elif defined(__SSE2__)
    static const char *FL_ISA = "sse2";
    #else
    static const char *FL_ISA = "generic";
    #endif
    """
    const char *FL_ISA

_ISA = <bytes> FL_ISA


def fma_flops(long iters_per_thread, int threads):
    """Run the FMA loop on ``threads`` OpenMP threads at once, ``iters_per_thread`` each;
    return (flops done, checksum).  The caller times it (benchmarks/peaks.py)."""
    cdef float *sums = <float *> malloc(threads * sizeof(float))
    cdef int tid
    cdef double total = 0
    if sums == NULL:
        raise MemoryError()
    try:
        with nogil, parallel(num_threads=threads):
            tid = openmp.omp_get_thread_num()
            sums[tid] = fl_fma_loop_f32(iters_per_thread, <float> tid)
        for tid in range(threads):
            total += sums[tid]
    finally:
        free(sums)
    return 2.0 * FL_PEAK_NACC * LB * iters_per_thread * threads, total
