"""The JSON document inside a checkpoint, checked field by field before anything uses it.

A checkpoint's ``meta`` is text anyone can edit.  Two parts of it decide what a
reader does, so both are bounded here, each failure a one-line
:class:`~fastlenet.checkpoint.CheckpointError` naming the field:

* ``model`` -- the config the model is rebuilt from: a known preset, known
  activations and pooling, a float dtype, a seed, and ``num_classes`` in
  2..:data:`~fastlenet.data.MAX_CLASSES` (checked *before* building, so an edited
  number cannot make the builder allocate gigabytes);
* what inference applies (:class:`Inference`): the standardisation statistics
  (finite numbers, ``std`` > 0, both or neither), the class names (one string per
  output) and the stored image size (the size images had before any padding to
  the model's input; older checkpoints: 28 when ``--pad32`` padded them, else the
  model's input size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

ACTIVATIONS = ("relu", "sigmoid", "tanh")
POOLS = ("max", "avg")
DTYPES = ("float32", "float64")


def _error(path, field: str, problem: str, value) -> Exception:
    from .checkpoint import CheckpointError
    shown = repr(value)
    return CheckpointError(f"{path}: meta {field} {problem}, got {shown[:60]}{'...' if len(shown) > 60 else ''}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_model_config(config, path) -> dict:
    """The ``model`` field, every value the builder reads checked and bounded: its model
    file (``spec``, fastlenet.spec) or, in checkpoints written before model files, a
    preset's name and overrides."""
    from .data import MAX_CLASSES
    from .models import PRESETS
    from .spec import SpecError, check
    if not isinstance(config, dict):
        raise _error(path, "'model'", "must be an object (the model config)", config)
    if "spec" in config:
        try:
            spec = check(config["spec"], f"{path}: meta model.spec")
        except SpecError as exc:
            from .checkpoint import CheckpointError
            raise CheckpointError(str(exc)) from None
        seed = config.get("seed", 0)
        if not (_is_int(seed) and 0 <= seed < 2 ** 32):
            raise _error(path, "model.seed", "must be an integer in [0, 2**32)", seed)
        return {"name": spec["name"], "spec": spec, "seed": seed, "dtype": spec["dtype"],
                "num_classes": spec["num_classes"]}
    checks = [
        ("name", lambda v: v in PRESETS, f"must be one of {sorted(PRESETS)}"),
        ("activation", lambda v: v is None or v in ACTIVATIONS, f"must be one of {list(ACTIVATIONS)}"),
        ("dense_activation", lambda v: v is None or v in ACTIVATIONS, f"must be null or one of {list(ACTIVATIONS)}"),
        ("pool", lambda v: v is None or v in POOLS, f"must be one of {list(POOLS)}"),
        ("dtype", lambda v: v in DTYPES, f"must be one of {list(DTYPES)}"),
        ("seed", lambda v: _is_int(v) and 0 <= v < 2 ** 32, "must be an integer in [0, 2**32)"),
        ("num_classes", lambda v: _is_int(v) and 2 <= v <= MAX_CLASSES, f"must be an integer in [2, {MAX_CLASSES}]"),
    ]
    defaults = {"activation": None, "dense_activation": None, "pool": None, "dtype": "float32",
                "seed": 0, "num_classes": 10}
    for key, ok, problem in checks:
        value = config.get(key, defaults.get(key))
        if key == "name" and key not in config:
            raise _error(path, "'model'", "has no 'name'", config)
        try:
            good = ok(value)
        except TypeError:                        # an unhashable value tested for membership
            good = False
        if not good:
            raise _error(path, f"model.{key}", problem, value)
    return {**defaults, **config}


@dataclass(frozen=True)
class Inference:
    """What a reader applies to images before the model (all checked)."""

    mean: Optional[Tuple[float, ...]]       # per channel
    std: Optional[Tuple[float, ...]]
    class_names: Tuple[str, ...]
    image_size: Tuple[int, int]             # (H, W) of the images the model was trained on, before padding


def inference(meta: dict, path, input_shape: Tuple[int, int, int], num_outputs: int) -> Inference:
    """The checked :class:`Inference` of a checkpoint whose model takes ``input_shape``."""
    mean, std = meta.get("mean"), meta.get("std")
    if (mean is None) != (std is None):
        raise _error(path, "'mean'/'std'", "must both be numbers or both be null", [mean, std])
    channels = input_shape[0]
    mean = None if mean is None else _statistic(path, "'mean'", mean, channels, lambda v: True)
    std = None if std is None else _statistic(path, "'std'", std, channels, lambda v: v > 0, " > 0")
    return Inference(mean, std, _class_names(meta, path, num_outputs), _image_size(meta, path, input_shape))


def _statistic(path, field: str, value, channels: int, ok, bound: str = "") -> Tuple[float, ...]:
    """A standardisation statistic: one finite number per channel (a single number, as
    older checkpoints wrote it, for one channel)."""
    values = value if isinstance(value, list) else [value]
    if len(values) != channels or not all(_is_number(v) and ok(v) for v in values):
        raise _error(path, field, f"must be a finite number{bound} or a list of {channels} (one per channel)", value)
    return tuple(float(v) for v in values)


def _class_names(meta: dict, path, num_outputs: int) -> Tuple[str, ...]:
    names = meta.get("class_names")
    if names is None:
        return tuple(str(i) for i in range(num_outputs))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _error(path, "'class_names'", "must be a list of strings", names)
    if len(names) != num_outputs:
        raise _error(path, "'class_names'", f"must name the model's {num_outputs} outputs (it has {len(names)})",
                     names)
    return tuple(names)


def _image_size(meta: dict, path, input_shape) -> Tuple[int, int]:
    _, h, w = input_shape
    size = meta.get("image_size")
    if size is None:                                       # written before image_size was recorded
        settings = meta.get("settings")
        padded = isinstance(settings, dict) and settings.get("pad32") is True and (h, w) == (32, 32)
        return (28, 28) if padded else (h, w)
    if (not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size)
            or not (1 <= size[0] <= h and 1 <= size[1] <= w)):
        raise _error(path, "'image_size'", f"must be [H, W] with 1 <= H <= {h}, 1 <= W <= {w}", size)
    return int(size[0]), int(size[1])

