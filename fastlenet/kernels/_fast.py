"""The second tier of the kernel contract: the internal fast paths of the compiled backends.

Dimension legend: N batch, C channels, H/W height/width, F filters, OH/OW conv output,
PH/PW pooled output, D input features, U output units, K classes, P parameters.
Batch-norm statistics (mean, inv_std) are float64 (C,) whatever the data's dtype.

The layers, the loss and the optimizer call these *unchecked* functions on arrays
they validated themselves (C-contiguous, one float dtype), to skip a checked
wrapper's cost or to fuse work.  Both compiled backends (cython, numba) implement
every one of them with the signatures below; the numpy backend has none
(``Backend.fast is None``) and the layers run their NumPy code instead.
tests/test_fast_paths.py holds each against the public kernels or the reference.
With ``FASTLENET_CHECK_FAST_PATHS=1`` every call is checked against this contract
first (:func:`checked_fast_paths`), so a layer passing a wrong array fails loudly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Callable, Optional, Protocol, Tuple

import numpy as np

Array = np.ndarray


class ConvReluForward(Protocol):
    def __call__(self, x: Array, w: Array, b: Array, stride: int, pad: int, oh: int, ow: int,
                 out: Optional[Array] = None) -> Array:
        """relu(conv(x)): x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)."""


class ConvReluBackward(Protocol):
    def __call__(self, dy: Array, y: Array, x: Array, w: Array, stride: int, pad: int, need_dx: bool,
                 out: Optional[Array] = None, dw_out: Optional[Array] = None,
                 db_out: Optional[Array] = None) -> Tuple[Optional[Array], Array, Array]:
        """dy (N, F, OH, OW) and the forward's y -> (dx (N, C, H, W) | None, dw, db); dy
        passes only where y > 0."""


class ConvReluMaxpoolForward(Protocol):
    def __call__(self, x: Array, w: Array, b: Array, stride: int, pad: int, oh: int, ow: int,
                 size: int, pool_stride: int, out: Optional[Array] = None,
                 arg_out: Optional[Array] = None) -> Tuple[Array, Array]:
        """maxpool(relu(conv(x))): x (N, C, H, W), w (F, C, KH, KW), b (F,) ->
        (y (N, F, PH, PW), arg (N, F, PH, PW) int32: oy*OW + ox of each max in the conv
        plane, -1 where the max is <= 0 and no gradient flows)."""


class ConvReluMaxpoolBackward(Protocol):
    def __call__(self, dpy: Array, arg: Array, x: Array, w: Array, stride: int, pad: int,
                 oh: int, ow: int, size: int, pool_stride: int, need_dx: bool,
                 out: Optional[Array] = None, dw_out: Optional[Array] = None,
                 db_out: Optional[Array] = None) -> Tuple[Optional[Array], Array, Array]:
        """dpy (N, F, PH, PW) and the forward's arg -> (dx (N, C, H, W) | None, dw, db)."""


class LinearForward(Protocol):
    def __call__(self, x: Array, w: Array, b: Array, relu: bool,
                 out: Optional[Array] = None) -> Array:
        """x (N, D), w (D, U), b (U,) -> y (N, U) = x @ w + b (ReLU'd with ``relu``)."""


class LinearBackward(Protocol):
    def __call__(self, dy: Array, x: Array, w: Array, y: Array, relu: bool, need_dx: bool,
                 dw: Array, db: Array, out: Optional[Array] = None) -> Optional[Array]:
        """dy (N, U) -> dx (N, D) | None; dW (D, U) and db (U,) written into dw, db.
        With ``relu`` dy passes only where the forward output y > 0."""


class AdamUpdate(Protocol):
    def __call__(self, p: Array, g: Array, m: Array, v: Array, step_size: float, b1: float,
                 b2: float, root_bc2: float, eps: float) -> None:
        """Flat (P,) arrays, in place: m, v the moments of g;
        p -= step_size * m / (sqrt(v) / root_bc2 + eps)."""


class BatchnormStats(Protocol):
    def __call__(self, x: Array) -> Tuple[Array, Array]:
        """x (N, C, H, W) -> (mean (C,), var (C,)) float64 over (N, H, W), var biased."""


class BatchnormReluMaxpoolForward(Protocol):
    def __call__(self, x: Array, gamma: Array, beta: Array, mean: Array, inv_std: Array,
                 size: int, stride: int, out: Optional[Array] = None,
                 arg_out: Optional[Array] = None) -> Tuple[Array, Array]:
        """maxpool(relu(gamma * (x - mean) * inv_std + beta)): x (N, C, H, W) ->
        (y (N, C, PH, PW), arg (N, C, PH, PW) int32: h*W + w of each max in its plane,
        -1 where the max is <= 0 and no gradient flows)."""


