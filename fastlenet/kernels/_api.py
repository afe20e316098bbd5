"""The kernel contract: checked public functions over a backend's private kernels.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW.

Every backend module (``reference``, ``numba_backend``, ``cython_backend``)
provides the same *unchecked* implementation functions (``im2col``,
``col2im``, ``conv2d_forward`` ...) that assume valid, C-contiguous arrays of
one floating dtype.  :class:`Backend` wraps them with the checks of the
contract, so each check is written once and every backend gets it:

* arrays must be ``numpy.ndarray`` of float32 or float64, C-contiguous, with
  the right rank and a non-empty shape;
* all floating arguments of one call share one dtype (mixed dtypes are a
  ``TypeError``: convert explicitly);
* geometry is validated (stride >= 1, pad >= 0, kernel no larger than the
  padded input, shapes of ``w``/``b``/``dy``/``arg`` consistent with ``x``).

Errors name the offending argument.  Output sizes use floor semantics, like
PyTorch: ``OH = (H + 2*pad - KH) // stride + 1``.
"""
from __future__ import annotations

import numbers
import os
from types import SimpleNamespace
from typing import Optional, Tuple

import numpy as np

from . import plan as _plan
from ._fast import FastPaths, checked_fast_paths, writing_into

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_itemsize(name: str, dtype) -> int:
    """The element size of a float32 / float64 dtype (its plans differ); anything else -> TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, not {dtype!r}")
    return dt.itemsize
#: dtype of the max-pool argmax: flat index into each (n, c) plane, ``h * W + w``.
ARG_DTYPE = np.dtype(np.int32)
#: upper bound for any single size parameter (stride, pad, kernel side); keeps
#: index arithmetic in compiled code far away from int32 overflow.
MAX_PARAM = 1 << 16

Shape4 = Tuple[int, int, int, int]


# --------------------------------------------------------------------------- checks
def check_int(name: str, value, minimum: int) -> int:
    """``value`` as a Python int in ``[minimum, MAX_PARAM]`` or a clear error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > MAX_PARAM:
        raise ValueError(f"{name} must be <= {MAX_PARAM}, got {value}")
    return value


def check_array(name: str, a, ndim: int, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """Validate a float array argument: type, rank, dtype, non-empty, C order."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if dtype is None:
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    elif a.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype} but the call's dtype is {dtype}; "
            f"convert it explicitly (e.g. {name}.astype(np.{dtype}))"
        )
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    return a


def check_shape4(name: str, shape) -> Shape4:
    """A 4-tuple of positive ints (the shape of a forward input)."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a 4-tuple (N, C, H, W), got {shape!r}") from None
    if len(items) != 4:
        raise ValueError(f"{name} must have 4 entries (N, C, H, W), got {items!r}")
    n, c, h, w = (check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(items))
    return n, c, h, w


def output_size(what: str, size: int, kernel: int, stride: int, pad: int) -> int:
    """Floor-mode output length of a sliding window, or a ValueError."""
    padded = size + 2 * pad
    if kernel > padded:
        raise ValueError(
            f"{what}: kernel size {kernel} is larger than the padded input size "
            f"{padded} (input {size} + 2*pad {pad})"
        )
    return (padded - kernel) // stride + 1


def expect_shape(name: str, a: np.ndarray, shape: tuple) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


def conv_sizes(x_shape, w_shape, stride, pad, w_name: str, x_name: str) -> Tuple[int, int, int, int]:
    """A convolution's checked (stride, pad, OH, OW) from x (N, C, H, W) and w (F, C, KH, KW)
    shapes, or an error naming the argument."""
    if w_shape[1] != x_shape[1]:
        raise ValueError(f"{w_name} has {w_shape[1]} input channels ({w_name}[1]) but {x_name} has "
                         f"{x_shape[1]} ({x_name}[1])")
    stride, pad = check_int("stride", stride, 1), check_int("pad", pad, 0)
    oh = output_size("conv2d (height)", x_shape[2], w_shape[2], stride, pad)
    ow = output_size("conv2d (width)", x_shape[3], w_shape[3], stride, pad)
    return stride, pad, oh, ow


