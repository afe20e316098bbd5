"""Output buffers a layer owns: the arrays its kernels write a step's results into.

A training step calls every kernel with the same shapes, and a fresh result array
costs a page fault per 4 KiB on its first touch (NumPy hands big arrays back to the
OS when they are freed): about 190 faults, a tenth of a LeNet-5 step.  So each layer
keeps its outputs (activations, input gradients) and passes them to the kernels as
``out=``.  Ownership is explicit: a buffer belongs to the layer that made it and is
rewritten only by that layer's next forward (or backward), when the array it held is
no longer anyone's: the next layer has replaced its cached input by then, and the
model's own result - the logits - is never a kept buffer (``Sequential`` allocates it
fresh), so no array a caller holds is ever overwritten.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .kernels._workspace import aligned_empty

#: shapes kept per buffer name (training batch, its short last batch, evaluation batch, ...);
#: the oldest is dropped beyond that
MAX_SHAPES = 4


class OutputBuffers:
    """name -> one 64-byte aligned array per (shape, dtype), made on first use."""

    def __init__(self) -> None:
        self._arrays: Dict[Tuple[str, tuple, str], np.ndarray] = {}

    def get(self, name: str, shape, dtype) -> np.ndarray:
        """The buffer ``name`` of this shape and dtype (uninitialised the first time)."""
        key = (name, tuple(int(v) for v in shape), np.dtype(dtype).str)
        a = self._arrays.get(key)
        if a is None:
            same_name = [k for k in self._arrays if k[0] == name]
            if len(same_name) >= MAX_SHAPES:
                del self._arrays[same_name[0]]
            a = self._arrays[key] = aligned_empty(key[1], dtype)
        return a

    def clear(self) -> None:
        self._arrays.clear()
