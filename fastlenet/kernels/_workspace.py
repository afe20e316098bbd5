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

Outputs cannot be kept like that - the caller owns them - but allocating them
new costs a page fault per 4 KiB on first touch (NumPy returns big arrays to the
OS when they are freed): ~190 faults, about a tenth of a LeNet-5 step.
:func:`output` therefore hands out an earlier output again once nothing refers
to it any more (its reference counts say so) and a new array otherwise.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

ALIGN = 64
MAX_GEOMETRIES = 32          # per thread; all are dropped when exceeded
MAX_RECYCLED = 3             # outputs kept per shape and dtype (a step holds up to two at once)
EXACT = os.environ.get("FASTLENET_EXACT_WORKSPACES") == "1"

_local = threading.local()


def _aligned(shape, dtype, fill_zero: bool) -> np.ndarray:
    dtype = np.dtype(dtype)
    if EXACT:
        return (np.zeros if fill_zero else np.empty)(shape, dtype=dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (np.zeros if fill_zero else np.empty)(nbytes + ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype) starting on a 64-byte boundary."""
    return _aligned(shape, dtype, False)


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


def output(shape, dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` for a kernel's result: an earlier
    result that nothing refers to any more, else a new (64-byte aligned) one.

    "Nothing refers to it": neither the array nor the buffer it views is referenced
    from anywhere but this pool - no caller, layer, view, memoryview or base of
    another array.  An array still in use is never handed out twice.
    """
    pools = getattr(_local, "outputs", None)
    if pools is None:
        pools = _local.outputs = {}
    key = (tuple(shape), np.dtype(dtype).str)
    pool = pools.get(key)
    if pool is None:
        if len(pools) >= MAX_GEOMETRIES:
            pools.clear()
        pool = pools[key] = []
    for a in pool:
        if _unreferenced(a):
            return a
    a = aligned_empty(shape, dtype)
    if len(pool) < MAX_RECYCLED:
        pool.append(a)
    return a


def _unreferenced(a) -> bool:
    """True when only the pool refers to ``a`` and only ``a`` to its buffer."""
    # the pool's list, the caller's loop variable, the parameter, getrefcount's argument
    if sys.getrefcount(a) > 4:
        return False
    owner = a.base                 # the raw buffer of an aligned array (views of ``a`` point here)
    # ``a.base``, the local ``owner``, getrefcount's argument
    return owner is None or sys.getrefcount(owner) <= 3


def clear() -> None:
    """Drop this thread's workspaces and kept outputs (the next call rebuilds them)."""
    _local.cache = {}
    _local.outputs = {}
