"""Numba (JIT) batch normalisation fused with ReLU and a max pool, forward and backward:
the Numba twin of csrc/norm.pyx, line for line.

Dimension legend: N batch, C channels, H/W plane height/width (the normalised input,
e.g. a conv output), HW = H*W, PH/PW pooled height/width, P = N*C planes, S window
size, s stride.

    forward   y = maxpool(relu(gamma * (x - mean) * inv_std + beta)), arg = the window's
              max position in its plane (h*W + w), -1 where that max is <= 0 (y is 0)
    backward  the pooled gradient routed to its max (dz), then batch norm's
              dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)),
              dgamma = sum(dz * x_hat), dbeta = sum(dz)  over (N, H, W)

Sums are per plane in float64, in parallel over planes, then added per channel in
plane order: the result does not depend on the thread count.  Unchecked (see
fastlenet/kernels/_fast.py); tests/test_fast_paths.py holds them against the
reference layers.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_options import PARALLEL, SERIAL, takes


@njit(**PARALLEL)
def _stats_kernel(x):
    n, c, h, w = x.shape
    planes = x.reshape(n * c, h * w)
    part = np.empty((n * c, 2))
    for q in prange(n * c):
        s = 0.0
        ss = 0.0
        for i in range(h * w):
            v = np.float64(planes[q, i])
            s += v
            ss += v * v
        part[q, 0], part[q, 1] = s, ss
    sums = _per_channel(part, n, c)
    count = n * h * w
    mean, var = np.empty(c), np.empty(c)
    for ch in range(c):
        mean[ch] = sums[ch, 0] / count
        var[ch] = max(sums[ch, 1] / count - mean[ch] * mean[ch], 0.0)
    return mean, var


@njit(**SERIAL)
def _per_channel(part, n, c):
    """(C, 2): the per-plane pairs part (N*C, 2) added per channel, in plane order."""
    sums = np.zeros((c, 2))
    for ch in range(c):
        for b in range(n):
            sums[ch, 0] += part[b * c + ch, 0]
            sums[ch, 1] += part[b * c + ch, 1]
    return sums


def batchnorm_stats(x):
    """x (N, C, H, W) -> (mean (C,), var (C,)) over (N, H, W), float64, the variance biased."""
    return _stats_kernel(x)


@njit(**SERIAL)
def _norm_relu_max_plane(xp, m, a, b, w, ph, pw, size, stride, yp, ap):
    """One plane xp (H*W) -> yp, ap (PH*PW): each window's first max (or first NaN) of
    (x - m) * a + b, ReLU'd: 0 and -1 where it is <= 0; NaN stays NaN, with -1."""
    if size == 2 and stride == 2:
        return _norm_relu_max2_plane(xp, m, a, b, w, ph, pw, yp, ap)
    for oy in range(ph):
        for ox in range(pw):
            bi = oy * stride * w + ox * stride
            best = (xp[bi] - m) * a + b
            for i in range(size):
                for j in range(size):
                    k = (oy * stride + i) * w + ox * stride + j
                    v = (xp[k] - m) * a + b
                    if takes(v, best):
                        bi, best = k, v
            yp[oy * pw + ox] = 0 if best <= 0 else best        # NaN stays NaN
            ap[oy * pw + ox] = bi if best > 0 else -1           # no gradient for NaN


@njit(**SERIAL)
def _norm_relu_max2_plane(xp, m, a, b, w, ph, pw, yp, ap):
    """The 2x2/2 pool of _norm_relu_max_plane without window loops (the same results)."""
    for oy in range(ph):
        top = 2 * oy * w
        for ox in range(pw):
            k = top + 2 * ox
            bi, best = k, (xp[k] - m) * a + b
            for k in (top + 2 * ox + 1, top + w + 2 * ox, top + w + 2 * ox + 1):
                v = (xp[k] - m) * a + b
                if takes(v, best):
                    bi, best = k, v
            yp[oy * pw + ox] = 0 if best <= 0 else best
            ap[oy * pw + ox] = bi if best > 0 else -1


