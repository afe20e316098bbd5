"""Sequential models and the LeNet-5 presets.

Dimension legend: N batch, C channels, H/W height/width.

``build(name, backend=None, seed=0, dtype=np.float32, **overrides)`` returns a
:class:`Sequential`; ``model.params`` / ``model.grads`` are dicts
``"<layer>.<param>" -> array`` with the same keys (the arrays the layers own,
so optimizers update them in place).

Weight initialisation (seeded, identical on every backend): He normal,
std sqrt(2 / fan_in), for layers followed by ReLU; Glorot uniform,
+-sqrt(6 / (fan_in + fan_out)), for sigmoid/tanh and for the output layer;
biases zero; batch-norm gamma 1, beta 0.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from . import kernels
from .buffers import OutputBuffers
from .flat import flat_views
from .layers import (ACTIVATIONS, AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, Layer,
                     MaxPool2D, fuse)
from .losses import softmax_cross_entropy


class Sequential:
    """A stack of layers, built for one input shape (C, H, W), dtype and backend."""

    def __init__(self, layers: List[Layer], input_shape: Tuple[int, ...], backend=None,
                 seed: int = 0, dtype=np.float32, name: str = "sequential", config: Optional[dict] = None,
                 fused: bool = True):
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.backend = kernels.default_backend() if backend is None else (
            kernels.backend(backend) if isinstance(backend, str) else backend)
        self.name = name
        self.config = dict(config or {})
        rng = np.random.default_rng(seed)
        shape = self.input_shape
        self.shapes = []
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        self.buffers: Dict[str, np.ndarray] = {}
        counts: Dict[str, int] = {}
        self.layer_names = []
        for layer in self.layers:
            shape = layer.build(shape, rng, self.dtype, self.backend)
            self.shapes.append(shape)
            kind = type(layer).__name__.lower()
            counts[kind] = counts.get(kind, 0) + 1
            lname = f"{kind}{counts[kind]}"
            self.layer_names.append(lname)
            for key in layer.params:
                self.params[f"{lname}.{key}"] = layer.params[key]
                self.grads[f"{lname}.{key}"] = layer.grads[key]
            for key in layer.buffers:
                self.buffers[f"{lname}.{key}"] = layer.buffers[key]
        self.flat_params, self.flat_grads = self._pack("params"), self._pack("grads")
        if self.layers:
            self.layers[0].need_input_grad = False   # nobody needs d(loss)/d(image)
        self.output_shape = shape
        #: what forward/backward run: the layers, with fusable runs fused (layers.fuse)
        self.runnable = fuse(self.layers, self.shapes) if fused else list(self.layers)
        if self.runnable:       # the logits go to the caller: a new array every call
            self.runnable[-1].keeps_output = False
        #: buffers the model owns: the loss gradient d(loss)/d(logits)
        self.outputs = OutputBuffers()

    def _pack(self, which: str) -> np.ndarray:
        """Move every layer's ``params`` (or ``grads``) end to end into one new flat
        buffer (P,), in ``self.params`` order, and make the layers and the model's dict
        hold views of it.  An optimizer then updates the whole model in one pass
        (optim.Adam); names, shapes and values do not change."""
        arrays = getattr(self, which)
        flat, views = flat_views({name: a.shape for name, a in arrays.items()}, self.dtype)
        for name, a in arrays.items():
            views[name][...] = a
        for lname, layer in zip(self.layer_names, self.layers):
            owned = getattr(layer, which)
            for key in owned:
                owned[key] = views[f"{lname}.{key}"]
        setattr(self, which, views)          # a FlatArrays: it declares its one buffer
        return flat

    # ------------------------------------------------------------------ running
    def _check_input(self, x):
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) -> logits (N, classes)."""
        x = self._check_input(x)
        with kernels.blas_limit(self.backend.name):
            for layer in self.runnable:
                x = layer.forward(x, training)
        return x

    def backward(self, dlogits: np.ndarray) -> None:
        """Backpropagate d(loss)/d(logits) (N, classes); fills ``self.grads``."""
        g = dlogits
        with kernels.blas_limit(self.backend.name):
            for layer in reversed(self.runnable):
                g = layer.backward(g)
                if g is None:
                    break

    def forward_backward(self, x: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0):
        """One training-mode forward and backward (fills ``self.grads``): -> (loss, logits)."""
        logits = self.forward(x, training=True)
        fast = self.backend.fast
        grad_out = self.outputs.get("dlogits", logits.shape, self.dtype) if self.backend.writes_out else None
        loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing,
                                              kernel=None if fast is None else fast.softmax_cross_entropy,
                                              out=grad_out)
        self.backward(dlogits)
        return loss, logits

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0):
        """One training-mode forward and backward: returns (loss, grads)."""
        loss, _ = self.forward_backward(x, y, label_smoothing)
        return loss, self.grads

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class ids (N,) in inference mode, in batches."""
        return np.concatenate([self.forward(x[i:i + batch_size]).argmax(axis=1)
                               for i in range(0, len(x), batch_size)])

    # ------------------------------------------------------------------ describing
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def summary(self) -> str:
        """A table: layer, output shape, parameter count, and the total."""
        rows = [("layer", "output shape", "params")]
        for lname, layer, shape in zip(self.layer_names, self.layers, self.shapes):
            count = sum(p.size for p in layer.params.values())
            rows.append((f"{lname}: {layer.describe()}", str(tuple(shape)), f"{count:,}"))
        rows.append(("total", "", f"{self.num_params():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(-1, "-" * len(lines[0]))
        return f"{self.name} (input {self.input_shape}, {self.dtype.name}, backend {self.backend.name})\n" + "\n".join(lines)


# --------------------------------------------------------------------------- presets
def _pool(kind):
    if kind not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {kind!r}")
    return MaxPool2D(2) if kind == "max" else AvgPool2D(2)


def _act(kind):
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {kind!r}")
    return ACTIVATIONS[kind]()


def _init_for(activation):
    return "he" if activation == "relu" else "glorot"


def _lenet5(activation, pool, num_classes, dense_activation=None):
    """28x28: C1 5x5 pad 2 (6) - pool - C3 5x5 (16) - pool - 120 - 84 - classes."""
    da = dense_activation or activation
    a, d = _init_for(activation), _init_for(da)
    return (1, 28, 28), [
        Conv2D(6, 5, padding=2, init=a), _act(activation), _pool(pool),
        Conv2D(16, 5, init=a), _act(activation), _pool(pool),
        Flatten(),
        Dense(120, init=d), _act(da),
        Dense(84, init=d), _act(da),
        Dense(num_classes, init="glorot"),
    ]


def _lenet5_1998(activation, pool, num_classes, dense_activation=None):
    """32x32: C1 5x5 (6) - S2 - C3 5x5 (16) - S4 - C5 5x5 conv (120) - F6 84 - classes."""
    da = dense_activation or activation
    a, d = _init_for(activation), _init_for(da)
    return (1, 32, 32), [
        Conv2D(6, 5, init=a), _act(activation), _pool(pool),
        Conv2D(16, 5, init=a), _act(activation), _pool(pool),
        Conv2D(120, 5, init=a), _act(activation),
        Flatten(),
        Dense(84, init=d), _act(da),
        Dense(num_classes, init="glorot"),
    ]


def _lenet5_bn(activation, pool, num_classes, dense_activation=None):
    """28x28: 3x3 conv (6, same) - BN - act - pool - 3x3 conv (16) - BN - act - pool - 120 - 84 - classes."""
    da = dense_activation or activation
    a, d = _init_for(activation), _init_for(da)
    return (1, 28, 28), [
        Conv2D(6, 3, padding="same", init=a), BatchNorm(), _act(activation), _pool(pool),
        Conv2D(16, 3, init=a), BatchNorm(), _act(activation), _pool(pool),
        Flatten(),
        Dense(120, init=d), BatchNorm(), _act(da),
        Dense(84, init=d), BatchNorm(), _act(da),
        Dense(num_classes, init="glorot"),
    ]


#: name -> (builder, default activation, default pool)
PRESETS = {
    "lenet5": (_lenet5, "relu", "max"),
    "lenet5-classic": (_lenet5, "sigmoid", "avg"),
    "lenet5-1998": (_lenet5_1998, "tanh", "avg"),
    "lenet5-bn": (_lenet5_bn, "relu", "max"),
}


def preset_input_shape(name: str) -> Tuple[int, int, int]:
    """The (C, H, W) input a preset takes."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name][0]("relu", "max", 10)[0]


def build(name: str, backend=None, seed: int = 0, dtype=np.float32, activation: Optional[str] = None,
          pool: Optional[str] = None, dense_activation: Optional[str] = None,
          num_classes: int = 10, fused: bool = True) -> Sequential:
    """Build a preset: ``lenet5``, ``lenet5-classic``, ``lenet5-1998`` or ``lenet5-bn``.

    ``activation`` / ``pool`` override the preset's (relu|sigmoid|tanh, max|avg);
    ``dense_activation`` gives the dense layers a different activation.
    ``fused=False`` runs every layer separately (the fused conv+ReLU+pool path off).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}")
    builder, default_act, default_pool = PRESETS[name]
    activation = activation or default_act
    pool = pool or default_pool
    input_shape, layers = builder(activation, pool, int(num_classes), dense_activation)
    config = dict(name=name, activation=activation, pool=pool, dense_activation=dense_activation,
                  num_classes=int(num_classes), seed=int(seed), dtype=np.dtype(dtype).name)
    return Sequential(layers, input_shape, backend=backend, seed=seed, dtype=dtype, name=name, config=config,
                      fused=fused)
