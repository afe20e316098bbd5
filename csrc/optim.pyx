# Cython (AOT) optimizer update over flat buffers: one pass over every parameter
# of a model instead of a dozen NumPy passes (each a trip through memory).
#
# Dimension legend: P parameters (all tensors of a model, end to end in one
# flat buffer; fastlenet.models.Sequential keeps them that way), CH elements
# per parallel chunk.
#
# The arithmetic follows fastlenet/optim.py's NumPy formulas step for step, in
# the buffers' dtype; only the rounding of fused multiply-adds may differ.
# Directives are set once, in setup.py; everything here is unchecked
# (fastlenet/kernels/cython_backend.py wraps it, fastlenet/optim.py calls it).
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

cdef enum:
    CH = 8192    # elements per chunk: small models run on one thread, big ones split


def adam_update(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                double step_size, double b1, double b2, double root_bc2, double eps):
    """Adam on flat buffers, all (P,), in place:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= step_size * m / (sqrt(v) / root_bc2 + eps)."""
    cdef Py_ssize_t n = p.shape[0], chunks = (n + CH - 1) // CH, q, i, end
    cdef floating fb1 = <floating> b1, fc1 = <floating> (1 - b1)
    cdef floating fb2 = <floating> b2, fc2 = <floating> (1 - b2)
    cdef floating fstep = <floating> step_size, froot = <floating> root_bc2, feps = <floating> eps
    cdef floating gi, mi, vi, denom
    for q in prange(chunks, nogil=True, schedule="static"):
        end = min(n, (q + 1) * CH)
        for i in range(q * CH, end):
            gi = g[i]
            mi = fb1 * m[i] + fc1 * gi
            vi = fb2 * v[i] + fc2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            if floating is float:
                denom = sqrtf(vi) / froot + feps
            else:
                denom = sqrt(vi) / froot + feps
            p[i] = p[i] - mi / denom * fstep
