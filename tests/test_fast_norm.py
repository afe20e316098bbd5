"""The fused batch-norm fast path (BatchNorm -> ReLU -> MaxPool2D as one
``batchnorm_relu_maxpool`` layer, and BatchNorm -> ReLU as the same with a 1 x 1 window)
of both compiled backends against the reference
layers run one by one on the numpy backend: outputs, gradients, running statistics,
inference mode, NaN, thread-count invariance, and whole models."""
import numpy as np
import pytest

from checks import COMPILED, assert_close
from fastlenet import kernels, models
from fastlenet.layers import BatchNorm, BatchNormReLU, BatchNormReLUMaxPool, MaxPool2D, ReLU, fuse

FAST = [n for n in COMPILED if n in kernels.available()]
#: (N, C, H, W), pool size, pool stride
#: (the compiled 2x2 pool takes 16 planes at a time along the lanes, the rest one by one:
#: 18 and 20 planes exercise both, 9x11 a window row and column left over)
CASES = [((4, 3, 10, 10), 2, 2), ((3, 6, 28, 28), 2, 2), ((2, 5, 9, 11), 3, 2), ((2, 4, 7, 7), 2, 1),
         ((8, 16, 10, 10), 2, 2), ((4, 5, 9, 11), 2, 2)]


def _layers(backend, shape, size, stride, dtype, seed=0):
    rng = np.random.default_rng(seed)
    k = kernels.backend(backend)
    bn, relu, pool = BatchNorm(momentum=0.1, eps=1e-5), ReLU(), MaxPool2D(size, stride)
    out = bn.build(shape[1:], rng, dtype, k)
    relu.build(out, rng, dtype, k)
    pool.build(out, rng, dtype, k)
    bn.params["gamma"][...] = rng.uniform(0.5, 1.5, shape[1])
    bn.params["beta"][...] = rng.uniform(-0.5, 0.5, shape[1])
    return bn, relu, pool


def _reference(shape, size, stride, dtype, x, dpy, training=True):
    bn, relu, pool = _layers("numpy", shape, size, stride, dtype)
    y = pool.forward(relu.forward(bn.forward(x, training), training), training)
    dx = bn.backward(relu.backward(pool.backward(dpy))) if training else None
    return y, dx, bn


def _data(shape, size, stride, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 0.7).astype(dtype)
    ph, pw = (shape[2] - size) // stride + 1, (shape[3] - size) // stride + 1
    return x, rng.standard_normal((shape[0], shape[1], ph, pw)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,size,stride", CASES)
@pytest.mark.parametrize("backend", FAST)
def test_fused_batchnorm_relu_maxpool_equals_the_layers(backend, shape, size, stride, dtype):
    x, dpy = _data(shape, size, stride, dtype)
    want_y, want_dx, ref = _reference(shape, size, stride, dtype, x, dpy)
    bn, _, pool = _layers(backend, shape, size, stride, dtype)
    fused = BatchNormReLUMaxPool(bn, pool)
    y = fused.forward(x, training=True)
    assert_close("y", y, want_y)
    dx = fused.backward(dpy)
    assert_close("dx", dx, want_dx)
    for key in ("gamma", "beta"):
        assert_close(f"d{key}", fused.grads[key], ref.grads[key])
    for key in ("running_mean", "running_var"):
        assert_close(key, bn.buffers[key], ref.buffers[key])
    assert fused.describe().startswith("fused[BatchNorm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 10, 10), (8, 16, 10, 10), (2, 5, 9, 11)])
@pytest.mark.parametrize("backend", FAST)
def test_fused_batchnorm_relu_without_a_pool_equals_the_layers(backend, shape, dtype):
    x, dy = _data(shape, 1, 1, dtype)                  # a 1 x 1 window: dy has x's shape
    ref_bn, ref_relu, _ = _layers("numpy", shape, 2, 2, dtype)
    want_y = ref_relu.forward(ref_bn.forward(x, True), True)
    want_dx = ref_bn.backward(ref_relu.backward(dy))
    bn, relu, _ = _layers(backend, shape, 2, 2, dtype)
    (fused,) = fuse([bn, relu], [shape[1:], shape[1:]])
    assert isinstance(fused, BatchNormReLU) and fused.describe() == f"fused[{bn.describe()} + ReLU]"
    assert_close("y", fused.forward(x, training=True), want_y)
    assert (want_y == 0).mean() > 0.2                  # the ReLU matters
    assert_close("dx", fused.backward(dy), want_dx)
    for key in ("gamma", "beta"):
        assert_close(f"d{key}", fused.grads[key], ref_bn.grads[key])
    for key in ("running_mean", "running_var"):
        assert_close(key, bn.buffers[key], ref_bn.buffers[key])


@pytest.mark.parametrize("backend", FAST)
def test_inference_uses_the_running_statistics(backend):
    shape, size, stride, dtype = (4, 3, 10, 10), 2, 2, np.float32
    x, dpy = _data(shape, size, stride, dtype)
    bn, _, pool = _layers(backend, shape, size, stride, dtype)
    bn.buffers["running_mean"][...] = [0.3, -0.2, 1.0]
    bn.buffers["running_var"][...] = [2.0, 0.5, 1.5]
    ref_bn, ref_relu, ref_pool = _layers("numpy", shape, size, stride, dtype)
    for key in ("running_mean", "running_var"):
        ref_bn.buffers[key][...] = bn.buffers[key]
    want = ref_pool.forward(ref_relu.forward(ref_bn.forward(x, False), False), False)
    before = bn.buffers["running_mean"].copy()
    assert_close("y", BatchNormReLUMaxPool(bn, pool).forward(x, training=False), want)
    np.testing.assert_array_equal(bn.buffers["running_mean"], before)       # not updated


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (4, 5, 8, 8)])       # 6 planes; 20: lanes and the rest
def test_a_nan_spreads_over_its_channel_as_in_the_reference(backend, shape):
    size, stride, dtype = 2, 2, np.float32
    x, _ = _data(shape, size, stride, dtype)
    x[1, 2, 3, 4] = np.nan
    want, _, _ = _reference(shape, size, stride, dtype, x, np.zeros((shape[0], shape[1], 4, 4), dtype))
    bn, _, pool = _layers(backend, shape, size, stride, dtype)
    y = BatchNormReLUMaxPool(bn, pool).forward(x, training=True)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert np.isnan(y[:, 2]).all() and not np.isnan(y[:, :2]).any()


