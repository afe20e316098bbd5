"""What every Numba kernel module shares: the compile options, and the max-pool rule.

One place for every Numba option.  The fast-math flags let LLVM reassociate the
reductions (dW, db, batch statistics) into SIMD lanes (results stay within float
tolerance), as the C build's flags do; like them they leave out nnan/ninf, so NaN and
Inf propagate.  Every kernel compiles on its first call only, and is cached on disk.
"""
from __future__ import annotations

import numpy as np
from numba import njit

FASTMATH = {"reassoc", "nsz", "contract", "arcp", "afn"}
SERIAL = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL = dict(SERIAL, parallel=True)
#: a helper that Numba types into each function calling it instead of compiling it on
#: its own (a compiled function costs 0.1-0.5 s of a cold start however small; see
#: _numba_loops for where inlining made the vectorised loops slower)
INLINE = dict(SERIAL, inline="always")
#: the start of every sum: a float32 zero, so sums of float32 stay float32 and sums of
#: float64 become float64 (``x[0] * 0`` or ``0.0`` would make every sum float64: half
#: the SIMD lanes plus a conversion per element)
ZERO = np.float32(0)


def vector_registers() -> int:
    """The vector registers of the CPU Numba compiles for: 32 with AVX-512 (zmm0-31), else
    16 (x86's ymm/xmm0-15 with AVX2 or SSE).  The features are Numba's own
    (``NUMBA_CPU_FEATURES`` when set, else the host's), so a kernel's register tile
    matches the code LLVM generates for it; Numba's cache keys on the same features."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return 32 if "+avx512f" in features.split(",") else 16


#: the vector registers the kernels' register tiles are sized for (_numba_loops.gemm_nt)
VREGS = vector_registers()
#: the fewest iterations LLVM's vector loop takes on AVX2 (8 lanes, unrolled twice; float64
#: too): loops over short rows run this many wide, junk past the row (numba_pool's max
#: rows, _numba_loops' fused 2x2 pool)
VECTOR_LOOP_MIN = 16


@njit(**SERIAL)
def takes(v, best):
    """Whether a max-pool scan replaces its max by v: larger, or the window's first NaN
    (FL_TAKES in csrc/fl_common.h: NaN propagates, as np.max)."""
    return best == best and not v <= best


@njit(**INLINE)
def take_tap(best, top, v, code):
    """(best, top) after tap v with offset code: v if it is larger or the window's first
    NaN (takes), as selects (inlined: LLVM sees one expression per tap).  The codes are
    of v's own float type in the vectorised row loops (numba_pool.tap_codes)."""
    gt = best == best and not v <= best
    return (v, code) if gt else (best, top)
