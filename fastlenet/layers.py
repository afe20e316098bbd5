"""Layers: forward and backward side by side, parameters and their gradients.

Dimension legend: N batch, C channels, H/W height/width, F filters, D input
features, U output units.

Every layer has ``forward(x, training)`` and ``backward(dy)``; ``backward``
returns the gradient of the input and writes parameter gradients into
``self.grads`` (arrays allocated once, same keys as ``self.params``).  A layer
is built lazily by :meth:`Layer.build` once its input shape is known; weights
are drawn from the generator it is given, so the same seed gives the same
network on every kernel backend.  Conv and pool layers call the kernels of the
backend they were built with (``fastlenet.kernels``); layers never import the
trainer.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .buffers import OutputBuffers

Shape = Tuple[int, ...]


class Layer:
    """Base class. ``params``/``grads``: name -> array; ``buffers``: non-trained state."""

    #: the weight initialisation a preset asks for: "he" (ReLU) or "glorot" (sigmoid/tanh)
    init = "he"

    def __init__(self) -> None:
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        self.buffers: Dict[str, np.ndarray] = {}
        self.need_input_grad = True      # False for the first layer: skips dx work
        self.dtype = np.dtype(np.float32)
        #: the arrays this layer's kernels write into (see fastlenet.buffers)
        self.outputs = OutputBuffers()
        #: False for the model's last layer: its output (the logits) goes to the caller,
        #: so it is a new array every call, never a kept buffer
        self.keeps_output = True

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype, backend) -> Shape:
        """Create parameters for inputs of ``input_shape`` (no batch axis); return the output shape."""
        self.dtype = np.dtype(dtype)
        return input_shape

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> Optional[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def _out(self, name: str, shape, backend, dtype=None) -> Optional[np.ndarray]:
        """The kept buffer ``name`` for a kernel's ``out=`` when ``backend`` writes into it
        directly, else None (the kernel allocates).  "y" (the forward output) is kept
        only when :attr:`keeps_output`."""
        if not backend.writes_out or (name == "y" and not self.keeps_output):
            return None
        return self.outputs.get(name, shape, self.dtype if dtype is None else dtype)


#: the weight initialisations a layer takes (``auto`` is resolved by the model file)
INITS = ("he", "glorot", "lecun", "keras", "torch")


def _init_weights(rng, shape, fan_in, fan_out, init):
    """Weights drawn from ``rng``:

    * ``he``: normal, std sqrt(2 / fan_in) (for ReLU);
    * ``glorot`` / ``keras``: uniform +-sqrt(6 / (fan_in + fan_out)) (Keras' default,
      ``glorot_uniform``, for every Conv2D and Dense);
    * ``lecun``: normal, std sqrt(1 / fan_in);
    * ``torch``: uniform +-1 / sqrt(fan_in) (PyTorch's default for Conv2d and Linear:
      ``kaiming_uniform_(a=sqrt(5))``).
    """
    if init == "he":
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if init in ("glorot", "keras"):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)
    if init == "lecun":
        return rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    if init == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)
    raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")


def _init_bias(rng, size, fan_in, init):
    """Biases: zero, except ``torch``: uniform +-1 / sqrt(fan_in), as PyTorch draws them."""
    if init == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=size)
    return np.zeros(size)


# --------------------------------------------------------------------------- convolution
class Conv2D(Layer):
    """x (N, C, H, W) -> y (N, F, OH, OW); w (F, C, KH, KW), b (F,).

    ``padding``: an int, ``(pad_h, pad_w)``, ``"valid"`` (0) or ``"same"`` (output
    ``ceil(size / stride)`` for any kernel size; an odd total puts the extra row or
    column after, as TensorFlow does).  The kernels pad every side by the same
    amount; any padding beyond that common part is applied to a copy of the input
    here (and cut from dx), so every geometry runs on every backend.
    """

    def __init__(self, filters: int, kernel_size, stride: int = 1, padding=0, init: str = "he") -> None:
        super().__init__()
        self.filters = int(filters)
        self.kh, self.kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        self.stride = int(stride)
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, (pad_h, pad_w), 'same' or 'valid', got {padding!r}")
        self.padding = (padding if isinstance(padding, str) else
                        int(padding) if np.isscalar(padding) else tuple(int(p) for p in padding))
        #: (top, bottom, left, right) and the part of it the kernels do (every side), set by build
        self.pads, self.pad = None, None
        self.init = init

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        from .spec import conv_padding
        self.k = backend
        c, h, w = input_shape
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        self.pads = conv_padding(padding, (h, w), (self.kh, self.kw), self.stride)
        self.pad = min(self.pads)
        #: the padding the kernels cannot do (uneven sides), done on a copy of x
        self.extra = tuple(p - self.pad for p in self.pads)
        fan_in, fan_out = c * self.kh * self.kw, self.filters * self.kh * self.kw
        self._add_param("w", _init_weights(rng, (self.filters, c, self.kh, self.kw), fan_in, fan_out, self.init))
        self._add_param("b", _init_bias(rng, self.filters, fan_in, self.init))
        oh, ow = self.out_hw(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D {self.kh}x{self.kw} does not fit input {input_shape}")
        return (self.filters, oh, ow)

    @property
    def prepads(self) -> bool:
        """True when part of the padding is applied to a copy of the input (uneven sides)."""
        return any(self.extra)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        top, bottom, left, right = self.extra
        n, c, h, w = x.shape
        out = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
        out[:, :, top:top + h, left:left + w] = x
        return out

    def out_hw(self, h: int, w: int) -> Tuple[int, int]:
        top, bottom, left, right = self.pads
        return (h + top + bottom - self.kh) // self.stride + 1, (w + left + right - self.kw) // self.stride + 1

    def forward(self, x, training=False):
        self.x_shape = x.shape
        shape = (x.shape[0], self.filters) + self.out_hw(x.shape[2], x.shape[3])
        if self.prepads:
            x = self._padded(x)
        self.x = x
        return self.k.conv2d_forward(x, self.params["w"], self.params["b"], self.stride, self.pad,
                                     out=self._out("y", shape, self.k))

    def backward(self, dy):
        dx_out = self._out("dx", self.x.shape, self.k) if self.need_input_grad else None
        dx, dw, db = self.k.conv2d_backward(dy, self.x, self.params["w"], self.stride, self.pad,
                                            need_dx=self.need_input_grad, out=dx_out)
        self.grads["w"][...] = dw
        self.grads["b"][...] = db
        if dx is not None and self.prepads:
            top, _, left, _ = self.extra
            dx = np.ascontiguousarray(dx[:, :, top:top + self.x_shape[2], left:left + self.x_shape[3]])
        return dx

    def describe(self):
        pads = self.pads
        pad = self.padding if pads is None else pads[0] if len(set(pads)) == 1 else list(pads)
        return f"Conv2D({self.filters}, {self.kh}x{self.kw}, stride={self.stride}, pad={pad})"

    def to_spec(self) -> dict:
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"type": "conv2d", "filters": self.filters,
                "kernel_size": self.kh if self.kh == self.kw else [self.kh, self.kw],
                "stride": self.stride, "padding": padding, "init": getattr(self, "spec_init", self.init)}


class ConvReLU(Layer):
    """Conv2D -> ReLU (not followed by a max pool) run as one kernel call: the ReLU is
    applied to each sample's output while it is still in cache, and the backward passes dy
    only where the output is positive as it lays the gradient out (a faster internal path,
    built by :func:`fuse` when the backend has fast paths); parameters and gradients stay
    the conv layer's arrays.  x (N, C, H, W) -> y (N, F, OH, OW) = max(conv(x), 0)."""

    def __init__(self, conv: Conv2D) -> None:
        super().__init__()
        self.conv = conv
        self.params, self.grads = conv.params, conv.grads
        self.need_input_grad = conv.need_input_grad
        self.k, self.dtype = conv.k, conv.dtype

    def forward(self, x, training=False):
        c = self.conv
        self.x = x
        shape = (x.shape[0], c.filters) + c.out_hw(x.shape[2], x.shape[3])
        self.y = self.k.fast.conv2d_relu_forward(x, c.params["w"], c.params["b"], c.stride, c.pad,
                                                 shape[2], shape[3], out=self._out("y", shape, self.k))
        return self.y

    def backward(self, dy):
        c = self.conv
        dx_out = self._out("dx", self.x.shape, self.k) if self.need_input_grad else None
        dx, _, _ = self.k.fast.conv2d_relu_backward(
            np.ascontiguousarray(dy), self.y, self.x, c.params["w"], c.stride, c.pad, self.need_input_grad,
            out=dx_out, dw_out=c.grads["w"], db_out=c.grads["b"])      # written in place
        return dx

    def describe(self):
        return f"fused[{self.conv.describe()} + ReLU]"


