# Cython (AOT) batch normalisation fused with ReLU and a max pool, forward and backward.
#
# Dimension legend: N batch, C channels, H/W plane height/width (the normalised
# input, e.g. a conv output), HW = H*W, PH/PW pooled height/width, P = N*C planes,
# S window size, s stride.
#
#   forward   y = maxpool(relu(gamma * (x - mean) * inv_std + beta)), arg = the window's
#             max position in its plane (h*W + w), -1 where that max is not > 0 (ReLU: no
#             gradient flows; y is then 0, or NaN for a NaN, which propagates)
#   backward  the pooled gradient routed to its max (dz, zero elsewhere), then batch
#             norm's  dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)),
#             dgamma = sum(dz * x_hat), dbeta = sum(dz)  over (N, H, W)
#
# Statistics and gradient sums are per plane in double, in parallel over planes, then
# added per channel in plane order: the result does not depend on the thread count.
# Directives are set once, in setup.py.  Unchecked: the layer (fastlenet.layers.
# BatchNormReLUMaxPool) passes arrays of its own; fastlenet/kernels/_fast.py states
# the contract and tests/test_fast_paths.py holds these against the reference layers.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

from fastlenet.kernels._workspace import aligned_empty

cimport openmp

from fl_kernels cimport (FL_NP, fl_bn_relu_maxpool2_planes_f32, fl_bn_relu_maxpool2_planes_f64,
                        fl_relu_maxpool2_f32, fl_relu_maxpool2_f64, fl_takes)


cdef inline object _result(object out, tuple shape, dtype):
    """The caller's ``out`` (checked by the caller) or a new 64-byte aligned array."""
    return aligned_empty(shape, dtype) if out is None else out


cdef inline void _plane_sums(const floating* xp, Py_ssize_t hw, double* sums) noexcept nogil:
    """sums[0] = sum of the plane xp (HW), sums[1] = sum of its squares, in double."""
    cdef Py_ssize_t i
    cdef double s = 0, ss = 0, v
    for i in range(hw):
        v = xp[i]
        s = s + v
        ss = ss + v * v
    sums[0] = s
    sums[1] = ss


cdef void _per_channel(const double[:, ::1] part, Py_ssize_t N, Py_ssize_t C, double[:, ::1] out) noexcept nogil:
    """out (C, 2): the per-plane pairs part (N*C, 2) added per channel, in plane order."""
    cdef Py_ssize_t n, c
    cdef double s0, s1
    for c in range(C):
        s0 = 0
        s1 = 0
        for n in range(N):
            s0 = s0 + part[n * C + c, 0]
            s1 = s1 + part[n * C + c, 1]
        out[c, 0] = s0
        out[c, 1] = s1


