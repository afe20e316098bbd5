"""Model files: a network as data (JSON), checked completely before anything is built.

A model file describes one :class:`fastlenet.models.Sequential`::

    {"format": "fastlenet-model", "version": 1, "name": "my-net",
     "input_shape": [3, 32, 32], "num_classes": 10, "dtype": "float32",
     "layers": [
       {"type": "conv2d", "filters": 32, "kernel_size": 3, "padding": "same"},
       {"type": "relu"},
       {"type": "maxpool2d", "size": 2},
       {"type": "flatten"},
       {"type": "dense", "units": 10}]}

Shapes are (C, H, W) with no batch axis.  :func:`check` fills every default, infers
every layer's output shape, and bounds sizes (parameters, activations, layer count)
from the numbers alone, so an edited file cannot make the builder allocate
gigabytes.  Errors are :class:`SpecError` naming the layer index, its type and the
field.  ``LAYERS`` lists each type's fields and defaults (``REQUIRED``: no default).

``init`` is ``"auto"`` (He normal before ReLU / LeakyReLU, Glorot uniform before
sigmoid / tanh or when no activation follows), ``"he"``, ``"glorot"``, ``"lecun"``,
``"keras"`` (Glorot uniform, zero bias: Keras' default) or ``"torch"`` (weights and
biases uniform +-1/sqrt(fan_in): PyTorch's default), see fastlenet.layers;
``padding`` is an int, ``[pad_h, pad_w]``, ``"valid"`` (0) or ``"same"`` (output
``ceil(size / stride)``; any kernel size, the odd pixel after, as Keras and
TensorFlow pad).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Tuple

FORMAT = "fastlenet-model"
VERSION = 1
REQUIRED = object()

#: type -> {field: default}; every field a layer accepts
LAYERS: Dict[str, Dict[str, Any]] = {
    "conv2d": {"filters": REQUIRED, "kernel_size": REQUIRED, "stride": 1, "padding": 0, "init": "auto",
               "in_channels": None},
    "maxpool2d": {"size": 2, "stride": None},
    "avgpool2d": {"size": 2, "stride": None},
    "global_avgpool2d": {},
    "flatten": {},
    "dense": {"units": REQUIRED, "init": "auto", "in_features": None},
    "relu": {}, "sigmoid": {}, "tanh": {},
    "leaky_relu": {"alpha": 0.01},
    "batchnorm": {"momentum": 0.1, "eps": 1e-5},
    "dropout": {"rate": 0.5},
}
ACTIVATION_TYPES = ("relu", "leaky_relu", "sigmoid", "tanh")
POOL_TYPES = ("maxpool2d", "avgpool2d")
INITS = ("auto", "he", "glorot", "lecun", "keras", "torch")
DTYPES = ("float32", "float64")
TOP_FIELDS = {"format", "version", "name", "description", "input_shape", "num_classes", "dtype", "layers"}

#: bounds checked before building (per image, no batch axis)
MAX_LAYERS = 256
MAX_SIDE = 4096
MAX_CHANNELS = 4096
MAX_ACTIVATION = 1 << 24          # values in any layer's output
MAX_PARAMS = 1 << 26              # trained values in the whole model (256 MB as float32)

Shape = Tuple[int, ...]


class SpecError(ValueError):
    """A model file that cannot describe a network; the message names the layer and field."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Checks one model file; ``where`` prefixes every message."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, problem: str, index: Optional[int] = None, kind: Optional[str] = None) -> SpecError:
        at = f"layer {index} ({kind}): " if index is not None else ""
        return SpecError(f"{self.where}: {at}{problem}")

    def int_field(self, value, name, lo, hi, index=None, kind=None) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            raise self.fail(f"field '{name}' must be an integer in [{lo}, {hi}], got {_shown(value)}", index, kind)
        return value

    def pair(self, value, name, lo, hi, index, kind) -> Tuple[int, int]:
        """An int or [a, b] -> (a, b)."""
        if isinstance(value, list) and len(value) == 2:
            return (self.int_field(value[0], name, lo, hi, index, kind),
                    self.int_field(value[1], name, lo, hi, index, kind))
        if _is_int(value):
            v = self.int_field(value, name, lo, hi, index, kind)
            return v, v
        raise self.fail(f"field '{name}' must be an integer or [height, width], got {_shown(value)}", index, kind)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """"same" padding (before, after) of one axis: output ceil(size / stride), as TensorFlow pads."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_padding(padding, in_hw: Tuple[int, int], kernel: Tuple[int, int], stride: int) -> Tuple[int, int, int, int]:
    """A checked conv layer's (top, bottom, left, right) padding for inputs of ``in_hw``."""
    if padding == "same":
        top, bottom = same_padding(in_hw[0], kernel[0], stride)
        left, right = same_padding(in_hw[1], kernel[1], stride)
        return top, bottom, left, right
    if padding == "valid":
        return 0, 0, 0, 0
    ph, pw = (padding, padding) if _is_int(padding) else padding
    return ph, ph, pw, pw