class ConvReLUMaxPool(Layer):
    """Conv2D -> ReLU -> MaxPool2D run as one fused kernel (a faster internal path).

    Built by :class:`fastlenet.models.Sequential` from three built layers when
    the backend has the fused kernels; parameters and gradients stay the conv
    layer's arrays, so names, optimizers and checkpoints do not change.
    x (N, C, H, W) -> y (N, F, PH, PW).
    """

    def __init__(self, conv: Conv2D, pool: MaxPool2D, conv_out_shape) -> None:
        super().__init__()
        self.conv, self.pool = conv, pool
        self.params, self.grads = conv.params, conv.grads
        self.need_input_grad = conv.need_input_grad
        self.oh, self.ow = conv_out_shape[1], conv_out_shape[2]
        self.k = conv.k
        self.dtype = conv.dtype
        self.ph, self.pw = pool.out_hw(self.oh, self.ow)

    def forward(self, x, training=False):
        self.x = x
        c, p = self.conv, self.pool
        shape = (x.shape[0], c.filters, self.ph, self.pw)
        y, self.arg = self.k.fast.conv2d_relu_maxpool_forward(
            x, c.params["w"], c.params["b"], c.stride, c.pad, self.oh, self.ow, p.size, p.stride,
            out=self._out("y", shape, self.k), arg_out=self._out("arg", shape, self.k, np.int32))
        return y

    def backward(self, dy):
        c, p = self.conv, self.pool
        dx_out = self._out("dx", self.x.shape, self.k) if self.need_input_grad else None
        dx, dw, db = self.k.fast.conv2d_relu_maxpool_backward(
            np.ascontiguousarray(dy), self.arg, self.x, c.params["w"], c.stride, c.pad, self.oh,
            self.ow, p.size, p.stride, self.need_input_grad, out=dx_out,
            dw_out=c.grads["w"], db_out=c.grads["b"])      # written in place
        return dx

    def describe(self):
        return f"fused[{self.conv.describe()} + ReLU + {self.pool.describe()}]"


