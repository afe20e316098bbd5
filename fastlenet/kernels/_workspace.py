"""Workspaces for the compiled kernels, aligned to a cache line.

NumPy aligns large arrays to 16 bytes only; a 64-byte (AVX-512) vector load
from such memory straddles two cache lines and costs two loads.  Workspaces
whose rows are whole vectors are therefore allocated at a 64-byte boundary.
"""
from __future__ import annotations

import numpy as np

ALIGN = 64


def _aligned(shape, dtype, fill_zero: bool) -> np.ndarray:
    dtype = np.dtype(dtype)
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
