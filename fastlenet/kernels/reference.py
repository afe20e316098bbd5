"""Pure-NumPy kernels: the oracle every other backend is tested against.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
s stride, p pad.

Readability comes first here; the code is vectorised NumPy (no Python loop
over pixels) so it is still usable as a slow backend.  The ``_<name>_impl``
functions are unchecked; the public, checked functions at the bottom come from
:class:`fastlenet.kernels._api.Backend`.
"""
from __future__ import annotations

import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._api import KERNEL_NAMES, Backend


def _pad(x, pad):
    """Zero-pad the two spatial axes of (N, C, H, W) by ``pad`` on each side."""
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _windows(x, kh, kw, stride, oh, ow):
    """View of every window: x (N, C, H, W) -> (N, C, OH, OW, KH, KW), no copy."""
    v = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return v[:, :, : (oh - 1) * stride + 1 : stride, : (ow - 1) * stride + 1 : stride]


# --------------------------------------------------------------------------- im2col / col2im
def _im2col_impl(x, kh, kw, stride, pad, oh, ow):
    """x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW)."""
    n, c = x.shape[:2]
    win = _windows(_pad(x, pad), kh, kw, stride, oh, ow)        # (N, C, OH, OW, KH, KW)
    cols = win.transpose(0, 1, 4, 5, 2, 3)                       # (N, C, KH, KW, OH, OW)
    return np.ascontiguousarray(cols).reshape(n, c * kh * kw, oh * ow)


def _col2im_impl(cols, x_shape, kh, kw, stride, pad, oh, ow):
    """cols (N, C*KH*KW, OH*OW) -> x (N, C, H, W): the adjoint of im2col (sums overlaps)."""
    n, c, h, w = x_shape
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xpad = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    for i in range(kh):           # one strided slab per kernel tap; slabs overlap when s < K
        for j in range(kw):
            xpad[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += cols[:, :, i, j]
    return xpad[:, :, pad : pad + h, pad : pad + w].copy()


# --------------------------------------------------------------------------- convolution
def _conv2d_forward_impl(x, w, b, stride, pad, oh, ow):
    """y[n] = W (F, K) @ cols[n] (K, L) + b  -> (N, F, OH, OW)."""
    f, _, kh, kw = w.shape
    cols = _im2col_impl(x, kh, kw, stride, pad, oh, ow)          # (N, K, L)
    y = np.matmul(w.reshape(f, -1), cols)                        # (N, F, L)
    y += b[None, :, None]
    return y.reshape(x.shape[0], f, oh, ow)


def _conv2d_backward_impl(dy, x, w, stride, pad, need_dx):
    """dW = sum_n dy[n] (F, L) @ cols[n]^T (L, K);  dcols = W^T @ dy[n];  dx = col2im(dcols)."""
    n = x.shape[0]
    f, c, kh, kw = w.shape
    oh, ow = dy.shape[2:]
    dyr = dy.reshape(n, f, oh * ow)                              # (N, F, L)
    db = dyr.sum(axis=(0, 2))
    cols = _im2col_impl(x, kh, kw, stride, pad, oh, ow)          # (N, K, L)
    dw = np.einsum("nfl,nkl->fk", dyr, cols, optimize=True).reshape(w.shape)
    dx = None
    if need_dx:
        dcols = np.matmul(w.reshape(f, -1).T, dyr)               # (N, K, L)
        dx = _col2im_impl(dcols, x.shape, kh, kw, stride, pad, oh, ow)
    return dx, dw.astype(x.dtype, copy=False), db.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- pooling
def _maxpool2d_forward_impl(x, size, stride, oh, ow):
    """y = max over each window; arg = flat index h*W + w of the (first) maximum."""
    n, c, h, w = x.shape
    win = _windows(x, size, size, stride, oh, ow).reshape(n, c, oh, ow, size * size)
    k = win.argmax(axis=-1)                                      # tap index inside the window
    y = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    rows = np.arange(oh)[:, None] * stride + k // size
    cols = np.arange(ow)[None, :] * stride + k % size
    return np.ascontiguousarray(y), (rows * w + cols).astype(np.int32)


def _maxpool2d_backward_impl(dy, arg, x_shape, size, stride):
    """dx[n, c].flat[arg] += dy  (np.add.at accumulates overlapping windows)."""
    n, c, h, w = x_shape
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    planes = np.arange(n * c)[:, None]
    np.add.at(dx, (planes, arg.reshape(n * c, -1)), dy.reshape(n * c, -1))
    return dx.reshape(x_shape)


def _avgpool2d_forward_impl(x, size, stride, oh, ow):
    """y = mean over each size*size window."""
    return np.ascontiguousarray(_windows(x, size, size, stride, oh, ow).mean(axis=(-2, -1)))


def _avgpool2d_backward_impl(dy, x_shape, size, stride):
    """Each window tap receives dy / size^2 (the adjoint of the mean)."""
    n, c, oh, ow = dy.shape
    taps = np.broadcast_to((dy / (size * size))[:, :, None, None], (n, c, size, size, oh, ow))
    cols = np.ascontiguousarray(taps).reshape(n, c * size * size, oh * ow)
    return _col2im_impl(cols, x_shape, size, size, stride, 0, oh, ow)


# --------------------------------------------------------------------------- public API
BACKEND = Backend("numpy", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