def _fused(a, pool, shape):
    """The fused layer running ``a`` -> ReLU (-> the MaxPool2D ``pool`` when given), or None
    when ``a``'s backend has no fast path for it."""
    if isinstance(a, Conv2D) and not a.prepads and a.k.fast is not None:
        return ConvReLUMaxPool(a, pool, shape) if pool is not None else ConvReLU(a)
    if isinstance(a, BatchNorm) and len(shape) == 3 and a.k.fast is not None:     # on planes
        return BatchNormReLUMaxPool(a, pool) if pool is not None else BatchNormReLU(a)
    if isinstance(a, Dense) and pool is None and a.fast is not None:
        return DenseReLU(a)
    return None


def fuse(layers, shapes):
    """The layers to run: each Conv2D -> ReLU -> MaxPool2D becomes one ConvReLUMaxPool
    when the conv's backend has fast paths (``Backend.fast``), any other Conv2D -> ReLU one
    ConvReLU, each BatchNorm -> ReLU -> MaxPool2D on planes one BatchNormReLUMaxPool and
    any other BatchNorm -> ReLU on planes one BatchNormReLU, each Dense -> ReLU one
    DenseReLU likewise; everything else runs as is."""
    out, i = [], 0
    while i < len(layers):
        a, fused, taken = layers[i], None, 1
        if i + 1 < len(layers) and isinstance(layers[i + 1], ReLU):
            if i + 2 < len(layers) and isinstance(layers[i + 2], MaxPool2D):
                fused, taken = _fused(a, layers[i + 2], shapes[i]), 3
            if fused is None:
                fused, taken = _fused(a, None, shapes[i]), 2
        out.append(fused if fused is not None else a)
        i += taken if fused is not None else 1
    return out


