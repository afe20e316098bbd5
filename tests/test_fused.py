"""The fused conv -> ReLU -> max pool and conv -> ReLU fast paths against the public
kernels run one after another (forward values, argmax routing and every gradient)."""
import numpy as np
import pytest

from checks import assert_close, assert_same_step
from fastlenet import kernels, models

FUSED = [name for name in ("numba", "cython") if kernels.backend(name).fast is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    (3, 1, 28, 28, 6, 5, 5, 1, 2, 2, 2),     # LeNet C1 + S2
    (5, 6, 14, 14, 16, 5, 5, 1, 0, 2, 2),    # LeNet C3 + S4
    (2, 2, 9, 8, 3, 3, 2, 1, 1, 3, 2),       # non-square kernel, overlapping pool windows
    (1, 3, 11, 11, 4, 3, 3, 2, 1, 2, 2),     # strided conv, odd sizes
    # the in-register 2x2 pool of the direct convolution: two vectors per row with a
    # partial filter block and odd output sizes; one vector per row, exactly full
    # (OW 16) and partial (OW 14, KH != KW, a second, partial block of 8 filters)
    (2, 2, 19, 21, 7, 3, 3, 1, 1, 2, 2),
    (2, 2, 20, 20, 8, 5, 5, 1, 0, 2, 2),
    (2, 3, 12, 16, 10, 3, 5, 1, 1, 2, 2),
    (2, 1, 32, 32, 6, 5, 5, 1, 2, 2, 2),     # OW 32: the widest two-vector row
])
@pytest.mark.parametrize("values", ["normal", "ties"])
@pytest.mark.parametrize("name", FUSED)
def test_fused_path_equals_public_kernels(name, case, dtype, values):
    n, c, h, w, f, kh, kw, s, p, size, ps = case
    k = kernels.backend(name)
    rng = np.random.default_rng(0)
    if values == "ties":       # small integers: equal window values and exact zeros are common
        x = rng.integers(-1, 2, (n, c, h, w)).astype(dtype)
        wt = rng.integers(-1, 2, (f, c, kh, kw)).astype(dtype)
        b = rng.integers(-1, 2, f).astype(dtype)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((f, c, kh, kw)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) * 0.1
    z = k.conv2d_forward(x, wt, b, s, p)
    r = np.maximum(z, 0)
    y, arg = k.maxpool2d_forward(r, size, ps)
    fy, farg = k.fast.conv2d_relu_maxpool_forward(x, wt, b, s, p, z.shape[2], z.shape[3], size, ps)
    assert_close("fused y", fy, y)
    np.testing.assert_array_equal(farg >= 0, y > 0)      # gradient flows exactly where y > 0
    dy = rng.standard_normal(y.shape).astype(dtype)
    dr = k.maxpool2d_backward(dy, arg, r.shape, size, ps)
    dz = dr * (z > 0)
    dx, dw, db = k.conv2d_backward(dz, x, wt, s, p)
    fdx, fdw, fdb = k.fast.conv2d_relu_maxpool_backward(dy, farg, x, wt, s, p, z.shape[2], z.shape[3], size, ps, True)
    assert_close("fused dx", fdx, dx)
    assert_close("fused dw", fdw, dw)
    assert_close("fused db", fdb, db)
    none_dx, ndw, ndb = k.fast.conv2d_relu_maxpool_backward(dy, farg, x, wt, s, p, z.shape[2], z.shape[3], size, ps, False)
    assert none_dx is None                         # a first layer: the dW-only path
    assert_close("fused dw (need_dx=False)", ndw, dw)
    assert_close("fused db (need_dx=False)", ndb, db)


@pytest.mark.parametrize("name", FUSED)
def test_fused_and_unfused_networks_agree(name):
    a = models.build("lenet5", backend=name, seed=5, fused=True)
    b = models.build("lenet5", backend=name, seed=5, fused=False)
    assert any(type(l).__name__ == "ConvReLUMaxPool" for l in a.runnable)
    assert not any(type(l).__name__ == "ConvReLUMaxPool" for l in b.runnable)
    rng = np.random.default_rng(1)
    assert_same_step(a, b, rng.random((16, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 16))


#: a VGG-style stage: conv -> ReLU (fused as ConvReLU) before conv -> ReLU -> pool
VGG_STAGE = {"format": "fastlenet-model", "version": 1, "name": "vgg-stage", "input_shape": [3, 12, 12],
             "num_classes": 10, "layers": [
                 {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                 {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                 {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]}


#: ... with batch norm: conv -> BN -> ReLU (fused as BatchNormReLU) before conv -> BN -> ReLU -> pool
VGG_BN_STAGE = dict(VGG_STAGE, name="vgg-bn-stage", layers=[
    VGG_STAGE["layers"][0], {"type": "batchnorm"}, {"type": "relu"},
    VGG_STAGE["layers"][2], {"type": "batchnorm"}, {"type": "relu"}] + VGG_STAGE["layers"][4:])


@pytest.mark.parametrize("spec,kinds", [(VGG_STAGE, ["ConvReLU", "ConvReLUMaxPool"]),
                                        (VGG_BN_STAGE, ["Conv2D", "BatchNormReLU", "Conv2D", "BatchNormReLUMaxPool"])],
                         ids=["conv-relu", "conv-bn-relu"])
@pytest.mark.parametrize("name", FUSED)
def test_a_vgg_stage_fused_and_unfused_agree(name, spec, kinds):
    a = models.from_spec(spec, backend=name, seed=3)
    b = models.from_spec(spec, backend=name, seed=3, fused=False)
    assert [type(l).__name__ for l in a.runnable][:len(kinds)] == kinds
    rng = np.random.default_rng(2)
    assert_same_step(a, b, rng.standard_normal((6, 3, 12, 12)).astype(np.float32), rng.integers(0, 10, 6))


@pytest.mark.parametrize("name", FUSED)
def test_the_fused_conv_relu_keeps_nan_and_passes_no_gradient_through_it(name):
    k = kernels.backend(name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    x[1, 0, 4, 4] = np.nan
    z = k.conv2d_forward(x, w, np.zeros(16, np.float32), 1, 1)
    y = k.fast.conv2d_relu_forward(x, w, np.zeros(16, np.float32), 1, 1, 10, 10)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(z))     # NaN stays NaN, like np.maximum
    assert np.isnan(y).any() and np.isnan(y[0]).sum() == 0
    dy = np.ones_like(y)
    dx, dw, db = k.fast.conv2d_relu_backward(dy[:1], y[:1], x[:1], w, 1, 1, True)
    want = k.conv2d_backward(dy[:1] * (z[:1] > 0), x[:1], w, 1, 1)
    for got, wanted in zip((dx, dw, db), want):
        assert_close("grad", got, wanted)
