"""The dense-layer fast path (Backend.fast) against NumPy: every product, odd
shapes (rows not a multiple of the tile, columns not a multiple of the vector),
a single row, both dtypes, with and without dx."""
import numpy as np
import pytest

from checks import assert_close, assert_same_step, linear_grads
from fastlenet import kernels, models
from fastlenet.layers import DenseReLU

LINEAR = [name for name in kernels.available() if kernels.backend(name).fast is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# (2, 400, 120), (3, 64, 16): fewer rows than the threads' tiles (dx split over rows)
@pytest.mark.parametrize("n, d, u", [(256, 400, 120), (7, 5, 3), (1, 84, 10), (13, 33, 17), (64, 16, 32),
                                     (2, 400, 120), (3, 64, 16), (5, 400, 84)])
@pytest.mark.parametrize("name", LINEAR)
def test_linear_equals_numpy(name, n, d, u, dtype):
    lin = kernels.backend(name).fast
    rng = np.random.default_rng(n * 1000 + d)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    dy = rng.standard_normal((n, u)).astype(dtype)
    y = lin.linear_forward(x, w, b, False)
    assert y.shape == (n, u) and y.dtype == dtype
    assert_close("linear y", y, x @ w + b)
    dx, dw, db = linear_grads(lin, dy, x, w)
    assert_close("linear dx", dx, dy @ w.T)
    assert_close("linear dw", dw, x.T @ dy)
    assert_close("linear db", db, dy.sum(axis=0))
    none_dx, dw2, db2 = linear_grads(lin, dy, x, w, need_dx=False)
    assert none_dx is None
    assert_close("linear dw (need_dx=False)", dw2, x.T @ dy)
    assert_close("linear db (need_dx=False)", db2, dy.sum(axis=0))
    # fused Dense -> ReLU: ReLU'd output, and dy passes only where it is > 0
    yr = lin.linear_forward(x, w, b, True)
    assert_close("linear relu y", yr, np.maximum(x @ w + b, 0))
    dyr = dy * (yr > 0)
    dx, dw, db = linear_grads(lin, dy, x, w, y=yr)
    assert_close("linear relu dx", dx, dyr @ w.T)
    assert_close("linear relu dw", dw, x.T @ dyr)
    assert_close("linear relu db", db, dyr.sum(axis=0))


@pytest.mark.parametrize("name", LINEAR)
def test_dense_layers_use_the_fast_path_and_match_numpy(name):
    fast = models.build("lenet5", backend=name, seed=3)
    ref = models.build("lenet5", backend="numpy", seed=3)
    assert any(getattr(layer, "fast", None) is not None for layer in fast.layers if type(layer).__name__ == "Dense")
    assert sum(isinstance(layer, DenseReLU) for layer in fast.runnable) == 2      # 120 and 84, ReLU'd
    rng = np.random.default_rng(2)
    assert_same_step(fast, ref, rng.random((9, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 9))