# --------------------------------------------------------------------------- pooling
class _Pool2D(Layer):
    def __init__(self, size: int = 2, stride: Optional[int] = None) -> None:
        super().__init__()
        self.size = int(size)
        self.stride = self.size if stride is None else int(stride)

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        self.k = backend
        return (input_shape[0],) + self.out_hw(*input_shape[1:])

    def out_hw(self, h: int, w: int) -> Tuple[int, int]:
        return (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1

    def describe(self):
        return f"{type(self).__name__}({self.size}, stride={self.stride})"

    def to_spec(self) -> dict:
        out = {"type": self.spec_type, "size": self.size}
        if self.stride != self.size:
            out["stride"] = self.stride
        return out


class MaxPool2D(_Pool2D):
    """x (N, C, H, W) -> (N, C, OH, OW), the max of each window."""

    spec_type = "maxpool2d"

    def forward(self, x, training=False):
        shape = (x.shape[0], x.shape[1]) + self.out_hw(x.shape[2], x.shape[3])
        y, self.arg = self.k.maxpool2d_forward(x, self.size, self.stride, out=self._out("y", shape, self.k),
                                               arg_out=self._out("arg", shape, self.k, np.int32))
        self.x_shape = x.shape
        return y

    def backward(self, dy):
        return self.k.maxpool2d_backward(dy, self.arg, self.x_shape, self.size, self.stride,
                                         out=self._out("dx", self.x_shape, self.k))


class AvgPool2D(_Pool2D):
    """x (N, C, H, W) -> (N, C, OH, OW), the mean of each window."""

    spec_type = "avgpool2d"

    def forward(self, x, training=False):
        self.x_shape = x.shape
        shape = (x.shape[0], x.shape[1]) + self.out_hw(x.shape[2], x.shape[3])
        return self.k.avgpool2d_forward(x, self.size, self.stride, out=self._out("y", shape, self.k))

    def backward(self, dy):
        return self.k.avgpool2d_backward(dy, self.x_shape, self.size, self.stride,
                                         out=self._out("dx", self.x_shape, self.k))


class GlobalAvgPool2D(Layer):
    """x (N, C, H, W) -> (N, C), the mean of each channel's plane; dx = dy / (H W)
    spread over the plane."""

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D needs (C, H, W) inputs, got {input_shape}")
        self.in_shape = tuple(input_shape)
        return (input_shape[0],)

    def forward(self, x, training=False):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3), dtype=x.dtype)

    def backward(self, dy):
        n, c, h, w = self.x_shape
        scaled = (dy / np.asarray(h * w, dy.dtype)).astype(dy.dtype, copy=False)
        return np.ascontiguousarray(np.broadcast_to(scaled[:, :, None, None], self.x_shape))

    def to_spec(self) -> dict:
        return {"type": "global_avgpool2d"}


