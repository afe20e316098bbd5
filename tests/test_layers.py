"""Tier 2 for layers and the loss: one helper checks a layer's input gradient
and every parameter gradient against float64 finite differences, with a random
upstream gradient, so each layer test is one line."""
import numpy as np
import pytest

from checks import assert_close, numerical_grad
from fastlenet import kernels, layers
from fastlenet.losses import softmax_cross_entropy


def check_layer(layer, input_shape, seed=0, positive=False, backend="numpy", built=False):
    """Build ``layer`` in float64 on ``backend`` (unless ``built``) and compare backward() with FD."""
    rng = np.random.default_rng(seed)
    if not built:
        layer.build(input_shape[1:], rng, np.float64, kernels.backend(backend))
    x = rng.standard_normal(input_shape)
    if positive:                              # keep away from ReLU's kink / pooling ties
        x = np.sign(x) * (np.abs(x) + 0.1)
    reseed = getattr(layer, "rng", None) is not None
    def forward():
        if reseed:
            layer.rng = np.random.default_rng(123)   # same dropout mask every call
        return layer.forward(x, training=True)
    dy = rng.standard_normal(forward().shape)
    loss = lambda: float(np.sum(dy * forward()))
    forward()
    dx = layer.backward(dy)
    assert_close(f"{type(layer).__name__} dx", dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    for name, p in layer.params.items():
        forward()
        layer.backward(dy)
        got = layer.grads[name].copy()
        assert_close(f"{type(layer).__name__} d{name}", got, numerical_grad(loss, p), rtol=1e-5, atol=1e-7)


def test_conv2d():            check_layer(layers.Conv2D(3, (2, 3), stride=2, padding=1), (2, 2, 6, 7))
def test_conv2d_same():       check_layer(layers.Conv2D(2, 3, padding="same"), (2, 2, 5, 5))
def test_maxpool():           check_layer(layers.MaxPool2D(2), (2, 2, 6, 6), positive=True)
def test_maxpool_overlap():   check_layer(layers.MaxPool2D(3, stride=2), (2, 2, 7, 7))
def test_avgpool():           check_layer(layers.AvgPool2D(2), (2, 3, 6, 5))
def test_dense():             check_layer(layers.Dense(4), (3, 5))
def test_relu():              check_layer(layers.ReLU(), (3, 7), positive=True)
def test_sigmoid():           check_layer(layers.Sigmoid(), (3, 7))
def test_tanh():              check_layer(layers.Tanh(), (3, 7))
def test_flatten():           check_layer(layers.Flatten(), (2, 3, 2, 2))
def test_batchnorm_conv():    check_layer(layers.BatchNorm(), (4, 3, 3, 3))
def test_batchnorm_dense():   check_layer(layers.BatchNorm(), (5, 4))
def test_dropout():           check_layer(layers.Dropout(0.3), (4, 6))


def test_batchnorm_inference_uses_running_statistics():
    bn = layers.BatchNorm(momentum=1.0)
    bn.build((2,), np.random.default_rng(0), np.float64, None)
    x = np.array([[1.0, 10.0], [3.0, 30.0]])
    bn.forward(x, training=True)
    np.testing.assert_allclose(bn.buffers["running_mean"], [2.0, 20.0])
    np.testing.assert_allclose(bn.buffers["running_var"], [2.0, 200.0])   # unbiased
    y = bn.forward(np.array([[2.0, 20.0]]), training=False)
    np.testing.assert_allclose(y, [[0.0, 0.0]], atol=1e-12)


def test_dropout_is_identity_at_inference_and_scales_in_training():
    d = layers.Dropout(0.5, seed=1)
    x = np.ones((1000, 10))
    assert d.forward(x, training=False) is x
    y = d.forward(x, training=True)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs(y.mean() - 1.0) < 0.05


def test_padding_names_are_checked():
    with pytest.raises(ValueError, match="padding must be an int, \\(pad_h, pad_w\\), 'same' or 'valid'"):
        layers.Conv2D(4, 4, padding="full")


def test_saturated_activations_stay_finite():
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], np.float32)
    for layer in (layers.Sigmoid(), layers.Tanh()):
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
        assert np.isfinite(y).all() and np.isfinite(dx).all(), type(layer).__name__


# ---------------------------------------------------------------------------- fast paths
FAST = [name for name in kernels.available() if kernels.backend(name).fast is not None]


@pytest.mark.parametrize("name", FAST)
def test_dense_fast_path(name):
    layer = layers.Dense(4)
    check_layer(layer, (3, 5), backend=name)
    assert layer.fast is not None                              # the fast path is what ran


def _fused_conv_relu_pool(name, input_shape, filters, kernel, pad, pool):
    rng = np.random.default_rng(7)
    k = kernels.backend(name)
    conv, relu, mp = layers.Conv2D(filters, kernel, padding=pad), layers.ReLU(), layers.MaxPool2D(*pool)
    shape = conv.build(input_shape[1:], rng, np.float64, k)
    relu.build(shape, rng, np.float64, k)
    mp.build(shape, rng, np.float64, k)
    (fused,) = layers.fuse([conv, relu, mp], [shape, shape, None])
    assert isinstance(fused, layers.ConvReLUMaxPool)
    return fused


@pytest.mark.parametrize("pool", [(2, 2), (3, 2)])
@pytest.mark.parametrize("name", FAST)
def test_fused_conv_relu_maxpool(name, pool):
    fused = _fused_conv_relu_pool(name, (2, 2, 9, 9), 3, 3, 1, pool)
    check_layer(fused, (2, 2, 9, 9), seed=2, built=True)


