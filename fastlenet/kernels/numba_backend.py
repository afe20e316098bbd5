"""Numba (JIT) kernels, parallel over the batch.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
D dense inputs, U dense units, P parameters.

Strategy: the convolutions live in ``numba_conv`` (one serial kernel per plan path,
run over blocks of samples by ``_block_threads``; their loop nests in
``_numba_loops``); pooling (``numba_pool``), the dense layers and Adam here are ``prange`` loops
whose iterations write disjoint outputs, so results do not depend on the thread
count.  The small GEMMs are loop nests ordered so the innermost loop runs over
contiguous memory and vectorises.  All Numba options live in ``_numba_options``;
every kernel compiles on its first call only (and is cached on disk).  The ``_<name>_impl`` functions are unchecked; use the checked
ones at the bottom or ``fastlenet.kernels.backend("numba")``.
"""
from __future__ import annotations

import sys

import numba
import numpy as np
from numba import njit, prange

from . import numba_conv, numba_norm, numba_pool
from ._api import KERNEL_NAMES, Backend
from ._block_threads import run_blocks
from ._fast import FastPaths, writing_into
from ._numba_loops import col2im_one, gemm_nt, im2col_one, row_offsets
from ._numba_options import PARALLEL, SERIAL, ZERO

_SERIAL, _PARALLEL = SERIAL, PARALLEL       # fastlenet/kernels/_numba_options.py


def cache_is_warm() -> bool:
    """Whether Numba's on-disk cache already holds compiled convolution kernels
    (``$NUMBA_CACHE_DIR``, else ``__pycache__`` beside this file): when not, the first
    call of each kernel compiles it (about a second each), which a caller should say.
    (A warm cache may still lack a path that a new model's layers take.)"""
    import os
    from pathlib import Path
    root = os.environ.get("NUMBA_CACHE_DIR")
    folder = Path(root) if root else Path(__file__).resolve().parent / "__pycache__"
    try:
        return any(folder.rglob("numba_conv.*.nbi"))
    except OSError:
        return False


def set_num_threads(n: int) -> None:
    """Threads used by the kernels (1 .. numba.config.NUMBA_NUM_THREADS): the prange
    loops' and, read at each call from Numba's setting, the block threads'."""
    numba.set_num_threads(n)


# --------------------------------------------------------------------------- convolution
# numba_conv.py: one serial kernel per plan path, over blocks of samples on T threads
MAX_FLANES_K = numba_conv.MAX_FLANES_K          # the plan's filter-lanes crossover (Backend reads it)
PLAN_RULES = numba_conv.PLAN_RULES              # ... and its plan rules
LANES = numba_conv.LANES


def _conv2d_forward_impl(x, w, b, stride, pad, oh, ow):
    """y (N, F, OH, OW) = conv(x) on the plan's forward path."""
    return numba_conv.conv_forward(x, w, b, stride, pad, oh, ow)[0]


def _conv2d_relu_forward_impl(x, w, b, stride, pad, oh, ow):
    """relu(conv(x)) (N, F, OH, OW), the ReLU applied to each block of samples while in cache."""
    return numba_conv.conv_forward(x, w, b, stride, pad, oh, ow, relu=True)[0]


def _conv2d_relu_maxpool_forward_impl(x, w, b, stride, pad, oh, ow, size, pool_stride):
    """maxpool(relu(conv(x))) without materialising the conv output -> (y, arg)."""
    return numba_conv.conv_forward(x, w, b, stride, pad, oh, ow, size, pool_stride)


_NO_ARG = np.zeros((1, 1, 1, 1), dtype=np.int32)


def _conv2d_backward_impl(dy, x, w, stride, pad, need_dx):
    """(dx | None, dW, db) of the convolution, on the plan's dW and dx paths."""
    return numba_conv.conv_backward(dy, _NO_ARG, x, w, stride, pad, dy.shape[2], dy.shape[3], need_dx, False)


def _conv2d_relu_backward_impl(dy, y, x, w, stride, pad, need_dx):
    """Gradients of relu(conv(x)): dy passes where the forward's y > 0."""
    return _conv2d_backward_impl(numba_conv.relu_masked(dy, y), x, w, stride, pad, need_dx)


def _conv2d_relu_maxpool_backward_impl(dpy, arg, x, w, stride, pad, oh, ow, size, pool_stride, need_dx):
    """Gradients of the fused forward: the pooled gradient is routed to its argmax."""
    return numba_conv.conv_backward(dpy, arg, x, w, stride, pad, oh, ow, need_dx, True, (size, pool_stride))


# --------------------------------------------------------------------------- im2col / col2im
@njit(**_PARALLEL)
def _im2col_impl(x, kh, kw, stride, pad, oh, ow):
    """x (N, C, H, W) -> cols (N, K, L)."""
    n, c = x.shape[0], x.shape[1]
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for b in prange(n):
        im2col_one(x[b], kh, kw, stride, pad, oh, ow, cols[b])
    return cols