# --------------------------------------------------------------------------- dense and reshaping
class Dense(Layer):
    """x (N, D) -> y (N, U) = x @ w + b; w (D, U), b (U,)."""

    def __init__(self, units: int, init: str = "he") -> None:
        super().__init__()
        self.units = int(units)
        self.init = init

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        if len(input_shape) != 1:
            raise ValueError(f"Dense needs flat inputs (D,), got {input_shape}; add a Flatten layer")
        d = input_shape[0]
        self._add_param("w", _init_weights(rng, (d, self.units), d, self.units, self.init))
        self._add_param("b", _init_bias(rng, self.units, d, self.init))
        #: the backend's fast paths (its threaded dense products), or None (NumPy's BLAS)
        self.k = backend
        self.fast = backend.fast
        return (self.units,)

    def forward(self, x, training=False):
        if self.fast is not None:
            return self.linear_forward(x, relu=False)
        self.x = x
        y = x @ self.params["w"]
        y += self.params["b"]
        return y

    def backward(self, dy):
        if self.fast is not None:
            return self.linear_backward(dy, dy, relu=False)
        np.matmul(self.x.T, dy, out=self.grads["w"])       # dW = x^T dy   (D, U)
        np.sum(dy, axis=0, out=self.grads["b"])            # db = sum_n dy (U,)
        return dy @ self.params["w"].T if self.need_input_grad else None

    def linear_forward(self, x, relu):
        """The backend's fast path: x @ w + b (ReLU'd with ``relu``); keeps x for backward."""
        self.x = np.ascontiguousarray(x, dtype=self.dtype)
        return self.fast.linear_forward(self.x, self.params["w"], self.params["b"], relu,
                                        out=self._out("y", (x.shape[0], self.units), self.k))

    def linear_backward(self, dy, y, relu):
        """Its gradients: dW, db written into self.grads; returns dx (or None).
        With ``relu``, dy passes only where the forward output y > 0."""
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        out = self._out("dx", self.x.shape, self.k) if self.need_input_grad else None
        return self.fast.linear_backward(dy, self.x, self.params["w"], y, relu, self.need_input_grad,
                                         self.grads["w"], self.grads["b"], out=out)

    def describe(self):
        return f"Dense({self.units})"

    def to_spec(self) -> dict:
        return {"type": "dense", "units": self.units, "init": getattr(self, "spec_init", self.init)}


class DenseReLU(Layer):
    """Dense -> ReLU run as one kernel call, bias and ReLU applied as the product's rows
    are stored (a faster internal path, built by :func:`fuse` when the backend has
    ``linear``); parameters and gradients stay the dense layer's arrays.
    x (N, D) -> y (N, U) = max(x @ w + b, 0)."""

    def __init__(self, dense: Dense) -> None:
        self.dense = dense
        super().__init__()
        self.params, self.grads = dense.params, dense.grads
        self.need_input_grad = dense.need_input_grad

    @property
    def keeps_output(self) -> bool:
        """The dense layer's: its buffer is what this layer returns."""
        return self.dense.keeps_output

    @keeps_output.setter
    def keeps_output(self, keep: bool) -> None:
        self.dense.keeps_output = keep

    def forward(self, x, training=False):
        self.y = self.dense.linear_forward(x, relu=True)
        return self.y

    def backward(self, dy):
        return self.dense.linear_backward(dy, self.y, relu=True)

    def describe(self):
        return f"fused[{self.dense.describe()} + ReLU]"


class Flatten(Layer):
    """x (N, ...) -> (N, prod(...)); a view, no copy."""

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        self.in_shape = input_shape
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape((dy.shape[0],) + tuple(self.in_shape))

    def to_spec(self) -> dict:
        return {"type": "flatten"}


# --------------------------------------------------------------------------- activations
class ReLU(Layer):
    """y = max(x, 0); dy passes where x > 0."""

    spec_type = "relu"

    def forward(self, x, training=False):
        self.mask = x > 0
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, dy):
        return dy * self.mask

    def to_spec(self) -> dict:
        return {"type": self.spec_type}


