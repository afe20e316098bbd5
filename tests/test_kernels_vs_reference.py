"""Tier 1: every compiled backend against the NumPy reference, parametrised
over dtype x shape x stride x pad (batch 1, non-square kernels, odd sizes,
overlapping pools), plus hypothesis-drawn random geometries."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks import COMPILED, assert_close, backend
from fastlenet.kernels import reference as ref

DTYPES = [np.float32, np.float64]

# (N, C, H, W, F, KH, KW, stride, pad)
CONV_CASES = [
    (2, 1, 28, 28, 6, 5, 5, 1, 2),      # LeNet C1
    (3, 6, 14, 14, 16, 5, 5, 1, 0),     # LeNet C3
    (1, 3, 7, 9, 4, 2, 3, 2, 1),        # batch 1, 2x3 kernel, stride 2, pad 1
    (2, 2, 8, 5, 3, 3, 1, 1, 0),        # 3x1 kernel, narrow input
    (2, 3, 9, 11, 2, 3, 3, 2, 0),       # odd sizes that stride 2 does not divide
    (1, 2, 5, 5, 3, 5, 5, 1, 0),        # kernel covers the whole input
    (2, 2, 6, 7, 3, 3, 2, 3, 2),        # stride 3, pad 2
    (1, 1, 4, 4, 1, 3, 3, 7, 1),        # stride larger than the input
]
# (N, C, H, W, size, stride)
POOL_CASES = [
    (2, 6, 28, 28, 2, 2),               # LeNet S2
    (1, 3, 7, 9, 2, 2),                 # odd sizes: floor drops the last row/col
    (2, 2, 9, 9, 3, 2),                 # overlapping windows
    (1, 2, 6, 5, 3, 1),                 # heavy overlap
    (2, 1, 7, 7, 2, 3),                 # stride > size: gaps
    (1, 1, 3, 3, 3, 3),                 # one window
]


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def check_conv(name, case, dtype, seed=0):
    n, c, h, w, f, kh, kw, s, p = case
    k = backend(name)
    rng = np.random.default_rng(seed)
    x, wt, b = make(rng, (n, c, h, w), dtype), make(rng, (f, c, kh, kw), dtype), make(rng, (f,), dtype)
    cols = k.im2col(x, kh, kw, s, p)
    assert_close("im2col", cols, ref.im2col(x, kh, kw, s, p))
    assert_close("col2im", k.col2im(cols, x.shape, kh, kw, s, p), ref.col2im(cols, x.shape, kh, kw, s, p))
    y = k.conv2d_forward(x, wt, b, stride=s, pad=p)
    assert y.dtype == dtype
    assert_close("conv y", y, ref.conv2d_forward(x, wt, b, stride=s, pad=p))
    dy = make(rng, y.shape, dtype)
    dx, dw, db = k.conv2d_backward(dy, x, wt, stride=s, pad=p)
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, stride=s, pad=p)
    for label, got, want in (("conv dx", dx, rdx), ("conv dw", dw, rdw), ("conv db", db, rdb)):
        assert got.dtype == dtype, label
        assert_close(label, got, want)
    none_dx, dw2, db2 = k.conv2d_backward(dy, x, wt, stride=s, pad=p, need_dx=False)
    assert none_dx is None
    assert_close("conv dw (need_dx=False)", dw2, rdw)
    assert_close("conv db (need_dx=False)", db2, rdb)


def check_pool(name, case, dtype, seed=0):
    n, c, h, w, size, s = case
    k = backend(name)
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c, h, w), dtype)
    y, arg = k.maxpool2d_forward(x, size, s)
    ry, rarg = ref.maxpool2d_forward(x, size, s)
    assert_close("maxpool y", y, ry)
    np.testing.assert_array_equal(arg, rarg, err_msg="maxpool arg")
    assert arg.dtype == np.int32
    dy = make(rng, y.shape, dtype)
    assert_close("maxpool dx", k.maxpool2d_backward(dy, arg, x.shape, size, s),
                 ref.maxpool2d_backward(dy, rarg, x.shape, size, s))
    assert_close("avgpool y", k.avgpool2d_forward(x, size, s), ref.avgpool2d_forward(x, size, s))
    assert_close("avgpool dx", k.avgpool2d_backward(dy, x.shape, size, s),
                 ref.avgpool2d_backward(dy, x.shape, size, s))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("name", COMPILED)
def test_conv_matches_reference(name, case, dtype):
    check_conv(name, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("name", COMPILED)
def test_pool_matches_reference(name, case, dtype):
    check_pool(name, case, dtype)


def tied_with_nans(rng, shape, dtype):
    """Values on a coarse grid (many ties: the first max must win) with a few NaNs."""
    x = np.round(rng.standard_normal(shape) * 2).astype(dtype)
    x.flat[rng.choice(x.size, max(1, x.size // 40), replace=False)] = np.nan
    return x


# Rows of every width the Cython pools vectorise (csrc/plane_pool.h): blocks of 16, 8,
# 4 (and 2 doubles) lanes, a last block overlapping the one before, both stride-2 loads
# (the even lanes, and the odd lanes one element back where a row ends), the scalar scan
# (stride 3, 1 x 1 windows at stride 2, rows narrower than a vector); NaN and ties.
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (2, 1), (3, 1), (1, 2), (4, 2), (3, 3)])
@pytest.mark.parametrize("name", COMPILED)
def test_pool_rows_of_every_width_match_the_reference(name, size, stride, dtype):
    k = backend(name)
    rng = np.random.default_rng(size * 10 + stride)
    for width in list(range(size, 21)) + [31, 32, 33, 40, 47]:
        x = tied_with_nans(rng, (1, 2, size + 3, width), dtype)
        y, arg = k.maxpool2d_forward(x, size, stride)
        ry, rarg = ref.maxpool2d_forward(x, size, stride)
        np.testing.assert_array_equal(y, ry, err_msg=f"maxpool y, width {width}")
        np.testing.assert_array_equal(arg, rarg, err_msg=f"maxpool arg, width {width}")
        x = make(rng, x.shape, dtype)
        assert_close(f"avgpool y, width {width}", k.avgpool2d_forward(x, size, stride),
                     ref.avgpool2d_forward(x, size, stride))
        dy = make(rng, ry.shape, dtype)
        assert_close(f"avgpool dx, width {width}", k.avgpool2d_backward(dy, x.shape, size, stride),
                     ref.avgpool2d_backward(dy, x.shape, size, stride))


@pytest.mark.parametrize("name", COMPILED)
def test_conv_batch_larger_than_threads_and_odd(name):
    # 7 samples over 2 threads: uneven chunks must still cover every sample once.
    check_conv(name, (7, 2, 6, 6, 3, 3, 3, 1, 1), np.float32, seed=3)


@pytest.mark.parametrize("name", COMPILED)
def test_read_only_inputs_are_accepted(name):
    k = backend(name)
    rng = np.random.default_rng(1)
    x, w, b = make(rng, (2, 2, 6, 6), np.float32), make(rng, (3, 2, 3, 3), np.float32), make(rng, (3,), np.float32)
    for a in (x, w, b):
        a.setflags(write=False)
    assert_close("conv y (read-only)", k.conv2d_forward(x, w, b), ref.conv2d_forward(x, w, b))
    dy = make(rng, (2, 3, 4, 4), np.float32)
    dy.setflags(write=False)
    assert_close("conv dw (read-only)", k.conv2d_backward(dy, x, w)[1], ref.conv2d_backward(dy, x, w)[1])
    y, arg = k.maxpool2d_forward(x)
    arg.setflags(write=False)
    k.maxpool2d_backward(y, arg, x.shape)


geometry = st.tuples(
    st.integers(1, 3), st.integers(1, 3),     # N, C
    st.integers(1, 9), st.integers(1, 9),     # H, W
    st.integers(1, 3),                        # F
    st.integers(1, 4), st.integers(1, 4),     # KH, KW
    st.integers(1, 3), st.integers(0, 2),     # stride, pad
).filter(lambda g: g[5] <= g[2] + 2 * g[8] and g[6] <= g[3] + 2 * g[8])


@pytest.mark.parametrize("name", COMPILED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=geometry, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_conv_geometry(name, g, dtype, seed):
    check_conv(name, g, dtype, seed)


pool_geometry = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 10), st.integers(1, 10),
    st.integers(1, 4), st.integers(1, 4),
).filter(lambda g: g[4] <= g[2] and g[4] <= g[3])


@pytest.mark.parametrize("name", COMPILED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=pool_geometry, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_pool_geometry(name, g, dtype, seed):
    check_pool(name, g, dtype, seed)
