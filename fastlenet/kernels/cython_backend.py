"""Cython (AOT) backend: thin wrappers over the extensions built from csrc/.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW.

Importing this module raises ``ImportError`` when the extensions were not
built (e.g. an install without a C compiler); ``fastlenet.kernels`` reports
that error instead of hiding it.  The ``_<name>_impl`` functions are
unchecked; the public ones at the bottom carry the contract's checks.  Every
convolution runs the plan that :func:`fastlenet.kernels.plan.conv2d` makes for
its geometry (the extension only executes it, and refuses a plan that does not
fit the geometry).
"""
from __future__ import annotations

import sys

from . import _cy_conv, _cy_linear, _cy_loss, _cy_norm, _cy_optim, _cy_pool
from . import plan
from ._api import KERNEL_NAMES, Backend
from ._fast import FastPaths

_im2col_impl = _cy_conv.im2col
_col2im_impl = _cy_conv.col2im
_maxpool2d_forward_impl = _cy_pool.maxpool2d_forward
_maxpool2d_backward_impl = _cy_pool.maxpool2d_backward
_avgpool2d_forward_impl = _cy_pool.avgpool2d_forward
_avgpool2d_backward_impl = _cy_pool.avgpool2d_backward


#: lanes of the extension's register rows (its build's float vector width): the plans' width
LANES = _cy_conv.LANES

#: every kernel writes its results into the out= arrays it is given (no copies)
WRITES_OUT = True


def _conv2d_forward_impl(x, w, b, stride, pad, oh, ow, out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, lanes=LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_forward(x, w, b, stride, pad, oh, ow, codes, out)


def _conv2d_backward_impl(dy, x, w, stride, pad, need_dx, out=None, dw_out=None, db_out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, lanes=LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_backward(dy, x, w, stride, pad, need_dx, codes, out, dw_out, db_out)


def _conv2d_relu_forward_impl(x, w, b, stride, pad, oh, ow, out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, lanes=LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_relu_forward(x, w, b, stride, pad, oh, ow, codes, out)


def _conv2d_relu_backward_impl(dy, y, x, w, stride, pad, need_dx, out=None, dw_out=None, db_out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, lanes=LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_relu_backward(dy, y, x, w, stride, pad, need_dx, codes, out, dw_out, db_out)


def _conv2d_relu_maxpool_forward_impl(x, w, b, stride, pad, oh, ow, size, pool_stride,
                                      out=None, arg_out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, (size, pool_stride), LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_relu_maxpool_forward(x, w, b, stride, pad, oh, ow, size, pool_stride,
                                                codes, out, arg_out)


def _conv2d_relu_maxpool_backward_impl(dpy, arg, x, w, stride, pad, oh, ow, size, pool_stride,
                                       need_dx, out=None, dw_out=None, db_out=None):
    codes = plan.conv2d(x.shape, w.shape, stride, pad, (size, pool_stride), LANES, itemsize=x.itemsize).codes
    return _cy_conv.conv2d_relu_maxpool_backward(dpy, arg, x, w, stride, pad, oh, ow, size,
                                                 pool_stride, need_dx, codes, out, dw_out, db_out)


def set_num_threads(n: int) -> None:
    """Threads used by the OpenMP kernels."""
    _cy_conv.set_num_threads(n)


#: the internal fast paths (see _fast.FastPaths)
FAST_PATHS = FastPaths(
    conv2d_relu_forward=_conv2d_relu_forward_impl,
    conv2d_relu_backward=_conv2d_relu_backward_impl,
    conv2d_relu_maxpool_forward=_conv2d_relu_maxpool_forward_impl,
    conv2d_relu_maxpool_backward=_conv2d_relu_maxpool_backward_impl,
    linear_forward=_cy_linear.linear_forward,
    linear_backward=_cy_linear.linear_backward,
    adam_update=_cy_optim.adam_update,
    softmax_cross_entropy=_cy_loss.softmax_cross_entropy,
    batchnorm_stats=_cy_norm.batchnorm_stats,
    batchnorm_relu_maxpool_forward=_cy_norm.batchnorm_relu_maxpool_forward,
    batchnorm_relu_maxpool_backward=_cy_norm.batchnorm_relu_maxpool_backward,
)

BACKEND = Backend("cython", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
