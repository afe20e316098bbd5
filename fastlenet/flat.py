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


class FlatArrays(dict):
    """name -> array, every array a view of one flat buffer (P,), end to end in key order.

    ``buffer`` is that buffer and ``names`` the key order, so an optimizer updates the
    whole set in one pass (``optim.Adam``) because the container says so, not because
    it inspected where the arrays live.  The mapping is fixed once made: items can be
    read and written in place, never added, removed or replaced.
    """

    def __init__(self, buffer: np.ndarray, views: Arrays) -> None:
        super().__init__(views)
        self.buffer = buffer
        self.names = tuple(views)

    def _fixed(self, *args, **kwargs):
        raise TypeError("a FlatArrays mapping is fixed: write into its arrays instead (a[...] = value)")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _fixed


def flat_views(shapes: Dict[str, tuple], dtype) -> Tuple[np.ndarray, FlatArrays]:
    """A new zeroed flat buffer (P,) and name -> a view of it with that shape, the
    views end to end in ``shapes`` order (a :class:`FlatArrays`)."""
    flat = np.zeros(sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()), dtype=dtype)
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return flat, FlatArrays(flat, views)


def flat_buffer(arrays) -> Optional[np.ndarray]:
    """The flat buffer behind ``arrays`` when it is a :class:`FlatArrays`, else None."""
    return arrays.buffer if isinstance(arrays, FlatArrays) else None
