"""The checked wrappers: every bad call raises a clear error naming the
argument, on every backend, and never reaches compiled code."""
import numpy as np
import pytest

from checks import backend

ALL = ["numpy", "numba", "cython"]
f32 = np.float32


def good(rng=np.random.default_rng(0)):
    x = rng.standard_normal((2, 3, 8, 8)).astype(f32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(f32)
    b = np.zeros(4, f32)
    return x, w, b


CONV_FORWARD_ERRORS = [
    # (description, mutate(x, w, b, kwargs), exception, message fragment)
    ("x is a list", lambda x, w, b, kw: (x.tolist(), w, b, kw), TypeError, "x must be a numpy.ndarray"),
    ("x is 3-D", lambda x, w, b, kw: (x[0], w, b, kw), ValueError, "x must be 4-D"),
    ("x is int", lambda x, w, b, kw: (x.astype(np.int64), w, b, kw), TypeError, "x must be float32 or float64"),
    ("mixed dtypes", lambda x, w, b, kw: (x, w.astype(np.float64), b, kw), TypeError, "w has dtype float64"),
    ("b dtype", lambda x, w, b, kw: (x, w, b.astype(np.float64), kw), TypeError, "b has dtype float64"),
    ("channels", lambda x, w, b, kw: (x, w[:, :2].copy(), b, kw), ValueError, "input channels"),
    ("b shape", lambda x, w, b, kw: (x, w, b[:3], kw), ValueError, "b must have shape (4,)"),
    ("non-contiguous", lambda x, w, b, kw: (x[:, :, ::2], w, b, kw), ValueError, "x must be C-contiguous"),
    ("transposed", lambda x, w, b, kw: (x.transpose(0, 1, 3, 2), w, b, kw), ValueError, "C-contiguous"),
    ("empty batch", lambda x, w, b, kw: (x[:0], w, b, kw), ValueError, "x must not be empty"),
    ("stride 0", lambda x, w, b, kw: (x, w, b, dict(stride=0)), ValueError, "stride must be >= 1"),
    ("negative pad", lambda x, w, b, kw: (x, w, b, dict(pad=-1)), ValueError, "pad must be >= 0"),
    ("float stride", lambda x, w, b, kw: (x, w, b, dict(stride=1.5)), TypeError, "stride must be an int"),
    ("bool pad", lambda x, w, b, kw: (x, w, b, dict(pad=True)), TypeError, "pad must be an int"),
    ("huge stride", lambda x, w, b, kw: (x, w, b, dict(stride=10**9)), ValueError, "stride must be <="),
    ("kernel too big", lambda x, w, b, kw: (x[:, :, :2, :2].copy(), w, b, kw), ValueError, "larger than the padded input"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("desc,mutate,exc,msg", CONV_FORWARD_ERRORS, ids=[c[0] for c in CONV_FORWARD_ERRORS])
def test_conv2d_forward_rejects(name, desc, mutate, exc, msg):
    x, w, b = good()
    x, w, b, kw = mutate(x, w, b, {})
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        backend(name).conv2d_forward(x, w, b, **kw)


@pytest.mark.parametrize("name", ALL)
def test_conv2d_backward_rejects_bad_dy(name):
    k = backend(name)
    x, w, b = good()
    dy = np.zeros((2, 4, 6, 6), f32)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 4, 6, 6\), got \(2, 4, 5, 6\)"):
        k.conv2d_backward(dy[:, :, :5].copy(), x, w)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        k.conv2d_backward(dy.astype(np.float64), x, w)
    with pytest.raises(ValueError, match="dy must be 4-D"):
        k.conv2d_backward(dy[0], x, w)


@pytest.mark.parametrize("name", ALL)
def test_im2col_col2im_reject(name):
    k = backend(name)
    x = np.zeros((1, 2, 5, 5), f32)
    with pytest.raises(ValueError, match="kh must be >= 1"):
        k.im2col(x, 0, 3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        k.im2col(x, 9, 3, pad=1)
    cols = k.im2col(x, 3, 3)
    with pytest.raises(ValueError, match=r"cols must have shape \(1, 18, 12\), got \(1, 18, 9\)"):
        k.col2im(cols, (1, 2, 6, 5), 3, 3)
    with pytest.raises(ValueError, match="x_shape must have 4 entries"):
        k.col2im(cols, (2, 5, 5), 3, 3)
    with pytest.raises(ValueError, match=r"x_shape\[0\] must be >= 1"):
        k.col2im(cols, (0, 2, 5, 5), 3, 3)


@pytest.mark.parametrize("name", ALL)
def test_pool_rejects(name):
    k = backend(name)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(f32)
    y, arg = k.maxpool2d_forward(x)
    with pytest.raises(ValueError, match="size must be >= 1"):
        k.maxpool2d_forward(x, size=0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        k.avgpool2d_forward(x, size=7)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        k.avgpool2d_forward(x, size=2, stride=0)
    with pytest.raises(TypeError, match="arg must be the int32 array"):
        k.maxpool2d_backward(y, arg.astype(np.int64), x.shape)
    with pytest.raises(ValueError, match="arg must have shape"):
        k.maxpool2d_backward(y, arg[:, :, :2].copy(), x.shape)
    bad = arg.copy()
    bad[0, 0, 0, 0] = 36                     # one past the end of a 6x6 plane
    with pytest.raises(ValueError, match="arg holds indices outside 0..35"):
        k.maxpool2d_backward(y, bad, x.shape)
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="outside"):
        k.maxpool2d_backward(y, bad, x.shape)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 4, 4\), got \(2, 3, 3, 3\)"):
        k.avgpool2d_backward(y, (2, 3, 8, 8))
    with pytest.raises(TypeError, match="dy has dtype float64|dy must be float32"):
        k.avgpool2d_backward(y.astype(np.int32), x.shape)