@pytest.mark.parametrize("name", FAST)
def test_fused_conv_relu(name):
    rng = np.random.default_rng(6)
    conv = layers.Conv2D(4, 3, padding=1)
    shape = conv.build((2, 7, 8), rng, np.float64, kernels.backend(name))
    (fused,) = layers.fuse([conv, layers.ReLU()], [shape, shape])
    assert isinstance(fused, layers.ConvReLU) and fused.describe().startswith("fused[Conv2D(4, 3x3")
    check_layer(fused, (2, 2, 7, 8), seed=4, built=True)
    conv_next = layers.Conv2D(4, 3, padding=1)
    conv_next.build((2, 7, 8), rng, np.float64, kernels.backend(name))
    pool = layers.MaxPool2D(2)
    kinds = [type(l).__name__ for l in layers.fuse([conv, layers.ReLU(), conv_next, layers.ReLU(), pool],
                                                    [shape] * 4 + [None])]
    assert kinds == ["ConvReLU", "ConvReLUMaxPool"]           # a pool after the ReLU: the pool's fusion


@pytest.mark.parametrize("name", FAST)
def test_fused_dense_relu(name):
    rng = np.random.default_rng(5)
    dense = layers.Dense(6)
    dense.build((4,), rng, np.float64, kernels.backend(name))
    (fused,) = layers.fuse([dense, layers.ReLU()], [(6,), (6,)])
    assert isinstance(fused, layers.DenseReLU)
    check_layer(fused, (5, 4), seed=3, built=True)


# ---------------------------------------------------------------------------- loss
#: the NumPy loss (kernel None) and each backend's compiled one-pass version
LOSS_KERNELS = {"numpy": None, **{name: kernels.backend(name).fast.softmax_cross_entropy
                                  for name in kernels.available()
                                  if kernels.backend(name).fast is not None}}


@pytest.mark.parametrize("kernel", LOSS_KERNELS)
def test_cross_entropy_gradient_by_finite_differences(kernel):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    xent = lambda: softmax_cross_entropy(logits, labels, smoothing, kernel=LOSS_KERNELS[kernel])
    for smoothing in (0.0, 0.1):
        loss, grad = xent()
        fd = numerical_grad(lambda: xent()[0], logits)
        assert_close(f"dlogits (smoothing {smoothing})", grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kernel", LOSS_KERNELS)
def test_cross_entropy_value_and_extreme_logits(kernel):
    loss, _ = softmax_cross_entropy(np.zeros((2, 10)), np.array([3, 7]), kernel=LOSS_KERNELS[kernel])
    assert abs(loss - np.log(10)) < 1e-12
    extreme = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], np.float32)
    loss, grad = softmax_cross_entropy(extreme, np.array([1, 0]), kernel=LOSS_KERNELS[kernel])
    assert np.isfinite(loss) and np.isfinite(grad).all() and grad.dtype == np.float32
    assert abs(loss - 2e4) < 1.0


@pytest.mark.parametrize("kernel", [k for k in LOSS_KERNELS if k != "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_cross_entropy_equals_numpy(kernel, dtype):
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((257, 10)) * 8).astype(dtype)
    labels = rng.integers(0, 10, 257).astype(np.int32)          # converted, not rejected
    for smoothing in (0.0, 0.2):
        want = softmax_cross_entropy(logits, labels, smoothing)
        got = softmax_cross_entropy(logits, labels, smoothing, kernel=LOSS_KERNELS[kernel])
        assert abs(got[0] - want[0]) < 1e-12 * max(1.0, abs(want[0])) * 100
        assert got[1].dtype == dtype
        assert_close("dlogits", got[1], want[1])


@pytest.mark.parametrize("kernel", LOSS_KERNELS)
def test_cross_entropy_rejects_bad_labels(kernel):
    xent = lambda logits, labels: softmax_cross_entropy(logits, labels, kernel=LOSS_KERNELS[kernel])
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        xent(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        xent(np.zeros((2, 3)), np.array([-1, 0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        xent(np.zeros((2, 3)), np.array([0]))


# ---------------------------------------------------------------- layers of model files, every backend
@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("padding,kernel,stride,shape", [
    ("same", 4, 1, (2, 2, 6, 6)),          # even kernel: one extra row/column after
    ("same", 3, 2, (2, 2, 7, 8)),          # stride 2: ceil(7/2) x ceil(8/2)
    ("same", (2, 3), 1, (2, 2, 5, 6)),     # non-square
    ("valid", 3, 2, (2, 2, 7, 7)),
    ((1, 2), 3, 1, (2, 2, 5, 5)),          # a different pad per axis
])
def test_conv2d_padding_every_geometry(backend, padding, kernel, stride, shape):
    pytest.importorskip({"numba": "numba", "cython": "fastlenet.kernels._cy_conv"}.get(backend, "numpy"))
    layer = layers.Conv2D(3, kernel, stride=stride, padding=padding)
    check_layer(layer, shape, backend=backend)
    if padding == "same":
        out = layer.forward(np.zeros(shape))
        assert out.shape[2:] == (-(-shape[2] // stride), -(-shape[3] // stride))


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_global_avgpool(backend):
    check_layer(layers.GlobalAvgPool2D(), (3, 4, 5, 6), backend=backend)


def test_leaky_relu():
    check_layer(layers.LeakyReLU(0.2), (3, 7), positive=True)
    y = layers.LeakyReLU(0.1).forward(np.array([[-2.0, 3.0]]))
    np.testing.assert_allclose(y, [[-0.2, 3.0]])


def test_dropout_after_a_conv():   check_layer(layers.Dropout(0.25), (2, 3, 4, 4))
def test_batchnorm_keras_settings(): check_layer(layers.BatchNorm(momentum=0.01, eps=1e-3), (4, 3, 3, 3))