def _fields(c: _Checker, layer, index: int) -> Tuple[str, dict]:
    """The layer's type and its fields with every default filled (unknown or missing refused)."""
    if not isinstance(layer, dict):
        raise c.fail(f"layer {index} must be an object with a 'type', got {_shown(layer)}")
    kind = layer.get("type")
    if not isinstance(kind, str) or kind not in LAYERS:
        raise c.fail(f"layer {index}: unknown type {_shown(kind)}; known types: {', '.join(LAYERS)}")
    known = LAYERS[kind]
    unknown = sorted(set(layer) - set(known) - {"type"})
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise c.fail(f"unknown field '{unknown[0]}' (fields of {kind}: {listed})", index, kind)
    out = {"type": kind}
    for name, default in known.items():
        if name in layer:
            out[name] = layer[name]
        elif default is REQUIRED:
            raise c.fail(f"missing field '{name}'", index, kind)
        elif default is not None:
            out[name] = default
    return kind, out


def _conv(c: _Checker, f: dict, shape: Shape, i: int) -> Tuple[Shape, int]:
    kind = "conv2d"
    if len(shape) != 3:
        raise c.fail(f"needs a (C, H, W) input, got {shape}", i, kind)
    ch, h, w = shape
    if "in_channels" in f and f["in_channels"] != ch:
        raise c.fail(f"field 'in_channels' is {_shown(f['in_channels'])} but its input has {ch} channels", i, kind)
    filters = c.int_field(f["filters"], "filters", 1, MAX_CHANNELS, i, kind)
    kh, kw = c.pair(f["kernel_size"], "kernel_size", 1, MAX_SIDE, i, kind)
    f["kernel_size"] = kh if kh == kw else [kh, kw]
    stride = c.int_field(f["stride"], "stride", 1, MAX_SIDE, i, kind)
    if f["padding"] not in ("same", "valid"):
        ph, pw = c.pair(f["padding"], "padding", 0, MAX_SIDE, i, kind)
        f["padding"] = ph if ph == pw else [ph, pw]
    if f["init"] not in INITS:
        raise c.fail(f"field 'init' must be one of {list(INITS)}, got {_shown(f['init'])}", i, kind)
    top, bottom, left, right = conv_padding(f["padding"], (h, w), (kh, kw), stride)
    if kh > h + top + bottom or kw > w + left + right:
        raise c.fail(f"field 'kernel_size' {kh}x{kw} is larger than its padded input "
                     f"{h + top + bottom}x{w + left + right}", i, kind)
    oh, ow = (h + top + bottom - kh) // stride + 1, (w + left + right - kw) // stride + 1
    return (filters, oh, ow), filters * (ch * kh * kw + 1)