class LeakyReLU(Layer):
    """y = x where x > 0, else alpha * x; dy * (1 where x > 0, else alpha)."""

    spec_type = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"LeakyReLU alpha must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        self.slope = np.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))
        return x * self.slope

    def backward(self, dy):
        return dy * self.slope

    def describe(self):
        return f"LeakyReLU({self.alpha:g})"

    def to_spec(self) -> dict:
        return {"type": "leaky_relu", "alpha": self.alpha}


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed without overflow; dy * y * (1 - y)."""

    init = "glorot"
    spec_type = "sigmoid"
    to_spec = ReLU.to_spec

    def forward(self, x, training=False):
        e = np.exp(-np.abs(x))                            # in (0, 1]: never overflows
        self.y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self.y

    def backward(self, dy):
        return dy * self.y * (1 - self.y)


class Tanh(Layer):
    """y = tanh(x); dy * (1 - y^2)."""

    init = "glorot"
    spec_type = "tanh"
    to_spec = ReLU.to_spec

    def forward(self, x, training=False):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y * self.y)


ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
#: every activation layer by its model-file type
ACTIVATION_LAYERS = {**ACTIVATIONS, "leaky_relu": LeakyReLU}


# --------------------------------------------------------------------------- normalisation, dropout
class BatchNorm(Layer):
    """Batch normalisation over the batch (and spatial axes for (N, C, H, W) inputs).

    Training: x_hat = (x - mean_B) / sqrt(var_B + eps), y = gamma * x_hat + beta,
    and running statistics ``running_mean``/``running_var`` (unbiased variance)
    are updated with ``momentum``: running = (1 - momentum) * running + momentum * batch,
    PyTorch's convention (its defaults: 0.1, 1e-5).  Keras writes the other weight:
    its ``momentum=0.99, epsilon=1e-3`` is ``BatchNorm(momentum=0.01, eps=1e-3)`` here.
    Inference uses the running statistics.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = float(momentum), float(eps)

    def build(self, input_shape, rng, dtype, backend):
        super().build(input_shape, rng, dtype, backend)
        self.k = backend
        c = input_shape[0]
        self._add_param("gamma", np.ones(c))
        self._add_param("beta", np.zeros(c))
        self.buffers["running_mean"] = np.zeros(c, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(c, dtype=self.dtype)
        return input_shape

    def _shape(self, x):
        """Axes reduced over and the broadcast shape of per-channel vectors."""
        if x.ndim == 4:
            return (0, 2, 3), (1, -1, 1, 1)
        return (0,), (1, -1)

    def forward(self, x, training=False):
        axes, bshape = self._shape(x)
        if training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            self.update_running(mean, var, x.size // mean.size)
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self.x_hat = (x - mean.reshape(bshape)) * self.inv_std.reshape(bshape)
        return self.x_hat * self.params["gamma"].reshape(bshape) + self.params["beta"].reshape(bshape)

    def update_running(self, mean, var, count: int) -> None:
        """running = (1 - momentum) * running + momentum * batch (the variance unbiased)."""
        m = self.momentum
        self.buffers["running_mean"] *= 1 - m
        self.buffers["running_mean"] += m * mean
        self.buffers["running_var"] *= 1 - m
        self.buffers["running_var"] += m * var * (count / max(count - 1, 1))

    def backward(self, dy):
        # dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))  (batch statistics)
        axes, bshape = self._shape(dy)
        np.sum(dy, axis=axes, out=self.grads["beta"])
        np.sum(dy * self.x_hat, axis=axes, out=self.grads["gamma"])
        count = dy.size // self.grads["beta"].size
        mean_dy = (self.grads["beta"] / count).reshape(bshape)
        mean_dyx = (self.grads["gamma"] / count).reshape(bshape)
        scale = (self.params["gamma"] * self.inv_std).reshape(bshape)
        return scale * (dy - mean_dy - self.x_hat * mean_dyx)

    def describe(self):
        return f"BatchNorm(momentum={self.momentum:g}, eps={self.eps:g})"

    def to_spec(self) -> dict:
        return {"type": "batchnorm", "momentum": self.momentum, "eps": self.eps}


class BatchNormReLUMaxPool(Layer):
    """BatchNorm -> ReLU -> MaxPool2D on (N, C, H, W) as one fast path of a compiled
    backend (``batchnorm_stats`` + ``batchnorm_relu_maxpool_forward/backward``): two
    passes over the input instead of NumPy's dozen, and the ReLU'd normalised plane is
    never stored.  Parameters, gradients and buffers stay the BatchNorm layer's, so
    names, optimizers and checkpoints do not change.  x (N, C, H, W) -> y (N, C, PH, PW).
    """

    def __init__(self, bn: BatchNorm, pool: Optional[MaxPool2D]) -> None:
        super().__init__()
        self.bn, self.pool = bn, pool
        #: the pool window; 1 x 1 stride 1 without a pool (BatchNormReLU): y = relu(bn(x))
        self.size, self.stride = (pool.size, pool.stride) if pool is not None else (1, 1)
        self.params, self.grads, self.buffers = bn.params, bn.grads, bn.buffers
        self.k, self.dtype = bn.k, bn.dtype

    def forward(self, x, training=False):
        bn, fast = self.bn, self.k.fast
        if training:
            mean, var = fast.batchnorm_stats(x)
            bn.update_running(mean, var, x.size // x.shape[1])
        else:
            mean, var = (bn.buffers[k].astype(np.float64) for k in ("running_mean", "running_var"))
        self.x, self.mean, self.inv_std = x, mean, 1.0 / np.sqrt(var + bn.eps)
        ph, pw = (x.shape[2] - self.size) // self.stride + 1, (x.shape[3] - self.size) // self.stride + 1
        shape = (x.shape[0], x.shape[1], ph, pw)
        y, self.arg = fast.batchnorm_relu_maxpool_forward(
            x, bn.params["gamma"], bn.params["beta"], self.mean, self.inv_std, self.size,
            self.stride, out=self._out("y", shape, self.k), arg_out=self._out("arg", shape, self.k, np.int32))
        return y

    def backward(self, dy):
        return self.k.fast.batchnorm_relu_maxpool_backward(
            np.ascontiguousarray(dy), self.arg, self.x, self.bn.params["gamma"], self.mean, self.inv_std,
            self.grads["gamma"], self.grads["beta"], out=self._out("dx", self.x.shape, self.k))

    def describe(self):
        return f"fused[{self.bn.describe()} + ReLU + {self.pool.describe()}]"


class BatchNormReLU(BatchNormReLUMaxPool):
    """BatchNorm -> ReLU on (N, C, H, W) (no max pool after it) as the same fast path with a
    1 x 1 window: y = relu(bn(x)), arg = each position's own index where y > 0, else -1
    (the gradient passes only there).  Two compiled passes instead of NumPy's dozen and a
    separate ReLU.  x (N, C, H, W) -> y (N, C, H, W)."""

    def __init__(self, bn: BatchNorm) -> None:
        super().__init__(bn, None)

    def describe(self):
        return f"fused[{self.bn.describe()} + ReLU]"


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and
    scale the survivors by 1/(1-rate); identity at inference.

    The masks come from ``self.rng``; a :class:`~fastlenet.models.Sequential`
    replaces it before every training batch (:meth:`Sequential.reseed`) with one
    derived from (seed, epoch, batch, layer), so a resumed run draws the same masks."""

    def __init__(self, rate: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(seed)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape) >= self.rate
        self.mask = keep.astype(x.dtype) / (1.0 - self.rate)
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask

    def describe(self):
        return f"Dropout({self.rate})"

    def to_spec(self) -> dict:
        return {"type": "dropout", "rate": self.rate}