@njit(**_PARALLEL)
def _col2im_impl(cols, x_shape, kh, kw, stride, pad, oh, ow):
    """cols (N, K, L) -> x (N, C, H, W), overlaps summed."""
    x = np.zeros(x_shape, dtype=cols.dtype)
    for b in prange(x_shape[0]):
        col2im_one(cols[b], kh, kw, stride, pad, oh, ow, x[b])
    return x


# --------------------------------------------------------------------------- pooling
# numba_pool.py: max and average pooling, forward and backward
_maxpool2d_forward_impl = numba_pool._maxpool2d_forward_impl
_maxpool2d_backward_impl = numba_pool._maxpool2d_backward_impl
_avgpool2d_forward_impl = numba_pool._avgpool2d_forward_impl
_avgpool2d_backward_impl = numba_pool._avgpool2d_backward_impl


# --------------------------------------------------------------------------- dense, loss, Adam
# The fast paths of the layers, the loss and the optimizer (the contract: _fast.FastPaths):
# serial kernels over blocks of rows (or of parameters) run on T threads by
# _block_threads, like the convolutions.  Each block writes only its own rows, summed
# over the batch in order: results do not depend on the thread count.
ROWS = 32                               # dense-layer rows per block
DW_ROWS = 16                            # rows of dW (inputs) per block
ADAM_BLOCK = 1 << 17                    # parameters per Adam block (LeNet-5's 61,706: one)
#: a dense layer with fewer multiply-adds than this runs on the calling thread: waking
#: a worker costs about 50 us, more than such a layer's whole product (84 -> 10 at batch
#: 256 is 0.2 M)
DENSE_SERIAL_MACS = 1 << 20


def _dense_threads(n: int, d: int, u: int) -> int:
    return 1 if n * d * u < DENSE_SERIAL_MACS else numba.get_num_threads()


@njit(**_SERIAL)
def _linear_rows(x, wt, b, relu, lo, hi, offs, y):
    """y[lo:hi] (rows, U) = x[lo:hi] (rows, D) @ wt (U, D)^T + b, ReLU'd with relu: the
    dot-product register tiles (gemm_nt; offs = row_offsets(U, D))."""
    u = wt.shape[0]
    for r in range(lo, hi):
        for j in range(u):
            y[r, j] = b[j]
    gemm_nt(x[lo:hi], wt.ravel(), offs, y[lo:hi])
    if relu:
        for r in range(lo, hi):
            for j in range(u):
                v = y[r, j]
                y[r, j] = ZERO if v < 0 else v        # NaN stays NaN, like np.maximum


def _linear_forward(x, w, b, relu, out=None):
    """y (N, U) = x (N, D) @ w (D, U) + b (ReLU'd with relu); blocks of ROWS rows."""
    n, (d, u) = x.shape[0], w.shape
    y = np.empty((n, u), dtype=x.dtype) if out is None else out
    wt, offs = np.ascontiguousarray(w.T), row_offsets(u, d)
    relu, blocks = bool(relu), (n + ROWS - 1) // ROWS
    run_blocks(lambda q, t: _linear_rows(x, wt, b, relu, q * ROWS, min(n, q * ROWS + ROWS), offs, y),
               blocks, _dense_threads(n, d, u))
    return y


@njit(**_SERIAL)
def _masked_grad(dy, y, relu, g, db):
    """g (N, U) = dy where y > 0 (every dy without relu); db (U,) = its column sums, in row order."""
    n, u = dy.shape
    for j in range(u):
        db[j] = 0
    for r in range(n):
        for j in range(u):
            v = dy[r, j] if (not relu or y[r, j] > 0) else 0
            g[r, j] = v
            db[j] += v


@njit(**_SERIAL)
def _product_rows(a, bt, lo, hi, offs, out):
    """out[lo:hi] (rows, M) = a[lo:hi] (rows, K) @ bt (M, K)^T by the dot-product tiles
    (gemm_nt; offs = row_offsets(M, K)): rows of dW (a = x^T, bt = dy'^T: summed over the
    batch) or of dx (a = dy', bt = w)."""
    for r in range(lo, hi):
        for j in range(out.shape[1]):
            out[r, j] = 0
    gemm_nt(a[lo:hi], bt.ravel(), offs, out[lo:hi])


