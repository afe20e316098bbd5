"""Cython (AOT) backend: thin wrappers over the extensions built from csrc/.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW.

Importing this module raises ``ImportError`` when the extensions were not
built (e.g. an install without a C compiler); ``fastlenet.kernels`` reports
that error instead of hiding it.  The ``_<name>_impl`` functions are
unchecked; the public ones at the bottom carry the contract's checks.
"""
from __future__ import annotations

import sys

from . import _cy_conv, _cy_linear, _cy_loss, _cy_optim, _cy_pool
from ._api import KERNEL_NAMES, Backend

_im2col_impl = _cy_conv.im2col
_col2im_impl = _cy_conv.col2im
_conv2d_forward_impl = _cy_conv.conv2d_forward
_conv2d_backward_impl = _cy_conv.conv2d_backward
_maxpool2d_forward_impl = _cy_pool.maxpool2d_forward
_maxpool2d_backward_impl = _cy_pool.maxpool2d_backward
_avgpool2d_forward_impl = _cy_pool.avgpool2d_forward
_avgpool2d_backward_impl = _cy_pool.avgpool2d_backward

# fused conv -> ReLU -> max pool (an internal fast path used by the layers; see _api.Backend.fused)
_conv2d_relu_maxpool_forward_impl = _cy_conv.conv2d_relu_maxpool_forward
_conv2d_relu_maxpool_backward_impl = _cy_conv.conv2d_relu_maxpool_backward

# dense-layer products on the kernels' own threads (an internal fast path; see _api.Backend.linear)
_linear_forward_impl = _cy_linear.linear_forward
_linear_backward_impl = _cy_linear.linear_backward

# Adam over a model's flat parameter buffer in one pass (see _api.Backend.adam_update, optim.Adam)
_adam_update_impl = _cy_optim.adam_update

# softmax cross-entropy and its gradient in one pass (see _api.Backend.softmax_cross_entropy)
_softmax_cross_entropy_impl = _cy_loss.softmax_cross_entropy


def set_num_threads(n: int) -> None:
    """Threads used by the OpenMP kernels."""
    _cy_conv.set_num_threads(n)


BACKEND = Backend("cython", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
