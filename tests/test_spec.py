"""Model files (fastlenet.spec): round trips, the presets as files, and every refusal
named by layer index and field before anything is allocated."""
import json
import resource

import numpy as np
import pytest

from fastlenet import models, spec
from fastlenet.layers import AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
from fastlenet.models import Sequential
from fastlenet.spec import SpecError

CUSTOM = {
    "format": "fastlenet-model", "version": 1, "name": "cifar-custom", "input_shape": [3, 32, 32],
    "layers": [
        {"type": "conv2d", "filters": 32, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "maxpool2d", "size": 2},
        {"type": "conv2d", "filters": 64, "kernel_size": 3, "padding": 1}, {"type": "relu"},
        {"type": "avgpool2d", "size": 2}, {"type": "dropout", "rate": 0.25}, {"type": "flatten"},
        {"type": "dense", "units": 64}, {"type": "tanh"}, {"type": "dense", "units": 10}],
}


@pytest.mark.parametrize("name", models.PRESETS)
def test_presets_are_model_files_that_round_trip(name):
    file_spec = models.read_spec(name)
    model = models.from_spec(file_spec, backend="numpy")
    assert model.to_spec() == file_spec
    assert json.loads(json.dumps(model.to_spec())) == file_spec          # plain JSON


def test_a_custom_network_round_trips_exactly():
    checked = spec.check(CUSTOM)
    assert checked["num_classes"] == 10 and checked["dtype"] == "float32"
    a = models.from_spec(CUSTOM, backend="numpy", seed=3)
    b = models.from_spec(a.to_spec(), backend="numpy", seed=3)
    assert a.to_spec() == b.to_spec() == checked
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert [s for s in a.shapes] == spec.shapes(checked)


def _old_lenet5(act, pool, k):
    """The layer list models.build made before model files (kept here as the reference)."""
    init = "he" if act is ReLU else "glorot"
    return [Conv2D(6, 5, padding=2, init=init), act(), pool(2), Conv2D(16, 5, init=init), act(), pool(2),
            Flatten(), Dense(120, init=init), act(), Dense(84, init=init), act(), Dense(k, init="glorot")]


def _old_lenet5_bn(k):
    return [Conv2D(6, 3, padding="same"), BatchNorm(), ReLU(), MaxPool2D(2), Conv2D(16, 3), BatchNorm(), ReLU(),
            MaxPool2D(2), Flatten(), Dense(120), BatchNorm(), ReLU(), Dense(84), BatchNorm(), ReLU(),
            Dense(k, init="glorot")]


def _old_lenet5_1998(k):
    g = "glorot"
    return [Conv2D(6, 5, init=g), Tanh(), AvgPool2D(2), Conv2D(16, 5, init=g), Tanh(), AvgPool2D(2),
            Conv2D(120, 5, init=g), Tanh(), Flatten(), Dense(84, init=g), Tanh(), Dense(k, init=g)]


@pytest.mark.parametrize("name,shape,old,kwargs", [
    ("lenet5", (1, 28, 28), lambda: _old_lenet5(ReLU, MaxPool2D, 10), {}),
    ("lenet5-classic", (1, 28, 28), lambda: _old_lenet5(Sigmoid, AvgPool2D, 10), {}),
    ("lenet5", (1, 28, 28), lambda: _old_lenet5(Tanh, AvgPool2D, 7), dict(activation="tanh", pool="avg", num_classes=7)),
    ("lenet5-bn-all", (1, 28, 28), lambda: _old_lenet5_bn(10), {}),
    ("lenet5-1998", (1, 32, 32), lambda: _old_lenet5_1998(10), {}),
])
@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_presets_compute_exactly_what_the_hand_built_layers_do(name, shape, old, kwargs, backend):
    pytest.importorskip("fastlenet.kernels._cy_conv") if backend == "cython" else None
    new = models.build(name, backend=backend, seed=5, **kwargs)
    ref = Sequential(old(), shape, backend=backend, seed=5)
    assert list(new.params) == list(ref.params)
    np.testing.assert_array_equal(new.flat_params, ref.flat_params)
    x = np.random.default_rng(1).random((8,) + shape, dtype=np.float32)
    y = np.arange(8) % new.output_shape[0]
    for m in (new, ref):
        m.forward_backward(x, y)
    np.testing.assert_array_equal(new.flat_grads, ref.flat_grads)
    np.testing.assert_array_equal(new.forward(x), ref.forward(x))


