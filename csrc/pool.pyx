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
from libc.string cimport memset

import numpy as np

from fastlenet.kernels._workspace import aligned_empty, aligned_empty_pair

from fl_kernels cimport (fl_avgpool_plane_f32, fl_avgpool_plane_f64, fl_avgpool_plane_grad_f32,
                        fl_avgpool_plane_grad_f64, fl_maxpool_plane_f32, fl_maxpool_plane_f64)


cdef inline object _result(object out, tuple shape, dtype):
    """The caller's ``out`` (checked by the caller) or a new 64-byte aligned array."""
    return aligned_empty(shape, dtype) if out is None else out


cdef inline void _max_plane(const floating* xp, floating* yp, int* ap, Py_ssize_t W, Py_ssize_t oh,
                            Py_ssize_t ow, Py_ssize_t size, Py_ssize_t stride) noexcept nogil:
    """One (n, c) plane: xp (H*W) -> yp, ap (OH*OW): each window's first max (or first NaN);
    vectorised across each output row (csrc/plane_pool.h)."""
    if floating is float:
        fl_maxpool_plane_f32(xp, W, oh, ow, size, stride, yp, ap)
    else:
        fl_maxpool_plane_f64(xp, W, oh, ow, size, stride, yp, ap)


cdef inline void _max_plane_grad(const floating* gp, const int* ap, floating* dxp, Py_ssize_t plane,
                                 Py_ssize_t outs) noexcept nogil:
    """One plane: dxp (H*W) = 0, then dxp[ap[o]] += gp[o] (overlapping windows accumulate)."""
    cdef Py_ssize_t o
    memset(dxp, 0, plane * sizeof(floating))
    for o in range(outs):
        dxp[ap[o]] += gp[o]


def maxpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t size, Py_ssize_t stride,
                      Py_ssize_t oh, Py_ssize_t ow, out=None, arg_out=None):
    """x (N, C, H, W) -> y (N, C, OH, OW), arg (N, C, OH, OW) int32 = flat h*W + w of the first max
    (the first NaN where a window holds one: NaN propagates).  Parallel over planes."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], q
    dtype = np.float32 if floating is float else np.float64
    if out is None and arg_out is None:
        y_out, arg_out = aligned_empty_pair((N, C, oh, ow), dtype, np.int32)
    else:
        y_out = _result(out, (N, C, oh, ow), dtype)
        arg_out = _result(arg_out, (N, C, oh, ow), np.int32)
    cdef floating[:, :, :, ::1] y = y_out
    cdef int[:, :, :, ::1] arg = arg_out
    cdef const floating* xs = &x[0, 0, 0, 0]
    cdef floating* ys = &y[0, 0, 0, 0]
    cdef int* args = &arg[0, 0, 0, 0]
    for q in prange(N * C, nogil=True, schedule="static"):
        _max_plane(xs + q * H * W, ys + q * oh * ow, args + q * oh * ow, W, oh, ow, size, stride)
    return y_out, arg_out


def maxpool2d_backward(const floating[:, :, :, ::1] dy, const int[:, :, :, ::1] arg,
                       tuple x_shape, Py_ssize_t size, Py_ssize_t stride, out=None):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): dx[n, c].flat[arg] += dy; each plane zeroed by
    the thread that fills it."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t H = x_shape[2], W = x_shape[3], q
    dtype = np.float32 if floating is float else np.float64
    dx_out = _result(out, (N, C, H, W), dtype)
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef const floating* gs = &dy[0, 0, 0, 0]
    cdef const int* args = &arg[0, 0, 0, 0]
    cdef floating* dxs = &dx[0, 0, 0, 0]
    for q in prange(N * C, nogil=True, schedule="static"):
        _max_plane_grad(gs + q * oh * ow, args + q * oh * ow, dxs + q * H * W, H * W, oh * ow)
    return dx_out


cdef inline void _avg_plane(const floating* xp, floating* yp, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
                            Py_ssize_t size, Py_ssize_t stride, floating scale) noexcept nogil:
    """One plane: yp[oy, ox] = the mean of its size x size window of xp (csrc/plane_pool.h)."""
    if floating is float:
        fl_avgpool_plane_f32(xp, W, oh, ow, size, stride, scale, yp)
    else:
        fl_avgpool_plane_f64(xp, W, oh, ow, size, stride, scale, yp)


cdef inline void _avg_plane_grad(const floating* gp, floating* dxp, Py_ssize_t W, Py_ssize_t plane,
                                 Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t size, Py_ssize_t stride,
                                 floating scale) noexcept nogil:
    """One plane: dxp = 0, then every tap of window (oy, ox) += gp[oy, ox] / size^2."""
    memset(dxp, 0, plane * sizeof(floating))
    if floating is float:
        fl_avgpool_plane_grad_f32(gp, W, oh, ow, size, stride, scale, dxp)
    else:
        fl_avgpool_plane_grad_f64(gp, W, oh, ow, size, stride, scale, dxp)


def avgpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t size, Py_ssize_t stride,
                      Py_ssize_t oh, Py_ssize_t ow, out=None):
    """x (N, C, H, W) -> y (N, C, OH, OW), the mean of each size*size window."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], q
    cdef floating scale = 1.0 / (size * size)
    dtype = np.float32 if floating is float else np.float64
    y_out = _result(out, (N, C, oh, ow), dtype)
    cdef floating[:, :, :, ::1] y = y_out
    cdef const floating* xs = &x[0, 0, 0, 0]
    cdef floating* ys = &y[0, 0, 0, 0]
    for q in prange(N * C, nogil=True, schedule="static"):
        _avg_plane(xs + q * H * W, ys + q * oh * ow, W, oh, ow, size, stride, scale)
    return y_out


def avgpool2d_backward(const floating[:, :, :, ::1] dy, tuple x_shape, Py_ssize_t size,
                       Py_ssize_t stride, out=None):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): every window tap receives dy / size^2."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t H = x_shape[2], W = x_shape[3], q
    cdef floating scale = 1.0 / (size * size)
    dtype = np.float32 if floating is float else np.float64
    dx_out = _result(out, (N, C, H, W), dtype)
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef const floating* gs = &dy[0, 0, 0, 0]
    cdef floating* dxs = &dx[0, 0, 0, 0]
    for q in prange(N * C, nogil=True, schedule="static"):
        _avg_plane_grad(gs + q * oh * ow, dxs + q * H * W, W, H * W, oh, ow, size, stride, scale)
    return dx_out
