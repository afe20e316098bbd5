"""Softmax cross-entropy, fused and numerically stable.

Dimension legend: N batch, K classes.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """logits (N, K) -> log p (N, K), via the log-sum-exp shift (finite for any finite logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """logits (N, K) -> probabilities (N, K)."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          label_smoothing: float = 0.0, kernel=None, out=None) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer ``labels`` (N,).

    With smoothing e the target is (1 - e) one-hot + e / K.  Returns the loss
    (a Python float) and its gradient w.r.t. the logits, (softmax - target) / N,
    in the logits' dtype.  ``kernel``: a compiled one-pass version of these formulas
    (``Backend.fast.softmax_cross_entropy``) to run instead of the NumPy below, writing
    the gradient into ``out`` (an (N, K) array of the logits' dtype) when given.
    """
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if (kernel is not None and n and labels.dtype.kind in "iu" and logits.flags.c_contiguous
            and logits.dtype in (np.float32, np.float64)):
        loss, grad = kernel(logits, np.ascontiguousarray(labels, dtype=np.int64), float(label_smoothing),
                            out=out)
        if loss is not None:
            return float(loss), grad
        # a label out of range: the check below names them
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, found {labels.min()}..{labels.max()}")
    logp = log_softmax(logits.astype(np.float64, copy=False))
    target = np.full((n, k), label_smoothing / k)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    loss = float(-(target * logp).sum() / n)
    grad = (np.exp(logp) - target) / n
    return loss, grad.astype(logits.dtype, copy=False)
