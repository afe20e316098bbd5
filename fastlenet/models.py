"""Sequential models, built from model files; the LeNet-5 presets are model files too.

Dimension legend: N batch, C channels, H/W height/width.

``build(name_or_path, backend=None, seed=0, dtype=np.float32, **overrides)`` and
``from_spec(spec)`` return a :class:`Sequential`, ``model.to_spec()`` gives its
model file back (fastlenet.spec documents the format); ``model.params`` /
``model.grads`` are dicts ``"<layer>.<param>" -> array`` with the same keys (the
arrays the layers own, so optimizers update them in place).

Weight initialisation (seeded, identical on every backend): He normal,
std sqrt(2 / fan_in), for layers followed by ReLU / LeakyReLU; Glorot uniform,
+-sqrt(6 / (fan_in + fan_out)), for sigmoid/tanh and for the output layer;
biases zero; batch-norm gamma 1, beta 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from . import kernels
from . import spec as spec_mod
from .buffers import OutputBuffers
from .flat import flat_views
from .layers import (ACTIVATIONS, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     LeakyReLU, Layer, MaxPool2D, fuse)
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
        #: (index, layer) of each Dropout, for reseed() before every training batch
        self._dropouts = [(i, layer) for i, layer in enumerate(self.layers) if isinstance(layer, Dropout)]

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

    def reseed(self, key) -> None:
        """Give every Dropout layer a generator derived from ``key`` (e.g. (seed, epoch,
        batch)) and its index: the masks of a batch depend on nothing else."""
        for i, layer in self._dropouts:
            layer.rng = np.random.default_rng([*key, i])

    # ------------------------------------------------------------------ describing
    def to_spec(self) -> dict:
        """The model file of this network (fastlenet.spec): ``from_spec(model.to_spec())``
        builds the same network (the same weights for the same seed)."""
        layers = []
        for lname, layer in zip(self.layer_names, self.layers):
            if not hasattr(layer, "to_spec"):
                raise spec_mod.SpecError(f"layer {lname} ({type(layer).__name__}) has no model-file form")
            layers.append(layer.to_spec())
        doc = {"format": spec_mod.FORMAT, "version": spec_mod.VERSION, "name": self.name,
               "input_shape": list(self.input_shape), "num_classes": int(self.output_shape[0]),
               "dtype": self.dtype.name, "layers": layers}
        description = self.config.get("spec", {}).get("description")
        if description is not None:
            doc["description"] = description
        return spec_mod.check(doc, f"model {self.name}")

    def model_config(self) -> dict:
        """What a checkpoint stores to rebuild this network: its model file (``spec``),
        seed, dtype and class count (never code)."""
        config = dict(self.config)
        if "spec" not in config:
            config.update(name=self.name, spec=self.to_spec(), num_classes=int(self.output_shape[0]),
                          seed=int(config.get("seed", 0)), dtype=self.dtype.name)
        return config

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


# --------------------------------------------------------------------------- model files
PRESET_DIR = Path(__file__).with_name("presets")
#: the presets: model files shipped inside the package (fastlenet/presets/<name>.json)
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))
#: the largest model file read (a real one is a few kB)
MAX_SPEC_BYTES = 1 << 20


def read_spec(source: Union[str, Path]) -> dict:
    """A checked model file: a preset's name (``lenet5``) or the path of a JSON file."""
    path = PRESET_DIR / f"{source}.json" if str(source) in PRESETS else Path(source)
    where = str(source)
    if not path.is_file():
        hint = "" if str(source).endswith(".json") or "/" in str(source) else f"; presets: {', '.join(PRESETS)}"
        raise spec_mod.SpecError(f"{where}: no such model file or preset{hint}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise spec_mod.SpecError(f"{where}: {path.stat().st_size:,} bytes is too large to be a model file "
                                 f"(at most {MAX_SPEC_BYTES:,})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise spec_mod.SpecError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise spec_mod.SpecError(f"{where}: JSON nested too deeply to be a model file") from None
    return spec_mod.check(doc, where)


def _layer(f: dict, init: Optional[str]) -> Layer:
    """One layer object from a checked model-file entry (``init`` resolved)."""
    kind = f["type"]
    if kind == "conv2d":
        layer = Conv2D(f["filters"], f["kernel_size"], f["stride"], f["padding"], init=init)
    elif kind == "dense":
        layer = Dense(f["units"], init=init)
    elif kind in ("maxpool2d", "avgpool2d"):
        layer = (MaxPool2D if kind == "maxpool2d" else AvgPool2D)(f["size"], f.get("stride"))
    elif kind == "batchnorm":
        layer = BatchNorm(f["momentum"], f["eps"])
    elif kind == "dropout":
        layer = Dropout(f["rate"])
    elif kind == "leaky_relu":
        layer = LeakyReLU(f["alpha"])
    else:
        layer = {"global_avgpool2d": GlobalAvgPool2D, "flatten": Flatten, **ACTIVATIONS}[kind]()
    if init is not None:
        layer.spec_init = f["init"]            # to_spec writes what the file said ("auto")
    return layer


def from_spec(spec: dict, backend=None, seed: int = 0, dtype=None, num_classes: Optional[int] = None,
              fused: bool = True, where: str = "model file") -> Sequential:
    """Build the network a model file describes (checked first: :func:`fastlenet.spec.check`).

    ``dtype`` overrides the file's; ``num_classes`` resizes its output layer
    (:func:`fastlenet.spec.with_num_classes`)."""
    spec = spec_mod.check(spec, where)
    if num_classes is not None:
        spec = spec_mod.with_num_classes(spec, int(num_classes), where)
    if dtype is not None and np.dtype(dtype).name != spec["dtype"]:
        spec = spec_mod.check({**spec, "dtype": np.dtype(dtype).name}, where)    # checked like the file
    layers = [_layer(f, init) for f, init in zip(spec["layers"], spec_mod.auto_inits(spec))]
    config = dict(name=spec["name"], spec=spec, num_classes=spec["num_classes"], seed=int(seed), dtype=spec["dtype"])
    return Sequential(layers, tuple(spec["input_shape"]), backend=backend, seed=seed, dtype=spec["dtype"],
                      name=spec["name"], config=config, fused=fused)


def preset_input_shape(name: str) -> Tuple[int, int, int]:
    """The (C, H, W) input a preset (or model file) takes."""
    return tuple(read_spec(name)["input_shape"])


def build(name: str, backend=None, seed: int = 0, dtype=np.float32, activation: Optional[str] = None,
          pool: Optional[str] = None, dense_activation: Optional[str] = None,
          num_classes: int = 10, fused: bool = True, init: Optional[str] = None,
          bn_momentum: Optional[float] = None, bn_eps: Optional[float] = None) -> Sequential:
    """Build a preset (``lenet5``, ``lenet5-classic``, ``lenet5-1998``, ``lenet5-bn``) or
    the model file at path ``name``.

    ``activation`` / ``pool`` override the file's (relu|sigmoid|tanh, max|avg);
    ``dense_activation`` gives the layers after the flatten a different activation;
    ``init`` every conv / dense layer's initialisation; ``bn_momentum`` / ``bn_eps`` every
    batch norm's (:func:`fastlenet.spec.with_overrides`).  ``fused=False`` runs every layer
    separately (the fused conv+ReLU+pool path off).
    """
    for value, allowed, what in ((activation, ACTIVATIONS, "activation"), (dense_activation, ACTIVATIONS,
                                 "dense_activation"), (pool, ("max", "avg"), "pool")):
        if value is not None and value not in allowed:
            raise ValueError(f"{what} must be one of {sorted(allowed)}, got {value!r}")
    if str(name) not in PRESETS and not Path(name).is_file():
        raise ValueError(f"unknown model {name!r}; choose one of {list(PRESETS)} or the path of a model file")
    spec = spec_mod.with_overrides(read_spec(name), activation, pool, dense_activation, init, bn_momentum, bn_eps)
    return from_spec(spec, backend=backend, seed=seed, dtype=dtype, num_classes=num_classes, fused=fused,
                     where=str(name))