def _with(*path_and_value):
    doc = json.loads(json.dumps(CUSTOM))
    *path, value = path_and_value
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize("doc,message", [
    (_with("layers", 0, "type", "conv3d"), "layer 0: unknown type 'conv3d'"),
    (_with("layers", 0, "filter", 3), "layer 0 (conv2d): unknown field 'filter'"),
    (_with("layers", 0, "filters", KeyError), "layer 0 (conv2d): missing field 'filters'"),
    (_with("layers", 0, "filters", 0), "layer 0 (conv2d): field 'filters' must be an integer in"),
    (_with("layers", 0, "kernel_size", 40), "layer 0 (conv2d): field 'kernel_size' 40x40 is larger than its padded input 34x34"),
    (_with("layers", 0, "padding", "full"), "layer 0 (conv2d): field 'padding' must be an integer or [height, width]"),
    (_with("layers", 0, "init", "xavier"), "layer 0 (conv2d): field 'init' must be one of"),
    (_with("layers", 3, "size", 64), "layer 3 (maxpool2d): field 'size' 64 is larger than its input 32x32"),
    (_with("layers", 7, "rate", 1.0), "layer 7 (dropout): field 'rate' must be a number in [0.0, 1.0)"),
    (_with("layers", 8, "type", "relu"), "layer 9 (dense): needs a flat (D,) input, got (64, 8, 8); add a flatten"),
    (_with("layers", 9, "in_features", 100), "layer 9 (dense): field 'in_features' is 100 but its input has 4096 features"),
    (_with("layers", 4, "in_channels", 3), "layer 4 (conv2d): field 'in_channels' is 3 but its input has 32 channels"),
    (_with("layers", 1, "momentum", -1), "layer 1 (batchnorm): field 'momentum' must be a number"),
    (_with("num_classes", 5), "'num_classes' is 5 but the last layer gives 10 outputs"),
    (_with("input_shape", [3, 32]), "'input_shape' must be [C, H, W]"),
    (_with("input_shape", [3, 100000, 100000]), "'input_shape' [3, 100000, 100000] is out of bounds"),
    (_with("dtype", "float16"), "'dtype' must be one of"),
    (_with("version", 2), "model file version 2 is not supported"),
    (_with("colour", "red"), "unknown field 'colour'"),
    (_with("layers", []), "'layers' must be a list of 1 to 256 layers"),
    (_with("layers", 9, "units", 10 ** 9), "layer 9 (dense): field 'units' must be an integer"),
    (_with("layers", 9, "units", 4_000_000), "layer 9 (dense): the model reaches more than"),
    (_with("layers", [{"type": "conv2d", "filters": 4, "kernel_size": 3}]),
     "the last layer's output must be flat (classes,), got (4, 30, 30)"),
])
def test_bad_model_files_are_refused_by_layer_and_field(doc, message):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        models.from_spec(doc, backend="numpy")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000     # kB: nothing built


def test_model_files_on_disk(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(CUSTOM))
    assert models.build(str(path), backend="numpy").name == "cifar-custom"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="bad.json: not valid JSON"):
        models.read_spec(tmp_path / "bad.json")
    with pytest.raises(SpecError, match="no such model file or preset; presets: cifar-cnn, lenet5"):
        models.read_spec("lenet6")
    (tmp_path / "big.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(SpecError, match="too large to be a model file"):
        models.read_spec(tmp_path / "big.json")


def test_overrides_and_class_count():
    s = spec.with_overrides(models.read_spec("lenet5"), activation="tanh", pool="avg", dense_activation="sigmoid")
    kinds = [layer["type"] for layer in s["layers"]]
    assert kinds.count("tanh") == 2 and kinds.count("sigmoid") == 2 and kinds.count("avgpool2d") == 2
    assert spec.with_num_classes(s, 3)["layers"][-1]["units"] == 3
    ends_in_pool = {"input_shape": [3, 8, 8], "layers": [{"type": "conv2d", "filters": 10, "kernel_size": 3},
                                                         {"type": "global_avgpool2d"}]}
    with pytest.raises(SpecError, match="not a dense layer whose units can be changed"):
        spec.with_num_classes(spec.check(ends_in_pool), 4)


def test_same_padding_matches_tensorflow_rule():
    assert spec.same_padding(7, 3, 2) == (1, 1)       # out 4: (4-1)*2 + 3 - 7 = 2
    assert spec.same_padding(6, 4, 1) == (1, 2)       # even kernel: the extra one after
    assert spec.same_padding(8, 1, 2) == (0, 0)