@njit(**PARALLEL)
def _forward_kernel(x, gamma, beta, mean, inv_std, size, stride, y, arg):
    n, c, h, w = x.shape
    ph, pw = y.shape[2], y.shape[3]
    planes, ys, args = x.reshape(n * c, h * w), y.reshape(n * c, ph * pw), arg.reshape(n * c, ph * pw)
    dt = x.dtype.type
    for q in prange(n * c):
        ch = q % c
        a = gamma[ch] * inv_std[ch]
        _norm_relu_max_plane(planes[q], dt(mean[ch]), dt(a), beta[ch], w, ph, pw, size, stride,
                             ys[q], args[q])


def batchnorm_relu_maxpool_forward(x, gamma, beta, mean, inv_std, size, stride, out=None, arg_out=None):
    """x (N, C, H, W), per-channel gamma, beta (x's dtype), mean, inv_std (C,) float64 ->
    (y (N, C, PH, PW), arg (N, C, PH, PW) int32); into out / arg_out when given."""
    n, c, h, w = x.shape
    shape = (n, c, (h - size) // stride + 1, (w - size) // stride + 1)
    y = np.empty(shape, dtype=x.dtype) if out is None else out
    arg = np.empty(shape, dtype=np.int32) if arg_out is None else arg_out
    _forward_kernel(x, gamma, beta, mean, inv_std, size, stride, y, arg)
    return y, arg


@njit(**SERIAL)
def _routed_sums(gp, ap, xp, m, inv_std):
    """(sum of one plane's routed gradient, its sum times x_hat), in float64."""
    s = 0.0
    sx = 0.0
    for o in range(gp.size):
        if ap[o] >= 0:
            g = np.float64(gp[o])
            s += g
            sx += g * ((np.float64(xp[ap[o]]) - m) * inv_std)
    return s, sx


@njit(**SERIAL)
def _plane_dx(gp, ap, xp, m, k1, k0, kx, dxp):
    """One plane of dx = k1 * dz - (k0 + kx * (x - m)): the dense part everywhere, then the
    routed gradient added at each window's max (overlapping windows add up)."""
    for i in range(xp.size):
        dxp[i] = -(k0 + kx * (xp[i] - m))
    for o in range(gp.size):
        if ap[o] >= 0:
            dxp[ap[o]] += k1 * gp[o]


@njit(**PARALLEL)
def _backward_kernel(dpy, arg, x, gamma, mean, inv_std, dgamma, dbeta, dx):
    n, c, h, w = x.shape
    outs = dpy.shape[2] * dpy.shape[3]
    gs, args = dpy.reshape(n * c, outs), arg.reshape(n * c, outs)
    planes, dxs = x.reshape(n * c, h * w), dx.reshape(n * c, h * w)
    part = np.empty((n * c, 2))
    for q in prange(n * c):
        ch = q % c
        part[q, 0], part[q, 1] = _routed_sums(gs[q], args[q], planes[q], mean[ch], inv_std[ch])
    k = _gradient_constants(part, n, c, n * h * w, gamma, inv_std, dgamma, dbeta)
    dt = x.dtype.type
    for q in prange(n * c):
        ch = q % c
        _plane_dx(gs[q], args[q], planes[q], dt(mean[ch]), dt(k[ch, 0]), dt(k[ch, 1]), dt(k[ch, 2]), dxs[q])


@njit(**SERIAL)
def _gradient_constants(part, n, c, count, gamma, inv_std, dgamma, dbeta):
    """dbeta, dgamma written from the per-plane sums (plane order); -> k (C, 3) with
    dx = k0 * dz - (k1 + k2 * (x - mean)) per channel."""
    k = np.empty((c, 3))
    sums = _per_channel(part, n, c)
    for ch in range(c):
        s, sx = sums[ch, 0], sums[ch, 1]
        dbeta[ch], dgamma[ch] = s, sx
        scale = gamma[ch] * inv_std[ch]
        k[ch, 0], k[ch, 1], k[ch, 2] = scale, scale * s / count, scale * inv_std[ch] * sx / count
    return k


def batchnorm_relu_maxpool_backward(dpy, arg, x, gamma, mean, inv_std, dgamma, dbeta, out=None):
    """dpy (N, C, PH, PW) and the forward's arg, x (N, C, H, W) -> dx (N, C, H, W) (into out
    when given); dgamma, dbeta (C,) written."""
    dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    _backward_kernel(dpy, arg, x, gamma, mean, inv_std, dgamma, dbeta, dx)
    return dx