class BatchnormReluMaxpoolBackward(Protocol):
    def __call__(self, dpy: Array, arg: Array, x: Array, gamma: Array, mean: Array,
                 inv_std: Array, dgamma: Array, dbeta: Array,
                 out: Optional[Array] = None) -> Array:
        """dpy (N, C, PH, PW) and the forward's arg (batch statistics) -> dx (N, C, H, W);
        dgamma, dbeta (C,) written."""


class SoftmaxCrossEntropy(Protocol):
    def __call__(self, logits: Array, labels: Array, smoothing: float,
                 out: Optional[Array] = None) -> Tuple[Optional[float], Optional[Array]]:
        """logits (N, K), labels int64 (N,) -> (mean loss, grad (N, K)), or (None, None)
        when a label lies outside 0..K-1."""


@dataclass(frozen=True)
class FastPaths:
    """Every internal fast path a compiled backend provides (all unchecked)."""

    conv2d_relu_forward: ConvReluForward
    conv2d_relu_backward: ConvReluBackward
    conv2d_relu_maxpool_forward: ConvReluMaxpoolForward
    conv2d_relu_maxpool_backward: ConvReluMaxpoolBackward
    linear_forward: LinearForward
    linear_backward: LinearBackward
    adam_update: AdamUpdate
    softmax_cross_entropy: SoftmaxCrossEntropy
    batchnorm_stats: BatchnormStats
    batchnorm_relu_maxpool_forward: BatchnormReluMaxpoolForward
    batchnorm_relu_maxpool_backward: BatchnormReluMaxpoolBackward


# --------------------------------------------------------------------------- debug checks
class FastPathError(TypeError):
    """An internal fast path was called with arrays outside its contract."""


def _arrays(name: str, args: dict, float_names, dtype=None):
    """Every named float array C-contiguous and of one float dtype; returns that dtype."""
    for key in float_names:
        a = args.get(key)
        if a is None:
            continue
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise FastPathError(f"{name}: {key} must be a C-contiguous ndarray")
        dtype = a.dtype if dtype is None else dtype
        if a.dtype != dtype or dtype not in (np.float32, np.float64):
            raise FastPathError(f"{name}: {key} has dtype {a.dtype}, the call's is {dtype}")
    return dtype


def _shape(name: str, key: str, a, shape) -> None:
    if a is not None and a.shape != tuple(shape):
        raise FastPathError(f"{name}: {key} has shape {a.shape}, expected {tuple(shape)}")


def _check_conv_relu_fwd(a):
    _arrays("conv2d_relu_forward", a, ("x", "w", "b", "out"))
    _shape("conv2d_relu_forward", "out", a.get("out"), (a["x"].shape[0], a["w"].shape[0], a["oh"], a["ow"]))


def _check_conv_relu_bwd(a):
    _arrays("conv2d_relu_backward", a, ("dy", "y", "x", "w", "out", "dw_out", "db_out"))
    _shape("conv2d_relu_backward", "y", a["y"], a["dy"].shape)
    _shape("conv2d_relu_backward", "out", a.get("out"), a["x"].shape)
    _shape("conv2d_relu_backward", "dw_out", a.get("dw_out"), a["w"].shape)


def _check_conv_fwd(a):
    _arrays("conv2d_relu_maxpool_forward", a, ("x", "w", "b", "out"))
    n, f = a["x"].shape[0], a["w"].shape[0]
    ph = (a["oh"] - a["size"]) // a["pool_stride"] + 1
    pw = (a["ow"] - a["size"]) // a["pool_stride"] + 1
    _shape("conv2d_relu_maxpool_forward", "out", a.get("out"), (n, f, ph, pw))
    _shape("conv2d_relu_maxpool_forward", "arg_out", a.get("arg_out"), (n, f, ph, pw))


def _check_conv_bwd(a):
    _arrays("conv2d_relu_maxpool_backward", a, ("dpy", "x", "w", "out", "dw_out", "db_out"))
    _shape("conv2d_relu_maxpool_backward", "arg", a["arg"], a["dpy"].shape)
    _shape("conv2d_relu_maxpool_backward", "out", a.get("out"), a["x"].shape)
    _shape("conv2d_relu_maxpool_backward", "dw_out", a.get("dw_out"), a["w"].shape)


def _check_linear_fwd(a):
    _arrays("linear_forward", a, ("x", "w", "b", "out"))
    _shape("linear_forward", "w", a["w"], (a["x"].shape[1], a["w"].shape[1]))
    _shape("linear_forward", "out", a.get("out"), (a["x"].shape[0], a["w"].shape[1]))


def _check_linear_bwd(a):
    _arrays("linear_backward", a, ("dy", "x", "w", "y", "dw", "db", "out"))
    n, d, u = a["x"].shape[0], a["x"].shape[1], a["w"].shape[1]
    for key, shape in (("dy", (n, u)), ("y", (n, u)), ("dw", (d, u)), ("db", (u,)), ("out", (n, d))):
        _shape("linear_backward", key, a.get(key), shape)


