"""Workspaces for the compiled kernels: aligned to a cache line, kept between calls.

NumPy aligns large arrays to 16 bytes only; a 64-byte (AVX-512) vector load
from such memory straddles two cache lines and costs two loads, so workspaces
whose rows are whole vectors start on a 64-byte boundary.

A training step calls each kernel with the same shapes every time, so the
workspaces of a call (padded planes, transposed gradients, padded weights) are
kept, per thread and per geometry, and reused: a dozen allocations and zero
fills per call become one dictionary lookup.  Kernels only ever write the parts
of a workspace that they read back in the same call (padding stays zero), and
re-zero the accumulators they keep in one, so reuse never changes a result.
Each Python thread has its own workspaces, so concurrent calls do not share
them.  ``FASTLENET_EXACT_WORKSPACES=1`` allocates them at their exact sizes,
without the alignment slack, so that AddressSanitizer sees any overrun
(``tests/asan.sh``).

Outputs are never kept here: they belong to the caller.  Every kernel takes an
optional ``out=`` array, and a layer that calls the same kernel every step owns
its output buffers (``fastlenet.buffers.OutputBuffers``), which saves the page
faults of a fresh array's first touch (~190 per LeNet-5 step).  Nothing is
reused by guessing who still holds it.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

ALIGN = 64
#: arrays of at most this many bytes are plain NumPy ones (a vector or two: alignment
#: saves nothing there, and carving an aligned one costs a small call's time)
SMALL = 256
MAX_GEOMETRIES = 32          # per thread; all are dropped when exceeded
EXACT = os.environ.get("FASTLENET_EXACT_WORKSPACES") == "1"

_local = threading.local()


def _aligned_arrays(shape, dtypes, fill_zero: bool) -> list:
    """One array of ``shape`` per dtype, each starting on an ALIGN-byte boundary, carved from
    one allocation (exact workspaces: one plain array each)."""
    dtypes = [np.dtype(d) for d in dtypes]
    make = np.zeros if fill_zero else np.empty
    if EXACT:
        return [make(shape, dtype=d) for d in dtypes]
    count = math.prod(shape)                       # np.prod costs 3 us a call here
    starts, end = [], 0
    for d in dtypes:                    # each array's offset, rounded up to ALIGN
        starts.append(end + (-end) % ALIGN)
        end = starts[-1] + count * d.itemsize
    raw = make(end + ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return [raw[offset + s0:offset + s0 + count * d.itemsize].view(d).reshape(shape)
            for s0, d in zip(starts, dtypes)]


def _aligned(shape, dtype, fill_zero: bool) -> np.ndarray:
    if math.prod(shape) * np.dtype(dtype).itemsize <= SMALL:     # a bias's gradient: not worth
        return (np.zeros if fill_zero else np.empty)(shape, dtype=dtype)   # 2 us of carving
    return _aligned_arrays(shape, [dtype], fill_zero)[0]


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype) starting on a 64-byte boundary."""
    return _aligned(shape, dtype, False)


def aligned_empty_pair(shape, dtype_a, dtype_b):
    """Two np.empty(shape) arrays of dtypes dtype_a and dtype_b, each on a 64-byte boundary,
    carved from one allocation (the max pool's values and argmax).  Two outputs of 4 MB
    freed together pushed glibc's heap past its trim threshold (it grows with the largest
    freed block), so every call faulted its 8 MB of pages back in (measured: a 0.45 ms
    pool took 2.3-8 ms); one block of their combined size is reused."""
    a, b = _aligned_arrays(shape, [dtype_a, dtype_b], False)
    return a, b


def aligned_zeros(shape, dtype) -> np.ndarray:
    """np.zeros(shape, dtype) starting on a 64-byte boundary."""
    return _aligned(shape, dtype, True)


def lookup(key):
    """The workspaces stored under ``key`` on this thread, or None."""
    cache = getattr(_local, "cache", None)
    return None if cache is None else cache.get(key)


def store(key, workspaces):
    """Keep ``workspaces`` under ``key`` on this thread; returns them."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    if len(cache) >= MAX_GEOMETRIES:
        cache.clear()
    cache[key] = workspaces
    return workspaces


def clear() -> None:
    """Drop this thread's workspaces (the next call rebuilds them)."""
    _local.cache = {}
