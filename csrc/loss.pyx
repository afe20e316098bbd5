# Cython (AOT) softmax cross-entropy: the loss and its gradient in one pass over
# the logits, instead of a dozen NumPy passes (each a Python round trip).
#
# Dimension legend: N batch, K classes.
#
# The same formulas as fastlenet/losses.py (the reference), in float64 whatever
# the logits' dtype: the log-sum-exp shift keeps every exp finite.  Directives
# are set once, in setup.py; fastlenet/losses.py validates and wraps it.
from cython cimport floating
from libc.math cimport exp, log

import numpy as np

from fastlenet.kernels._workspace import aligned_empty


def softmax_cross_entropy(const floating[:, ::1] logits, const long long[::1] labels,
                          double label_smoothing, out=None):
    """logits (N, K), labels (N,) -> (mean loss, d loss / d logits (N, K)), the target
    (1 - e) one-hot + e / K for smoothing e.  Returns (None, None) if a label lies
    outside 0..K-1 (the caller raises).  The gradient goes into ``out`` when given."""
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], i, j
    cdef long long label
    cdef bint bad = False
    cdef double top, total, logsum, loss = 0, inv_n = 1.0 / n if n else 0.0
    cdef double off = label_smoothing / k, on = 1.0 - label_smoothing + off, target, z, shifted
    dtype = np.float32 if floating is float else np.float64
    grad_arr = aligned_empty((n, k), dtype) if out is None else out
    e_arr = np.empty(k, dtype=np.float64)           # one row's exp(z - max)
    cdef floating[:, ::1] grad = grad_arr
    cdef double[::1] e = e_arr
    with nogil:
        for i in range(n):
            label = labels[i]
            if label < 0 or label >= k:
                bad = True
                break
            top = logits[i, 0]
            for j in range(1, k):
                if logits[i, j] > top:
                    top = logits[i, j]
            total = 0
            shifted = 0
            for j in range(k):
                z = logits[i, j] - top
                shifted = shifted + z
                e[j] = exp(z)
                total = total + e[j]
            logsum = log(total)
            # loss_i = -sum_j target_j (z_j - logsum) = -(off sum_j z_j + (on - off) z_label) + logsum
            loss = loss - off * shifted - (on - off) * (logits[i, label] - top) + logsum
            for j in range(k):
                target = on if j == label else off
                grad[i, j] = <floating> ((e[j] / total - target) * inv_n)
    if bad:
        return None, None
    return loss * inv_n, grad_arr
