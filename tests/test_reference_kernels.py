"""Tier 2 for the kernels: the NumPy reference checked against naive loop
twins and float64 finite differences (random upstream gradients, never all
ones), and im2col/col2im checked as adjoints on every backend."""
import numpy as np
import pytest

from checks import assert_close, backend, numerical_grad
from fastlenet.kernels import reference as ref


def naive_conv(x, w, b, s, p):
    """Seven nested loops, straight from the definition of cross-correlation."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    y = np.zeros((n, f, oh, ow))
    for a in range(n):
        for o in range(f):
            for i in range(oh):
                for j in range(ow):
                    y[a, o, i, j] = b[o] + np.sum(w[o] * xp[a, :, i * s : i * s + kh, j * s : j * s + kw])
    return y


def naive_pool(x, size, s, reduce):
    n, c, h, w = x.shape
    oh, ow = (h - size) // s + 1, (w - size) // s + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = reduce(x[:, :, i * s : i * s + size, j * s : j * s + size], axis=(2, 3))
    return y


@pytest.mark.parametrize("case", [(2, 3, 7, 9, 4, 2, 3, 2, 1), (1, 1, 6, 6, 2, 5, 5, 1, 2), (2, 2, 5, 4, 1, 1, 1, 1, 0)])
def test_reference_conv_equals_naive_loops(case):
    n, c, h, w, f, kh, kw, s, p = case
    rng = np.random.default_rng(0)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
    assert_close("conv y", ref.conv2d_forward(x, wt, b, s, p), naive_conv(x, wt, b, s, p))


@pytest.mark.parametrize("size,s", [(2, 2), (3, 2), (2, 3), (3, 1)])
def test_reference_pools_equal_naive_loops(size, s):
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 7))
    y, arg = ref.maxpool2d_forward(x, size, s)
    assert_close("maxpool y", y, naive_pool(x, size, s, np.max))
    # arg: the flat h*W + w of each window's first maximum, inside its (n, c) plane
    planes = x.reshape(6, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, arg.reshape(6, -1), 1).reshape(y.shape), y)
    oy, ox = np.divmod(arg, x.shape[3])
    rows, cols = np.indices(y.shape[2:])
    assert ((oy >= rows * s) & (oy < rows * s + size) & (ox >= cols * s) & (ox < cols * s + size)).all()
    assert_close("avgpool y", ref.avgpool2d_forward(x, size, s), naive_pool(x, size, s, np.mean))


@pytest.mark.parametrize("case", [(2, 2, 5, 6, 3, 2, 3, 2, 1), (1, 1, 6, 6, 2, 3, 3, 1, 0)])
def test_reference_conv_gradients_by_finite_differences(case):
    n, c, h, w, f, kh, kw, s, p = case
    rng = np.random.default_rng(2)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
    dy = rng.standard_normal(ref.conv2d_forward(x, wt, b, s, p).shape)
    loss = lambda: float(np.sum(dy * ref.conv2d_forward(x, wt, b, s, p)))
    dx, dw, db = ref.conv2d_backward(dy, x, wt, s, p)
    assert_close("dx", dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    assert_close("dw", dw, numerical_grad(loss, wt), rtol=1e-6, atol=1e-7)
    assert_close("db", db, numerical_grad(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size,s", [(2, 2), (3, 2), (3, 1), (2, 3)])
def test_reference_pool_gradients_by_finite_differences(size, s):
    rng = np.random.default_rng(3)
    # distinct values spaced far apart so no max is within eps of a tie
    x = rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8).astype(np.float64) * 0.1
    y, arg = ref.maxpool2d_forward(x, size, s)
    dy = rng.standard_normal(y.shape)
    loss_max = lambda: float(np.sum(dy * ref.maxpool2d_forward(x, size, s)[0]))
    assert_close("maxpool dx", ref.maxpool2d_backward(dy, arg, x.shape, size, s),
                 numerical_grad(loss_max, x, eps=1e-4), rtol=1e-6, atol=1e-7)
    loss_avg = lambda: float(np.sum(dy * ref.avgpool2d_forward(x, size, s)))
    assert_close("avgpool dx", ref.avgpool2d_backward(dy, x.shape, size, s),
                 numerical_grad(loss_avg, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("case", [(2, 3, 7, 9, 2, 3, 2, 1), (1, 2, 6, 6, 3, 3, 1, 2), (2, 1, 5, 8, 5, 1, 3, 0)])
def test_col2im_is_the_adjoint_of_im2col(name, case):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    n, c, h, w, kh, kw, s, p = case
    k = backend(name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w))
    cols = k.im2col(x, kh, kw, s, p)
    cr = rng.standard_normal(cols.shape)
    lhs = float(np.sum(cols * cr))
    rhs = float(np.sum(x * k.col2im(cr, x.shape, kh, kw, s, p)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (lhs, rhs)


def test_maxpool_ties_pick_the_first_maximum_on_every_backend():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 1.0      # two maxima in the first window
    for name in ("numpy", "numba", "cython"):
        y, arg = backend(name).maxpool2d_forward(x)
        assert arg[0, 0, 0, 0] == 1, name    # row-major first: (0, 1)
