"""The Cython backend's dW from the pooled gradient at each window's argmax (plan dW
'pooled_argmax', csrc/pool_dw.h), forced on any build against the reference: kernel widths
up to the build's lanes, both strides, padding, 2x2/2, overlapping 3x3/2 and 4x4/4 pools,
a batch of one shared by two threads, float32 and float64, and the inputs where the dense
sum's 0 * Inf must show (the call then runs a dense dW)."""
import dataclasses

import numpy as np
import pytest

from checks import COMPILED, assert_close, backend, reference_conv_and_grads
from fastlenet import kernels

pytestmark = pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")

#: (x shape, w shape, stride, pad, pool)
GEOMETRIES = [
    ((4, 1, 28, 28), (6, 1, 5, 5), 1, 0, (2, 2)),        # LeNet C1
    ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, (2, 2)),       # LeNet C3: three tiles of 10 rows
    ((3, 5, 13, 17), (7, 5, 3, 3), 1, 1, (2, 2)),        # odd sizes: the last row and column dropped
    ((2, 3, 15, 15), (4, 3, 3, 3), 2, 1, (2, 2)),        # stride 2
    ((2, 4, 16, 18), (5, 4, 5, 5), 1, 2, (3, 2)),        # overlapping windows share conv outputs
    ((2, 3, 20, 20), (4, 3, 5, 5), 1, 0, (4, 4)),
    ((1, 16, 32, 32), (32, 16, 5, 5), 1, 2, (2, 2)),     # batch 1: filters shared among threads
    ((2, 2, 11, 11), (3, 2, 4, 2), 1, 1, (2, 2)),        # a kernel of 4 rows, 2 taps each
]


def _conv_pool_grads(x, w, b, s, p, pool, dw_path):
    """(dx, dw, db) of the fused conv + ReLU + max pool with ``dw_path`` forced, and the
    reference's, for one random pooled gradient."""
    from fastlenet.kernels import _cy_conv
    grad, want = reference_conv_and_grads(x, w, b, s, p, pool, np.random.default_rng(5))
    k = backend("cython")
    oh, ow = (x.shape[2] + 2 * p - w.shape[2]) // s + 1, (x.shape[3] + 2 * p - w.shape[3]) // s + 1
    _, arg = k.fast.conv2d_relu_maxpool_forward(x, w, b, s, p, oh, ow, *pool)
    codes = dataclasses.replace(k.plan_conv2d(x.shape, w.shape, s, p, pool, dtype=x.dtype), dw=dw_path).codes
    return _cy_conv.conv2d_relu_maxpool_backward(grad, arg, x, w, s, p, oh, ow, *pool, True, codes), want[1:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: ",".join(map(str, g[0] + g[1])))
def test_the_pooled_dw_matches_the_reference(geometry, dtype):
    x_shape, w_shape, s, p, pool = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) * 0.1
    for threads in (1, 2):
        kernels.set_kernel_threads(threads)
        try:
            got, want = _conv_pool_grads(x, w, b, s, p, pool, "pooled_argmax")
        finally:
            kernels.set_kernel_threads(kernels.default_threads())
        for what, g, wanted in zip(("dx", "dw", "db"), got, want):
            assert_close(f"{what} ({threads} threads)", g, wanted)


def test_windows_the_relu_blocked_pass_no_gradient_even_a_nan_one():
    """A pooled gradient of NaN where the window's max was <= 0 (arg -1) is dropped, as the
    reference's ReLU mask drops it; elsewhere it reaches dW."""
    x_shape, w_shape, s, p, pool = GEOMETRIES[1]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = np.full(w_shape[0], -1.0, np.float32)            # many windows blocked
    k = backend("cython")
    from fastlenet.kernels import _cy_conv
    y, arg = k.fast.conv2d_relu_maxpool_forward(x, w, b, s, p, 10, 10, *pool)
    assert (arg < 0).any() and (arg >= 0).any()
    grad = rng.standard_normal(y.shape).astype(np.float32)
    grad[arg < 0] = np.nan
    codes = dataclasses.replace(k.plan_conv2d(x_shape, w_shape, s, p, pool), dw="pooled_argmax").codes
    _, dw, db = _cy_conv.conv2d_relu_maxpool_backward(grad, arg, x, w, s, p, 10, 10, *pool, False, codes)
    clean = np.where(arg < 0, 0, grad).astype(np.float32)
    _, want_dw, want_db = _cy_conv.conv2d_relu_maxpool_backward(
        clean, arg, x, w, s, p, 10, 10, *pool, False,
        dataclasses.replace(k.plan_conv2d(x_shape, w_shape, s, p, pool), dw="gemm_im2row").codes)
    assert np.isfinite(dw).all() and np.isfinite(db).all()
    assert_close("dw", dw, want_dw)
    assert_close("db", db, want_db)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("poison", [np.inf, -np.inf, np.nan])
def test_a_non_finite_input_gives_the_dense_sums_nan(poison):
    """The dense dW multiplies every input tap by its conv output's gradient, 0 where the pool
    dropped it, so an Inf or NaN anywhere in a receptive field makes NaN; the pooled dW never
    touches those taps, so the call runs a dense dW instead: NaN and Inf where the reference
    has them."""
    x_shape, w_shape, s, p, pool = GEOMETRIES[0]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[1, 0, 13, 9] = poison
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = np.zeros(w_shape[0], np.float32)
    got, want = _conv_pool_grads(x, w, b, s, p, pool, "pooled_argmax")
    assert not np.isfinite(want[1]).all()
    assert_close("dw", got[1], want[1])
    assert_close("db", got[2], want[2])


def test_a_kernel_wider_than_the_lanes_is_refused():
    from fastlenet.kernels import _cy_conv
    lanes = _cy_conv.LANES
    x = np.zeros((1, 1, lanes + 8, lanes + 8), np.float32)
    w = np.zeros((2, 1, 1, lanes + 1), np.float32)
    k = backend("cython")
    planned = k.plan_conv2d(x.shape, w.shape, 1, 0, (2, 2))
    assert planned.dw != "pooled_argmax"                     # the plan never asks for it
    oh, ow = planned.out_hw
    y, arg = k.fast.conv2d_relu_maxpool_forward(x, w, np.zeros(2, np.float32), 1, 0, oh, ow, 2, 2)
    codes = dataclasses.replace(planned, dw="pooled_argmax").codes
    with pytest.raises(ValueError, match="pooled_argmax"):
        _cy_conv.conv2d_relu_maxpool_backward(y, arg, x, w, 1, 0, oh, ow, 2, 2, False, codes)


def test_the_plan_takes_it_in_float32_only():
    """POOLED_DW_FLOAT64: the float64 tile (two registers a vector on AVX2) lost to the im2row
    GEMM that float64 plans; forced, it stays exact (above)."""
    from fastlenet.kernels import plan
    args = ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, (2, 2))
    assert plan.conv2d(*args, lanes=8).dw == "pooled_argmax"
    assert plan.conv2d(*args, lanes=8, itemsize=8).dw == "gemm_im2row"