@pytest.mark.parametrize("backend", FAST)
def test_the_same_bits_at_any_thread_count(backend):
    shape, size, stride, dtype = (16, 6, 28, 28), 2, 2, np.float32
    x, dpy = _data(shape, size, stride, dtype)
    results = []
    try:
        for threads in (1, 2):
            kernels.set_num_threads(threads)
            bn, _, pool = _layers(backend, shape, size, stride, dtype)
            fused = BatchNormReLUMaxPool(bn, pool)
            y = fused.forward(x, training=True).copy()
            dx = fused.backward(dpy).copy()
            results.append((y, dx, fused.grads["gamma"].copy(), bn.buffers["running_var"].copy()))
    finally:
        kernels.set_num_threads(kernels.default_threads())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


RGB_NET = {"format": "fastlenet-model", "version": 1, "name": "rgb-bn", "input_shape": [3, 16, 16],
           "num_classes": 10,
           "layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
                      {"type": "relu"}, {"type": "maxpool2d", "size": 2},
                      {"type": "conv2d", "filters": 12, "kernel_size": 3, "padding": 1},
                      {"type": "batchnorm", "momentum": 0.01, "eps": 1e-3}, {"type": "relu"},
                      {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "flatten"},
                      {"type": "dense", "units": 10}]}


def _model(which, backend):
    if which == "lenet5-bn":
        return models.build(which, backend=backend, seed=0)
    return models.from_spec(RGB_NET, backend=backend, seed=0)


@pytest.mark.parametrize("which", ["lenet5-bn", "rgb-bn"])
@pytest.mark.parametrize("backend", FAST)
def test_models_with_batch_norm_take_the_fused_path_and_agree(backend, which):
    fused, plain = _model(which, backend), _model(which, "numpy")
    assert any(isinstance(layer, BatchNormReLUMaxPool) for layer in fused.runnable)
    rng = np.random.default_rng(3)
    x = rng.random((8,) + fused.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, 8)
    loss, _ = fused.loss_and_grads(x, y)
    want_loss, _ = plain.loss_and_grads(x, y)
    assert abs(loss - want_loss) < 1e-4
    assert_close("grads", fused.flat_grads, plain.flat_grads, rtol=1e-3)
    assert_close("buffers", np.concatenate([b.ravel() for b in fused.buffers.values()]),
                 np.concatenate([b.ravel() for b in plain.buffers.values()]))
    assert_close("eval logits", fused.forward(x), plain.forward(x), rtol=1e-3)