def check_out(out, shape: tuple, dtype) -> Optional[np.ndarray]:
    """``out`` (None, or a writeable C-contiguous array of exactly ``shape`` and ``dtype``
    that the result is written into) or a clear error."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    expect_shape("out", out, shape)
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"out has dtype {out.dtype} but the result's dtype is {np.dtype(dtype)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


#: FASTLENET_CHECK_FAST_PATHS=1: every internal fast-path call checks its arguments
#: against the FastPaths contract (slower; for debugging and the test suite)
CHECK_FAST_PATHS = os.environ.get("FASTLENET_CHECK_FAST_PATHS") == "1"


# --------------------------------------------------------------------------- backend
class Backend:
    """The public kernel functions of one backend (all checked).

    ``module`` holds the unchecked implementations ``_<name>_impl`` with the
    private signatures documented in ``reference.py``.
    """

    def __init__(self, name: str, module) -> None:
        self.name = name
        impls = {k: getattr(module, f"_{k}_impl") for k in KERNEL_NAMES}
        #: True when the kernels write straight into the out= arrays they are given (cython);
        #: elsewhere out= costs a copy, so the layers keep no output buffers there
        self.writes_out = bool(getattr(module, "WRITES_OUT", False))
        #: float lanes of the backend's register rows: the width its convolution plans are made for
        self.lanes = int(getattr(module, "LANES", _plan.LANES))
        #: the most taps its filter-lanes forward takes (its measured crossover; plan.conv2d)
        self.max_flanes_k = int(getattr(module, "MAX_FLANES_K", _plan.MAX_FLANES_K))
        #: the rule set its plans follow (plan.RULES)
        self.rules = str(getattr(module, "PLAN_RULES", "lanes"))
        if not self.writes_out:     # its kernels allocate: copy into out=
            impls = {k: writing_into(fn, *KERNEL_OUTS[k]) for k, fn in impls.items()}
        self._impl = SimpleNamespace(**impls)
        #: the internal fast paths (a :class:`FastPaths`), or None (numpy: the layers' NumPy code)
        fast = getattr(module, "FAST_PATHS", None)
        self.fast: Optional[FastPaths] = checked_fast_paths(fast) if fast and CHECK_FAST_PATHS else fast

    def __repr__(self) -> str:
        return f"<fastlenet kernels backend {self.name!r}>"

    # ------------------------------------------------------------------ im2col / col2im
    def im2col(self, x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
        """Unfold sliding windows: x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW).

        Row ``(c*KH + i)*KW + j`` of ``cols[n]`` holds
        ``xpad[n, c, oh*stride + i, ow*stride + j]`` at column ``oh*OW + ow``,
        where ``xpad`` is ``x`` zero-padded by ``pad`` on each spatial side.
        """
        x = check_array("x", x, 4)
        kh, kw = check_int("kh", kh, 1), check_int("kw", kw, 1)
        stride, pad = check_int("stride", stride, 1), check_int("pad", pad, 0)
        oh = output_size("im2col (height)", x.shape[2], kh, stride, pad)
        ow = output_size("im2col (width)", x.shape[3], kw, stride, pad)
        return self._impl.im2col(x, kh, kw, stride, pad, oh, ow)

    def col2im(self, cols: np.ndarray, x_shape: Shape4, kh: int, kw: int,
               stride: int = 1, pad: int = 0) -> np.ndarray:
        """Fold columns back (the adjoint of im2col): cols (N, C*KH*KW, OH*OW) -> (N, C, H, W).

        Overlapping windows accumulate, so ``<im2col(x), c> == <x, col2im(c)>``.
        """
        cols = check_array("cols", cols, 3)
        n, c, h, w = check_shape4("x_shape", x_shape)
        kh, kw = check_int("kh", kh, 1), check_int("kw", kw, 1)
        stride, pad = check_int("stride", stride, 1), check_int("pad", pad, 0)
        oh = output_size("col2im (height)", h, kh, stride, pad)
        ow = output_size("col2im (width)", w, kw, stride, pad)
        expect_shape("cols", cols, (n, c * kh * kw, oh * ow))
        return self._impl.col2im(cols, (n, c, h, w), kh, kw, stride, pad, oh, ow)

    # ------------------------------------------------------------------ convolution
    def _conv_geometry(self, x, w, stride, pad):
        x = check_array("x", x, 4)
        w = check_array("w", w, 4, x.dtype)
        return (x, w) + conv_sizes(x.shape, w.shape, stride, pad, "w", "x")

    def plan_conv2d(self, x_shape: Shape4, w_shape: Shape4, stride: int = 1, pad: int = 0,
                    pool: Optional[Tuple[int, int]] = None, dtype=np.float32) -> _plan.ConvPlan:
        """The (immutable) plan a compiled backend runs for this convolution of ``dtype``
        (float32 or float64), optionally fused with ReLU and a max pool ``pool = (size,
        stride)``: which forward, pool, dW and dx paths (``plan.ConvPlan.names``).  Both
        compiled backends run the same plan function, each with its own vector width,
        filter-lanes crossover and dW rule; the numpy reference computes every geometry
        one readable way whatever it says."""
        x_shape, w_shape = check_shape4("x_shape", x_shape), check_shape4("w_shape", w_shape)
        stride, pad, oh, ow = conv_sizes(x_shape, w_shape, stride, pad, "w_shape", "x_shape")
        if pool is not None:
            size, ps = check_int("pool size", pool[0], 1), check_int("pool stride", pool[1], 1)
            output_size("max pool (height)", oh, size, ps, 0)
            output_size("max pool (width)", ow, size, ps, 0)
            pool = (size, ps)
        itemsize = _float_itemsize("dtype", dtype)
        return _plan.conv2d(x_shape, w_shape, stride, pad, pool, self.lanes, self.max_flanes_k, self.rules,
                            itemsize)

    def conv2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray,
                       stride: int = 1, pad: int = 0, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Cross-correlation: x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW).

        ``y[n, f] = b[f] + sum_{c,i,j} w[f, c, i, j] * xpad[n, c, oh*s + i, ow*s + j]``.
        ``out``: an array of y's shape and dtype to write into (else a new one).
        """
        x, w, stride, pad, oh, ow = self._conv_geometry(x, w, stride, pad)
        b = check_array("b", b, 1, x.dtype)
        expect_shape("b", b, (w.shape[0],))
        out = check_out(out, (x.shape[0], w.shape[0], oh, ow), x.dtype)
        return self._impl.conv2d_forward(x, w, b, stride, pad, oh, ow, out=out)

    def conv2d_backward(self, dy: np.ndarray, x: np.ndarray, w: np.ndarray,
                        stride: int = 1, pad: int = 0, need_dx: bool = True,
                        out: Optional[np.ndarray] = None):
        """Gradients of conv2d_forward: dy (N, F, OH, OW) -> (dx | None, dw, db).

        dx (N, C, H, W) is ``None`` when ``need_dx`` is false (the first layer);
        dw (F, C, KH, KW) and db (F,) are summed over the batch.  ``out``: an array
        of dx's shape and dtype to write dx into (else a new one).
        """
        x, w, stride, pad, oh, ow = self._conv_geometry(x, w, stride, pad)
        dy = check_array("dy", dy, 4, x.dtype)
        expect_shape("dy", dy, (x.shape[0], w.shape[0], oh, ow))
        out = check_out(out, x.shape, x.dtype) if need_dx else None
        return self._impl.conv2d_backward(dy, x, w, stride, pad, bool(need_dx), out=out)

    # ------------------------------------------------------------------ pooling
    def _pool_geometry(self, name, x_shape, size, stride):
        size = check_int("size", size, 1)
        stride = size if stride is None else check_int("stride", stride, 1)
        oh = output_size(f"{name} (height)", x_shape[2], size, stride, 0)
        ow = output_size(f"{name} (width)", x_shape[3], size, stride, 0)
        return size, stride, oh, ow

    def _pool_grad(self, name, dy, x_shape, size, stride):
        dy = check_array("dy", dy, 4)
        x_shape = check_shape4("x_shape", x_shape)
        size, stride, oh, ow = self._pool_geometry(name, x_shape, size, stride)
        expect_shape("dy", dy, (x_shape[0], x_shape[1], oh, ow))
        return dy, x_shape, size, stride

    def maxpool2d_forward(self, x: np.ndarray, size: int = 2, stride: Optional[int] = None,
                          out: Optional[np.ndarray] = None, arg_out: Optional[np.ndarray] = None):
        """Max pooling: x (N, C, H, W) -> (y (N, C, OH, OW), arg (N, C, OH, OW) int32).

        ``arg`` is the flat index ``h*W + w`` of each window's maximum inside its
        (n, c) plane (the first one in row-major order on ties).  ``stride``
        defaults to ``size``; windows may overlap.  ``out`` / ``arg_out``: arrays to
        write y and arg into (else new ones).
        """
        x = check_array("x", x, 4)
        size, stride, oh, ow = self._pool_geometry("maxpool2d", x.shape, size, stride)
        shape = (x.shape[0], x.shape[1], oh, ow)
        out, arg_out = check_out(out, shape, x.dtype), check_out(arg_out, shape, ARG_DTYPE)
        return self._impl.maxpool2d_forward(x, size, stride, oh, ow, out=out, arg_out=arg_out)

    def maxpool2d_backward(self, dy: np.ndarray, arg: np.ndarray, x_shape: Shape4,
                           size: int = 2, stride: Optional[int] = None,
                           out: Optional[np.ndarray] = None) -> np.ndarray:
        """Route dy (N, C, OH, OW) to the argmax positions -> dx (N, C, H, W); overlaps accumulate."""
        dy, x_shape, size, stride = self._pool_grad("maxpool2d", dy, x_shape, size, stride)
        if not isinstance(arg, np.ndarray) or arg.dtype != ARG_DTYPE:
            raise TypeError(
                "arg must be the int32 array returned by maxpool2d_forward, got "
                f"{getattr(arg, 'dtype', type(arg).__name__)}"
            )
        expect_shape("arg", arg, dy.shape)
        if not arg.flags.c_contiguous:
            raise ValueError("arg must be C-contiguous; pass np.ascontiguousarray(arg)")
        plane = x_shape[2] * x_shape[3]
        lo, hi = int(arg.min()), int(arg.max())
        if lo < 0 or hi >= plane:
            raise ValueError(
                f"arg holds indices outside 0..{plane - 1} (found {lo}..{hi}); "
                "it must come from maxpool2d_forward on an input of shape x_shape"
            )
        out = check_out(out, x_shape, dy.dtype)
        return self._impl.maxpool2d_backward(dy, arg, x_shape, size, stride, out=out)

    def avgpool2d_forward(self, x: np.ndarray, size: int = 2, stride: Optional[int] = None,
                          out: Optional[np.ndarray] = None) -> np.ndarray:
        """Average pooling: x (N, C, H, W) -> y (N, C, OH, OW), each the mean of its size*size window."""
        x = check_array("x", x, 4)
        size, stride, oh, ow = self._pool_geometry("avgpool2d", x.shape, size, stride)
        out = check_out(out, (x.shape[0], x.shape[1], oh, ow), x.dtype)
        return self._impl.avgpool2d_forward(x, size, stride, oh, ow, out=out)

    def avgpool2d_backward(self, dy: np.ndarray, x_shape: Shape4, size: int = 2,
                           stride: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Spread dy (N, C, OH, OW) evenly over each window -> dx (N, C, H, W); overlaps accumulate."""
        dy, x_shape, size, stride = self._pool_grad("avgpool2d", dy, x_shape, size, stride)
        out = check_out(out, x_shape, dy.dtype)
        return self._impl.avgpool2d_backward(dy, x_shape, size, stride, out=out)


#: the public function names every backend exposes
KERNEL_NAMES = (
    "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
)

#: the out= keywords of each kernel, in the order of its results
KERNEL_OUTS = {
    "im2col": (), "col2im": (), "conv2d_forward": ("out",),
    "conv2d_backward": ("out", "dw_out", "db_out"), "maxpool2d_forward": ("out", "arg_out"),
    "maxpool2d_backward": ("out",), "avgpool2d_forward": ("out",), "avgpool2d_backward": ("out",),
}
