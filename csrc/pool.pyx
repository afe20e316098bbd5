# Cython (AOT) max and average pooling, forward and backward, parallel over planes.
#
# Dimension legend: N batch, C channels, H/W input height/width, OH/OW output
# height/width, P = N*C planes, S window size, s stride.
#
# Directives are set once, in setup.py.  Unchecked: fastlenet/kernels/cython_backend.py
# validates every argument (including that arg indices lie inside their plane).
# Each (n, c) plane is independent, so parallel loops over planes never race,
# even when windows overlap.
from cython cimport floating
from cython.parallel cimport prange

import numpy as np

from fastlenet.kernels._workspace import aligned_empty

from fl_kernels cimport fl_takes


cdef inline object _result(object out, tuple shape, dtype):
    """The caller's ``out`` (checked by the caller) or a new 64-byte aligned array."""
    return aligned_empty(shape, dtype) if out is None else out


def maxpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t size, Py_ssize_t stride,
                      Py_ssize_t oh, Py_ssize_t ow, out=None, arg_out=None):
    """x (N, C, H, W) -> y (N, C, OH, OW), arg (N, C, OH, OW) int32 = flat h*W + w of the first max
    (the first NaN where a window holds one: NaN propagates)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], W = x.shape[3]
    cdef Py_ssize_t q, n, c, oy, ox, i, j, y0, x0, bi
    cdef floating best, v
    cdef bint takes
    dtype = np.float32 if floating is float else np.float64
    y_out = _result(out, (N, C, oh, ow), dtype)
    arg_out = _result(arg_out, (N, C, oh, ow), np.int32)
    cdef floating[:, :, :, ::1] y = y_out
    cdef int[:, :, :, ::1] arg = arg_out
    for q in prange(N * C, nogil=True, schedule="static"):
        n = q // C
        c = q % C
        for oy in range(oh):
            for ox in range(ow):
                y0 = oy * stride
                x0 = ox * stride
                best = x[n, c, y0, x0]
                bi = y0 * W + x0
                for i in range(size):
                    for j in range(size):
                        v = x[n, c, y0 + i, x0 + j]
                        # larger, or the window's first NaN (NaN propagates, as np.max);
                        # branch-free select (cmov): data-dependent branches mispredict
                        takes = fl_takes(v, best)
                        bi = (y0 + i) * W + x0 + j if takes else bi
                        best = v if takes else best
                y[n, c, oy, ox] = best
                arg[n, c, oy, ox] = <int> bi
    return y_out, arg_out


def maxpool2d_backward(const floating[:, :, :, ::1] dy, const int[:, :, :, ::1] arg,
                       tuple x_shape, Py_ssize_t size, Py_ssize_t stride, out=None):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): dx[n, c].flat[arg] += dy."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t H = x_shape[2], W = x_shape[3]
    cdef Py_ssize_t q, n, c, oy, ox, a
    dtype = np.float32 if floating is float else np.float64
    dx_out = _result(out, (N, C, H, W), dtype)
    dx_out.fill(0)
    cdef floating[:, :, :, ::1] dx = dx_out
    for q in prange(N * C, nogil=True, schedule="static"):
        n = q // C
        c = q % C
        for oy in range(oh):
            for ox in range(ow):
                a = arg[n, c, oy, ox]
                dx[n, c, a // W, a % W] += dy[n, c, oy, ox]
    return dx_out


def avgpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t size, Py_ssize_t stride,
                      Py_ssize_t oh, Py_ssize_t ow, out=None):
    """x (N, C, H, W) -> y (N, C, OH, OW), the mean of each size*size window."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Py_ssize_t q, n, c, oy, ox, i, j
    cdef floating acc
    cdef floating scale = 1.0 / (size * size)
    dtype = np.float32 if floating is float else np.float64
    y_out = _result(out, (N, C, oh, ow), dtype)
    cdef floating[:, :, :, ::1] y = y_out
    for q in prange(N * C, nogil=True, schedule="static"):
        n = q // C
        c = q % C
        for oy in range(oh):
            for ox in range(ow):
                acc = 0
                for i in range(size):
                    for j in range(size):
                        acc = acc + x[n, c, oy * stride + i, ox * stride + j]
                y[n, c, oy, ox] = acc * scale
    return y_out


def avgpool2d_backward(const floating[:, :, :, ::1] dy, tuple x_shape, Py_ssize_t size,
                       Py_ssize_t stride, out=None):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): every window tap receives dy / size^2."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t q, n, c, oy, ox, i, j
    cdef floating v
    cdef floating scale = 1.0 / (size * size)
    dtype = np.float32 if floating is float else np.float64
    dx_out = _result(out, (N, C, x_shape[2], x_shape[3]), dtype)
    dx_out.fill(0)
    cdef floating[:, :, :, ::1] dx = dx_out
    for q in prange(N * C, nogil=True, schedule="static"):
        n = q // C
        c = q % C
        for oy in range(oh):
            for ox in range(ow):
                v = dy[n, c, oy, ox] * scale
                for i in range(size):
                    for j in range(size):
                        dx[n, c, oy * stride + i, ox * stride + j] += v
    return dx_out