def _linear_backward(dy, x, w, y, relu, need_dx, dw, db, out=None):
    """dy' = dy (where y > 0 with relu); dW = x^T dy', db = sum_n dy', dx = dy' w^T:
    blocks of DW_ROWS rows of dW, then of ROWS rows of dx."""
    n, d = x.shape
    g = np.empty(dy.shape, dtype=dy.dtype)
    _masked_grad(dy, y, bool(relu), g, db)
    xt, gt = np.ascontiguousarray(x.T), np.ascontiguousarray(g.T)      # (D, N), (U, N): rows along the batch
    g_offs = row_offsets(g.shape[1], n)
    dw_blocks = (d + DW_ROWS - 1) // DW_ROWS
    dx, wc, w_offs, dx_blocks = None, None, None, 0
    if need_dx:
        dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
        wc, w_offs, dx_blocks = np.ascontiguousarray(w), row_offsets(d, w.shape[1]), (n + ROWS - 1) // ROWS

    def run_block(q, t):
        if q < dw_blocks:
            _product_rows(xt, gt, q * DW_ROWS, min(d, q * DW_ROWS + DW_ROWS), g_offs, dw)
        else:
            lo = (q - dw_blocks) * ROWS
            _product_rows(g, wc, lo, min(n, lo + ROWS), w_offs, dx)

    run_blocks(run_block, dw_blocks + dx_blocks, _dense_threads(n, d, w.shape[1]))
    return dx


@njit(**_SERIAL)
def _adam_block(p, g, m, v, lo, hi, step_size, b1, b2, root_bc2, eps):
    """In place over p[lo:hi] of flat (P,) arrays: the moments of g, then the bias-corrected
    step.  It loops over views from index 0: an index from a run-time lo might be negative
    as far as LLVM knows, and the wraparound that Numba adds for it kept the loop scalar
    (4x slower)."""
    pv, gv, mv, vv = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
    for i in range(pv.shape[0]):
        gi = gv[i]
        mv[i] = b1 * mv[i] + (1 - b1) * gi
        vv[i] = b2 * vv[i] + (1 - b2) * gi * gi
        pv[i] -= step_size * mv[i] / (np.sqrt(vv[i]) / root_bc2 + eps)


def _adam_update(p, g, m, v, step_size, b1, b2, root_bc2, eps):
    """Adam over flat (P,) arrays in place, in blocks of ADAM_BLOCK parameters."""
    size = p.shape[0]
    run_blocks(lambda q, t: _adam_block(p, g, m, v, q * ADAM_BLOCK, min(size, q * ADAM_BLOCK + ADAM_BLOCK),
                                        step_size, b1, b2, root_bc2, eps),
               (size + ADAM_BLOCK - 1) // ADAM_BLOCK, numba.get_num_threads())


@njit(**_SERIAL)
def _softmax_cross_entropy_kernel(logits, labels, smoothing, grad):
    """The loss of fastlenet/losses.py in one pass, in float64; -1.0 for a bad label."""
    n, k = logits.shape
    off = smoothing / k
    on = 1.0 - smoothing + off
    loss = 0.0
    e = np.empty(k, dtype=np.float64)
    for i in range(n):
        label = labels[i]
        if label < 0 or label >= k:
            return -1.0
        top = np.float64(logits[i, 0])
        for j in range(1, k):
            top = max(top, np.float64(logits[i, j]))
        total = 0.0
        shifted = 0.0
        for j in range(k):
            z = np.float64(logits[i, j]) - top
            shifted += z
            e[j] = np.exp(z)
            total += e[j]
        logsum = np.log(total)
        loss += -off * shifted - (on - off) * (np.float64(logits[i, label]) - top) + logsum
        for j in range(k):
            target = on if j == label else off
            grad[i, j] = (e[j] / total - target) / n
    return loss / n


def _softmax_cross_entropy(logits, labels, smoothing, out=None):
    grad = np.empty(logits.shape, dtype=logits.dtype) if out is None else out
    loss = _softmax_cross_entropy_kernel(logits, labels, float(smoothing), grad)
    if loss < 0:
        return None, None
    return loss, grad


# --------------------------------------------------------------------------- public API
#: the internal fast paths (see _fast.FastPaths)
FAST_PATHS = FastPaths(
    conv2d_relu_forward=writing_into(_conv2d_relu_forward_impl, "out"),
    conv2d_relu_backward=writing_into(_conv2d_relu_backward_impl, "out", "dw_out", "db_out"),
    conv2d_relu_maxpool_forward=writing_into(_conv2d_relu_maxpool_forward_impl, "out", "arg_out"),
    conv2d_relu_maxpool_backward=writing_into(_conv2d_relu_maxpool_backward_impl, "out", "dw_out",
                                              "db_out"),
    linear_forward=_linear_forward,
    linear_backward=_linear_backward,
    adam_update=_adam_update,
    softmax_cross_entropy=_softmax_cross_entropy,
    batchnorm_stats=numba_norm.batchnorm_stats,
    batchnorm_relu_maxpool_forward=numba_norm.batchnorm_relu_maxpool_forward,
    batchnorm_relu_maxpool_backward=numba_norm.batchnorm_relu_maxpool_backward,
)

BACKEND = Backend("numba", sys.modules[__name__])
for _name in KERNEL_NAMES:
    globals()[_name] = getattr(BACKEND, _name)
del _name