def batchnorm_stats(const floating[:, :, :, ::1] x):
    """x (N, C, H, W) -> (mean (C,), var (C,)) over (N, H, W), float64, the variance biased."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], hw = x.shape[2] * x.shape[3], q, c
    part_arr, sums_arr = np.empty((N * C, 2), dtype=np.float64), np.empty((C, 2), dtype=np.float64)
    mean_arr, var_arr = np.empty(C, dtype=np.float64), np.empty(C, dtype=np.float64)
    cdef double[:, ::1] part = part_arr, sums = sums_arr
    cdef double[::1] mean = mean_arr, var = var_arr
    cdef const floating* xs = &x[0, 0, 0, 0]
    cdef double count = N * hw
    for q in prange(N * C, nogil=True, schedule="static"):
        _plane_sums(xs + q * hw, hw, &part[q, 0])
    _per_channel(part, N, C, sums)
    for c in range(C):
        mean[c] = sums[c, 0] / count
        var[c] = max(sums[c, 1] / count - mean[c] * mean[c], 0.0)
    return mean_arr, var_arr


cdef inline void _normalise_plane(const floating* xp, Py_ssize_t hw, floating m, floating a, floating b,
                                  floating* zp) noexcept nogil:
    """zp (HW) = (xp - m) * a + b: one plane normalised (vectorised)."""
    cdef Py_ssize_t i
    for i in range(hw):
        zp[i] = (xp[i] - m) * a + b


cdef inline void _relu_max_plane(const floating* zp, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                 Py_ssize_t size, Py_ssize_t stride, floating* yp, int* ap) noexcept nogil:
    """One normalised plane zp (H*W) -> yp, ap (PH*PW): maxpool(relu(z)), the window's first max
    (or first NaN), arg -1 where that max is not > 0 (NaN included: no gradient flows)."""
    cdef Py_ssize_t oy, ox, i, j, k, bi
    cdef floating best, v
    cdef bint takes
    if size == 2 and stride == 2:               # the common pool: selects, no window loops
        if floating is float:
            fl_relu_maxpool2_f32(zp, W, yp, ap, ph, pw)
        else:
            fl_relu_maxpool2_f64(zp, W, yp, ap, ph, pw)
        return
    for oy in range(ph):
        for ox in range(pw):
            bi = oy * stride * W + ox * stride
            best = zp[bi]
            for i in range(size):
                for j in range(size):
                    k = (oy * stride + i) * W + ox * stride + j
                    v = zp[k]
                    takes = fl_takes(v, best)
                    bi = k if takes else bi
                    best = v if takes else best
            yp[oy * pw + ox] = 0 if best <= 0 else best        # NaN stays NaN
            ap[oy * pw + ox] = <int> bi if best > 0 else -1


def batchnorm_relu_maxpool_forward(const floating[:, :, :, ::1] x, const floating[::1] gamma,
                                   const floating[::1] beta, const double[::1] mean,
                                   const double[::1] inv_std, Py_ssize_t size, Py_ssize_t stride,
                                   out=None, arg_out=None):
    """x (N, C, H, W), per-channel gamma, beta, mean, inv_std (C,) -> (y (N, C, PH, PW),
    arg (N, C, PH, PW) int32).  Parallel over planes: a 2x2/2 pool takes them FL_NP at a
    time along the vector lanes (_planes_2x2), the rest (and any other pool) one by one,
    each normalised into its thread's workspace, then pooled."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], q, c, tid
    cdef Py_ssize_t ph = (H - size) // stride + 1, pw = (W - size) // stride + 1
    dtype = np.float32 if floating is float else np.float64
    y_out = _result(out, (N, C, ph, pw), dtype)
    arg_out = _result(arg_out, (N, C, ph, pw), np.int32)
    cdef floating[:, :, :, ::1] y = y_out
    cdef int[:, :, :, ::1] arg = arg_out
    cdef Py_ssize_t done = 0
    if size == 2 and stride == 2:
        done = _planes_2x2(x, gamma, beta, mean, inv_std, y, arg)
    z_ws = aligned_empty((openmp.omp_get_max_threads(), H * W), dtype)
    cdef floating[:, ::1] z = z_ws
    cdef const floating* xs = &x[0, 0, 0, 0]
    cdef floating* ys = &y[0, 0, 0, 0]
    cdef int* args = &arg[0, 0, 0, 0]
    cdef double a
    for q in prange(done, N * C, nogil=True, schedule="static"):
        tid = openmp.omp_get_thread_num()
        c = q % C
        a = gamma[c] * inv_std[c]
        _normalise_plane(xs + q * H * W, H * W, <floating> mean[c], <floating> a, beta[c], &z[tid, 0])
        _relu_max_plane(&z[tid, 0], W, ph, pw, size, stride, ys + q * ph * pw, args + q * ph * pw)
    return y_out, arg_out