def _pool(c: _Checker, f: dict, shape: Shape, i: int, kind: str) -> Shape:
    if len(shape) != 3:
        raise c.fail(f"needs a (C, H, W) input, got {shape}", i, kind)
    size = c.int_field(f["size"], "size", 1, MAX_SIDE, i, kind)
    stride = size if f.get("stride") is None else c.int_field(f["stride"], "stride", 1, MAX_SIDE, i, kind)
    f.pop("stride", None)
    if stride != size:
        f["stride"] = stride
    ch, h, w = shape
    if size > h or size > w:
        raise c.fail(f"field 'size' {size} is larger than its input {h}x{w}", i, kind)
    return (ch, (h - size) // stride + 1, (w - size) // stride + 1)


def _dense(c: _Checker, f: dict, shape: Shape, i: int) -> Tuple[Shape, int]:
    kind = "dense"
    if len(shape) != 1:
        raise c.fail(f"needs a flat (D,) input, got {shape}; add a flatten layer before it", i, kind)
    if "in_features" in f and f["in_features"] != shape[0]:
        raise c.fail(f"field 'in_features' is {_shown(f['in_features'])} but its input has {shape[0]} "
                     "features", i, kind)
    units = c.int_field(f["units"], "units", 1, MAX_ACTIVATION, i, kind)
    if f["init"] not in INITS:
        raise c.fail(f"field 'init' must be one of {list(INITS)}, got {_shown(f['init'])}", i, kind)
    return (units,), (shape[0] + 1) * units


def _number(c: _Checker, f: dict, name: str, lo: float, hi: float, i: int, kind: str, closed_hi=False) -> None:
    v = f[name]
    if not _is_number(v) or not (lo <= v and (v <= hi if closed_hi else v < hi)):
        raise c.fail(f"field '{name}' must be a number in [{lo}, {hi}{']' if closed_hi else ')'}, "
                     f"got {_shown(v)}", i, kind)
    f[name] = float(v)


def _layer_shape(c: _Checker, kind: str, f: dict, shape: Shape, i: int) -> Tuple[Shape, int]:
    """(output shape, parameter count) of one layer; ``f`` normalised in place."""
    if kind == "conv2d":
        return _conv(c, f, shape, i)
    if kind == "dense":
        return _dense(c, f, shape, i)
    if kind in POOL_TYPES:
        return _pool(c, f, shape, i, kind), 0
    if kind == "global_avgpool2d":
        if len(shape) != 3:
            raise c.fail(f"needs a (C, H, W) input, got {shape}", i, kind)
        return (shape[0],), 0
    if kind == "flatten":
        return (math.prod(shape),), 0
    if kind == "batchnorm":
        _number(c, f, "momentum", 0.0, 1.0, i, kind, closed_hi=True)
        _number(c, f, "eps", 1e-12, 1.0, i, kind)
        if len(shape) not in (1, 3):
            raise c.fail(f"needs a (C, H, W) or (D,) input, got {shape}", i, kind)
        return shape, 2 * shape[0]
    if kind == "dropout":
        _number(c, f, "rate", 0.0, 1.0, i, kind)
    if kind == "leaky_relu":
        _number(c, f, "alpha", 0.0, 1.0, i, kind)
    return shape, 0


def _input_shape(c: _Checker, value) -> Shape:
    if not (isinstance(value, list) and len(value) == 3 and all(_is_int(v) for v in value)):
        raise c.fail(f"'input_shape' must be [C, H, W] (three integers), got {_shown(value)}")
    ch, h, w = value
    if not (1 <= ch <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and ch * h * w <= MAX_ACTIVATION):
        raise c.fail(f"'input_shape' {value} is out of bounds (C <= {MAX_CHANNELS}, H, W <= {MAX_SIDE}, "
                     f"C*H*W <= {MAX_ACTIVATION})")
    return (ch, h, w)


def _header(c: _Checker, spec) -> dict:
    """The top-level fields, checked; the layers are checked by :func:`check`."""
    if not isinstance(spec, dict):
        raise c.fail(f"a model file must hold a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - TOP_FIELDS)
    if unknown:
        raise c.fail(f"unknown field '{unknown[0]}' (fields: {', '.join(sorted(TOP_FIELDS))})")
    if spec.get("format", FORMAT) != FORMAT:
        raise c.fail(f"'format' must be {FORMAT!r}, got {_shown(spec.get('format'))}")
    if spec.get("version", VERSION) != VERSION:
        raise c.fail(f"model file version {_shown(spec.get('version'))} is not supported (this is {VERSION})")
    name = spec.get("name", "custom")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise c.fail(f"'name' must be a string of 1 to 100 characters, got {_shown(name)}")
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise c.fail(f"'dtype' must be one of {list(DTYPES)}, got {_shown(dtype)}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise c.fail(f"'layers' must be a list of 1 to {MAX_LAYERS} layers, got {_shown(layers)}")
    out = {"format": FORMAT, "version": VERSION, "name": name}
    if "description" in spec:
        if not isinstance(spec["description"], str):
            raise c.fail("'description' must be a string")
        out["description"] = spec["description"]
    out.update(input_shape=list(_input_shape(c, spec.get("input_shape"))), dtype=dtype)
    return out


def check(spec, where: str = "model file") -> dict:
    """The model file ``spec`` (parsed JSON) with every default filled in and every
    value checked; raises :class:`SpecError`.  The result's ``"shapes"`` is not part of
    it: see :func:`shapes`."""
    from .data import MAX_CLASSES
    c = _Checker(where)
    out = _header(c, spec)
    shape: Shape = tuple(out["input_shape"])
    total, layers = 0, []
    for i, layer in enumerate(spec["layers"]):
        kind, f = _fields(c, layer, i)
        shape, count = _layer_shape(c, kind, f, shape, i)
        if math.prod(shape) > MAX_ACTIVATION:
            raise c.fail(f"its output {shape} holds more than {MAX_ACTIVATION:,} values per image", i, kind)
        total += count
        if total > MAX_PARAMS:
            raise c.fail(f"the model reaches more than {MAX_PARAMS:,} parameters here", i, kind)
        layers.append(f)
    if len(shape) != 1:
        raise c.fail(f"the last layer's output must be flat (classes,), got {shape}")
    k = spec.get("num_classes", shape[0])
    if not _is_int(k) or not 2 <= k <= MAX_CLASSES:
        raise c.fail(f"'num_classes' must be an integer in [2, {MAX_CLASSES}], got {_shown(k)}")
    if k != shape[0]:
        raise c.fail(f"'num_classes' is {k} but the last layer gives {shape[0]} outputs")
    out["num_classes"] = k
    out["layers"] = layers
    return out


def shapes(spec: dict) -> List[Shape]:
    """Each layer's output shape (no batch axis) of a checked spec."""
    c = _Checker("model file")
    shape: Shape = tuple(spec["input_shape"])
    out = []
    for i, layer in enumerate(spec["layers"]):
        shape, _ = _layer_shape(c, layer["type"], dict(layer), shape, i)
        out.append(shape)
    return out


def with_num_classes(spec: dict, k: int, where: str = "model file") -> dict:
    """A copy of the checked ``spec`` whose output layer gives ``k`` classes: the last
    dense layer's units, when only shape-keeping layers follow it."""
    if spec["num_classes"] == k:
        return spec
    out = copy.deepcopy(spec)
    keeps = set(ACTIVATION_TYPES) | {"batchnorm", "dropout"}
    for layer in reversed(out["layers"]):
        if layer["type"] == "dense":
            layer["units"] = k
            out["num_classes"] = k
            return check(out, where)
        if layer["type"] not in keeps:
            break
    raise SpecError(f"{where}: the model gives {spec['num_classes']} outputs, the data has {k} classes, and its "
                    "last layers are not a dense layer whose units can be changed")


def with_overrides(spec: dict, activation: Optional[str] = None, pool: Optional[str] = None,
                   dense_activation: Optional[str] = None, init: Optional[str] = None,
                   bn_momentum: Optional[float] = None, bn_eps: Optional[float] = None) -> dict:
    """A copy of ``spec`` with every activation layer made ``activation``, those after the
    first flatten / global pooling made ``dense_activation`` (when given), every pooling
    layer ``pool`` ("max" or "avg"), every conv / dense layer's ``init``, every batch
    norm's ``momentum`` / ``eps`` (each only when given)."""
    out = copy.deepcopy(spec)
    flat = False
    for layer in out["layers"]:
        kind = layer["type"]
        if kind in ("conv2d", "dense") and init is not None:
            layer["init"] = init
        if kind == "batchnorm":
            layer.update({k: v for k, v in (("momentum", bn_momentum), ("eps", bn_eps)) if v is not None})
        if kind in ("flatten", "global_avgpool2d"):
            flat = True
        elif kind in ACTIVATION_TYPES:
            wanted = (dense_activation if flat and dense_activation else activation) or kind
            if wanted != kind:
                layer.clear()
                layer.update({"type": wanted})
        elif kind in POOL_TYPES and pool:
            layer["type"] = f"{pool}pool2d"
    return check(out)


def auto_inits(spec: dict) -> List[Optional[str]]:
    """Each layer's resolved initialisation ("he" / "glorot"; None for layers without
    weights): ``auto`` looks at the first activation after the layer, before the next
    conv / dense layer."""
    layers = spec["layers"]
    out: List[Optional[str]] = []
    for i, layer in enumerate(layers):
        if layer["type"] not in ("conv2d", "dense"):
            out.append(None)
            continue
        if layer["init"] != "auto":
            out.append(layer["init"])
            continue
        following = None
        for nxt in layers[i + 1:]:
            if nxt["type"] in ("conv2d", "dense"):
                break
            if nxt["type"] in ACTIVATION_TYPES:
                following = nxt["type"]
                break
        out.append("he" if following in ("relu", "leaky_relu") else "glorot")
    return out