def _check_adam(a):
    _arrays("adam_update", a, ("p", "g", "m", "v"))
    for key in ("g", "m", "v"):
        _shape("adam_update", key, a[key], a["p"].shape)


def _check_loss(a):
    _arrays("softmax_cross_entropy", a, ("logits", "out"))
    if a["labels"].dtype != np.int64 or a["labels"].shape != a["logits"].shape[:1]:
        raise FastPathError("softmax_cross_entropy: labels must be int64 (N,)")
    _shape("softmax_cross_entropy", "out", a.get("out"), a["logits"].shape)


def _check_norm_stats(a):
    _arrays("batchnorm_stats", a, ("x",))
    if a["x"].ndim != 4:
        raise FastPathError("batchnorm_stats: x must be (N, C, H, W)")


def _stats_vectors(name, a, c):
    for key in ("mean", "inv_std"):
        if a[key].dtype != np.float64 or a[key].shape != (c,) or not a[key].flags.c_contiguous:
            raise FastPathError(f"{name}: {key} must be float64 ({c},)")


def _check_norm_fwd(a):
    name = "batchnorm_relu_maxpool_forward"
    _arrays(name, a, ("x", "gamma", "beta", "out"))
    n, c, h, w = a["x"].shape
    shape = (n, c, (h - a["size"]) // a["stride"] + 1, (w - a["size"]) // a["stride"] + 1)
    for key in ("gamma", "beta"):
        _shape(name, key, a[key], (c,))
    _stats_vectors(name, a, c)
    _shape(name, "out", a.get("out"), shape)
    _shape(name, "arg_out", a.get("arg_out"), shape)


def _check_norm_bwd(a):
    name = "batchnorm_relu_maxpool_backward"
    _arrays(name, a, ("dpy", "x", "gamma", "dgamma", "dbeta", "out"))
    c = a["x"].shape[1]
    for key in ("gamma", "dgamma", "dbeta"):
        _shape(name, key, a[key], (c,))
    _stats_vectors(name, a, c)
    _shape(name, "arg", a["arg"], a["dpy"].shape)
    _shape(name, "out", a.get("out"), a["x"].shape)


_CHECKS = {
    "conv2d_relu_forward": (_check_conv_relu_fwd, ConvReluForward),
    "conv2d_relu_backward": (_check_conv_relu_bwd, ConvReluBackward),
    "conv2d_relu_maxpool_forward": (_check_conv_fwd, ConvReluMaxpoolForward),
    "conv2d_relu_maxpool_backward": (_check_conv_bwd, ConvReluMaxpoolBackward),
    "linear_forward": (_check_linear_fwd, LinearForward),
    "linear_backward": (_check_linear_bwd, LinearBackward),
    "adam_update": (_check_adam, AdamUpdate),
    "softmax_cross_entropy": (_check_loss, SoftmaxCrossEntropy),
    "batchnorm_stats": (_check_norm_stats, BatchnormStats),
    "batchnorm_relu_maxpool_forward": (_check_norm_fwd, BatchnormReluMaxpoolForward),
    "batchnorm_relu_maxpool_backward": (_check_norm_bwd, BatchnormReluMaxpoolBackward),
}


def _checked(name: str, fn: Callable) -> Callable:
    check, protocol = _CHECKS[name]
    import inspect
    params = list(inspect.signature(protocol.__call__).parameters)[1:]     # without self

    @functools.wraps(fn)
    def call(*args, **kwargs):
        named = dict(zip(params, args), **kwargs)
        check(named)
        return fn(*args, **kwargs)
    return call


def checked_fast_paths(fast: FastPaths) -> FastPaths:
    """``fast`` with every call checked against the contract first (debug mode)."""
    return FastPaths(**{f.name: _checked(f.name, getattr(fast, f.name)) for f in fields(FastPaths)})


# --------------------------------------------------------------------------- out= adapters
def writing_into(fn: Callable, *names: str) -> Callable:
    """``fn`` taking ``out``-style keywords for a backend whose kernel allocates its results:
    the i-th name receives the i-th result (copied in), e.g. ``("out", "arg_out")`` for
    ``(y, arg)``.  None results (dx without need_dx) stay None."""
    @functools.wraps(fn)
    def call(*args, **outs):
        unknown = set(outs) - set(names)
        if unknown:
            raise TypeError(f"{fn.__name__}() got unexpected keywords {sorted(unknown)}")
        result = fn(*args)
        single = not isinstance(result, tuple)
        results = [result] if single else list(result)
        for i, name in enumerate(names):
            target = outs.get(name)
            if target is not None and results[i] is not None:
                target[...] = results[i]
                results[i] = target
        return results[0] if single else tuple(results)
    return call