cdef Py_ssize_t _planes_2x2(const floating[:, :, :, ::1] x, const floating[::1] gamma,
                           const floating[::1] beta, const double[::1] mean, const double[::1] inv_std,
                           floating[:, :, :, ::1] y, int[:, :, :, ::1] arg):
    """The 2x2/2 batch norm + ReLU + pool of the first FL_NP * floor(N*C / FL_NP) planes, FL_NP
    at a time along the vector lanes (csrc/norm_pool.h: LeNet's 14- and 5-wide pooled rows
    leave a plane-by-plane pool in its scalar remainder); returns how many planes it did.
    Each lane's mean, scale and shift are the plane-by-plane path's, rounded the same way."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t ph = y.shape[2], pw = y.shape[3], groups = N * C // FL_NP, g, p, q, c, tid
    if groups == 0:
        return 0
    dtype = np.float32 if floating is float else np.float64
    zt_ws = aligned_empty((openmp.omp_get_max_threads(), H * W * FL_NP), dtype)
    mab_ws = aligned_empty((openmp.omp_get_max_threads(), 3, FL_NP), dtype)
    cdef floating[:, ::1] zt = zt_ws
    cdef floating[:, :, ::1] mab = mab_ws
    cdef double a
    for g in prange(groups, nogil=True, schedule="static"):
        tid = openmp.omp_get_thread_num()
        for p in range(FL_NP):
            q = g * FL_NP + p
            c = q % C
            a = gamma[c] * inv_std[c]
            mab[tid, 0, p] = <floating> mean[c]
            mab[tid, 1, p] = <floating> a
            mab[tid, 2, p] = beta[c]
        q = g * FL_NP
        if floating is float:
            fl_bn_relu_maxpool2_planes_f32(&x[0, 0, 0, 0] + q * H * W, H, W, &mab[tid, 0, 0], &mab[tid, 1, 0],
                                           &mab[tid, 2, 0], &zt[tid, 0], &y[0, 0, 0, 0] + q * ph * pw,
                                           &arg[0, 0, 0, 0] + q * ph * pw, ph, pw)
        else:
            fl_bn_relu_maxpool2_planes_f64(&x[0, 0, 0, 0] + q * H * W, H, W, &mab[tid, 0, 0], &mab[tid, 1, 0],
                                           &mab[tid, 2, 0], &zt[tid, 0], &y[0, 0, 0, 0] + q * ph * pw,
                                           &arg[0, 0, 0, 0] + q * ph * pw, ph, pw)
    return groups * FL_NP


cdef inline void _routed_sums(const floating* gp, const int* ap, Py_ssize_t outs, const floating* xp,
                              double mean, double inv_std, double* sums) noexcept nogil:
    """sums[0] = sum of the routed gradient of one plane, sums[1] = its sum times x_hat."""
    cdef Py_ssize_t o
    cdef double s = 0, sx = 0, g
    for o in range(outs):
        if ap[o] >= 0:
            g = gp[o]
            s = s + g
            sx = sx + g * ((xp[ap[o]] - mean) * inv_std)
    sums[0] = s
    sums[1] = sx


cdef inline void _plane_dx(const floating* gp, const int* ap, Py_ssize_t outs, const floating* xp,
                           Py_ssize_t hw, floating m, floating k1, floating k0, floating kx,
                           floating* dxp) noexcept nogil:
    """One plane of dx = k1 * dz - (k0 + kx * (x - m)): the dense part for every position,
    then the routed gradient added at each window's max (overlapping windows add up)."""
    cdef Py_ssize_t i, o
    for i in range(hw):
        dxp[i] = -(k0 + kx * (xp[i] - m))
    for o in range(outs):
        if ap[o] >= 0:
            dxp[ap[o]] += k1 * gp[o]


def batchnorm_relu_maxpool_backward(const floating[:, :, :, ::1] dpy, const int[:, :, :, ::1] arg,
                                    const floating[:, :, :, ::1] x, const floating[::1] gamma,
                                    const double[::1] mean, const double[::1] inv_std,
                                    floating[::1] dgamma, floating[::1] dbeta, out=None):
    """dpy (N, C, PH, PW) and the forward's arg, x (N, C, H, W) -> dx (N, C, H, W);
    dgamma, dbeta (C,) written.  Two passes in parallel over planes."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], q, c
    cdef Py_ssize_t outs = dpy.shape[2] * dpy.shape[3], hw = H * W
    dtype = np.float32 if floating is float else np.float64
    dx_out = _result(out, (N, C, H, W), dtype)
    part_arr, sums_arr = np.empty((N * C, 2), dtype=np.float64), np.empty((C, 2), dtype=np.float64)
    k_arr = np.empty((C, 3), dtype=np.float64)
    cdef double[:, ::1] part = part_arr, sums = sums_arr, k = k_arr
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef const floating* gs = &dpy[0, 0, 0, 0]
    cdef const int* args = &arg[0, 0, 0, 0]
    cdef const floating* xs = &x[0, 0, 0, 0]
    cdef floating* dxs = &dx[0, 0, 0, 0]
    cdef double s, sx, count = N * hw, scale
    for q in prange(N * C, nogil=True, schedule="static"):
        c = q % C
        _routed_sums(gs + q * outs, args + q * outs, outs, xs + q * hw, mean[c], inv_std[c], &part[q, 0])
    _per_channel(part, N, C, sums)
    for c in range(C):
        s, sx = sums[c, 0], sums[c, 1]
        dbeta[c] = <floating> s
        dgamma[c] = <floating> sx
        # dx = scale * (dz - s/count - x_hat * sx/count), x_hat = (x - mean) * inv_std
        scale = gamma[c] * inv_std[c]
        k[c, 0] = scale
        k[c, 1] = scale * s / count
        k[c, 2] = scale * inv_std[c] * sx / count
    for q in prange(N * C, nogil=True, schedule="static"):
        c = q % C
        _plane_dx(gs + q * outs, args + q * outs, outs, xs + q * hw, hw, <floating> mean[c],
                  <floating> k[c, 0], <floating> k[c, 1], <floating> k[c, 2], dxs + q * hw)
    return dx_out
