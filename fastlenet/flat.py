"""Flat parameter buffers: many named tensors as views of one 1-D array.

A model keeps all its parameters (and, separately, all its gradients) end to end
in one buffer each, so an optimizer can update the whole model in one pass
(``optim.Adam`` with a compiled ``adam_update``) while layers, checkpoints and users
still see named arrays of their own shapes.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

Arrays = Dict[str, np.ndarray]


def flat_views(shapes: Dict[str, tuple], dtype) -> Tuple[np.ndarray, Arrays]:
    """A new zeroed flat buffer (P,) and name -> a view of it with that shape, the
    views end to end in ``shapes`` order (what :func:`flat_buffer` recognises)."""
    flat = np.zeros(sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()), dtype=dtype)
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return flat, views


def flat_buffer(arrays) -> Optional[np.ndarray]:
    """The 1-D array that ``arrays`` tile exactly, end to end in the given order (all
    C-contiguous views of it, like ``Sequential.flat_params``), or None."""
    arrays = list(arrays)
    base = arrays[0].base if arrays else None
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start, offset = base.ctypes.data, 0
    for a in arrays:
        if (a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous
                or a.ctypes.data != start + offset * base.itemsize):
            return None
        offset += a.size
    return base if offset == base.size else None
