"""NaN and Inf semantics, one definition for every backend: they propagate, as in the
NumPy reference and PyTorch.  A window holding a NaN pools to NaN (its first NaN is the
argmax), ReLU keeps NaN, and a fused conv + ReLU + max pool gives NaN wherever the
reference composition does, with no gradient through it (NaN > 0 is false)."""
import numpy as np
import pytest

from checks import COMPILED, assert_close, backend
from fastlenet.kernels import reference as ref

BACKENDS = ("numpy",) + COMPILED


def planted(shape, spots, value, seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    for spot in spots:
        x[spot] = value
    return x



# NaN first in its window, last in its window, two NaNs in one window; +Inf and -Inf
SPOTS = [(0, 0, 0, 0), (0, 1, 3, 3), (1, 0, 4, 5), (1, 0, 5, 4), (1, 2, 7, 7)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_propagates_nan_with_the_first_nan_as_argmax(name, size, stride, dtype):
    x = planted((2, 3, 8, 8), SPOTS, np.nan, dtype=dtype)
    x[0, 2, 1, 1], x[1, 1, 6, 6] = np.inf, -np.inf
    want_y, want_arg = ref.maxpool2d_forward(x, size, stride)
    assert np.isnan(want_y).sum() >= 4                    # the reference propagates
    y, arg = backend(name).maxpool2d_forward(x, size, stride)
    assert_close("y", y, want_y)
    assert np.array_equal(arg, want_arg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("geometry", [
    ((2, 1, 28, 28), (6, 1, 5, 5), 2),        # LeNet C1: a fused tile path
    ((2, 6, 14, 14), (16, 6, 5, 5), 0),       # LeNet C3: filters along the lanes
    ((2, 2, 40, 40), (4, 2, 3, 3), 1),        # wide rows: the pool after the stored conv
], ids=["C1", "C3", "wide"])
def test_fused_conv_relu_pool_propagates_nan_like_the_reference(name, geometry, dtype):
    x_shape, w_shape, pad = geometry
    x = planted(x_shape, [(0, 0, 3, 3), (1, 0, x_shape[2] - 1, 0)], np.nan, dtype=dtype)
    x[1, 0, 5, 5] = np.inf
    rng = np.random.default_rng(1)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) * 0.1
    with np.errstate(invalid="ignore"):
        z = ref.conv2d_forward(x, w, b, 1, pad)
        want_y, want_arg = ref.maxpool2d_forward(np.maximum(z, 0), 2, 2)
        want_arg = np.where(want_y > 0, want_arg, -1)     # ReLU blocks the gradient (and NaN's)
    assert np.isnan(want_y).any()
    oh, ow = z.shape[2:]
    y, arg = backend(name).fast.conv2d_relu_maxpool_forward(x, w, b, 1, pad, oh, ow, 2, 2)
    assert_close("fused y", y, want_y)
    assert np.array_equal(arg, want_arg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("geometry", [
    ((2, 32, 8, 8), (32, 32, 3, 3)),          # Winograd (cython), tiles gathered one by one
    ((2, 8, 33, 31), (16, 8, 3, 3)),          # Winograd, tile columns along the lanes; its dW too
    ((2, 64, 10, 10), (64, 64, 5, 5)),        # F(2x2, 5x5), gathered
    ((2, 16, 17, 19), (16, 16, 5, 5)),        # F(2x2, 5x5), along the lanes
], ids=["narrow", "wide", "narrow-5x5", "wide-5x5"])
def test_a_winograd_conv_puts_nan_and_inf_where_the_reference_does(name, geometry, dtype):
    """Through Winograd's transforms one Inf would turn outputs of its tiles that do not
    depend on it into NaN (Inf - Inf): such a sample is computed again as plain sums (a dW
    that is not finite, by the direct dW)."""
    x_shape, w_shape = geometry
    if name == "cython":
        paths = backend(name).plan_conv2d(x_shape, w_shape, 1, 1, dtype=dtype)
        winograd = f"winograd_f2x2_{w_shape[2]}x{w_shape[3]}"
        # float64 takes the Winograd dx on narrow rows only (plan.WINOGRAD_FLOAT64)
        assert paths.forward == winograd and (paths.dx == winograd or dtype == np.float64)
    x = planted(x_shape, [(0, 3 % x_shape[1], 4, 4)], np.inf, dtype=dtype)
    x[1, 0, 2, 5] = np.nan
    rng = np.random.default_rng(2)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    with np.errstate(invalid="ignore"):
        want = ref.conv2d_forward(x, w, b, 1, 1)
        dz = rng.standard_normal(want.shape).astype(dtype)
        dz[0, 1, 3, 3] = -np.inf
        want_dx, want_dw, _ = ref.conv2d_backward(dz, x, w, 1, 1)
    assert np.isinf(want).any() and np.isnan(want).any()
    y = backend(name).conv2d_forward(x, w, b, 1, 1)
    with np.errstate(invalid="ignore"):
        dx, dw, _ = backend(name).conv2d_backward(dz, x, w, 1, 1)
    for what, got, ref_ in (("y", y, want), ("dx", dx, want_dx), ("dw", dw, want_dw)):
        assert np.array_equal(np.isinf(got), np.isinf(ref_)), f"{what}: Inf in different places"
        assert_close(what, got, ref_)


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", [
    ((1, 64, 16, 16), (64, 64, 3, 3)),        # the forward's filters shared by two threads, dW, dx
    ((1, 8, 33, 31), (128, 8, 3, 3)),         # ... tile columns along the lanes
    ((1, 16, 24, 24), (32, 16, 5, 5)),        # F(2x2, 5x5)
], ids=["3x3", "3x3-wide-rows", "5x5"])
def test_a_winograd_sample_shared_among_threads_puts_nan_and_inf_where_the_reference_does(geometry, dtype):
    """Batch 1 on two threads: each thread's share of the filters falls back to plain sums
    on its own when its outputs are not finite."""
    from fastlenet import kernels
    x_shape, w_shape = geometry
    p = w_shape[2] // 2
    x = planted(x_shape, [(0, 3, 4, 4)], np.inf, dtype=dtype)
    x[0, 0, 2, 5] = np.nan
    rng = np.random.default_rng(3)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    with np.errstate(invalid="ignore"):
        want = ref.conv2d_forward(x, w, b, 1, p)
        dz = rng.standard_normal(want.shape).astype(dtype)
        dz[0, 1, 3, 3] = -np.inf
        want_dx, want_dw, _ = ref.conv2d_backward(dz, x, w, 1, p)
    kernels.set_num_threads(2)
    y = backend("cython").conv2d_forward(x, w, b, 1, p)
    with np.errstate(invalid="ignore"):
        dx, dw, _ = backend("cython").conv2d_backward(dz, x, w, 1, p)
    for what, got, ref_ in (("y", y, want), ("dx", dx, want_dx), ("dw", dw, want_dw)):
        assert np.array_equal(np.isinf(got), np.isinf(ref_)), f"{what}: Inf in different places"
        assert_close(what, got, ref_)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_nan_image_gives_nan_logits_on_every_backend(name):
    from fastlenet import models
    model = models.build("lenet5", backend=name, seed=0)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    x[2, 0, 14, 14] = np.nan                         # one pixel of one image
    logits = model.forward(x)
    assert np.isnan(logits[2]).all()
    assert np.isfinite(np.delete(logits, 2, axis=0)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predict_refuses_non_finite_inputs_in_one_line(synthetic_idx, tmp_path, capsys, bad):
    from fastlenet import predict, train
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 0
    image = np.zeros((28, 28), np.float32)
    image[3, 4] = bad
    np.save(tmp_path / "bad.npy", image)
    capsys.readouterr()
    assert predict.main([str(out / "best.npz"), str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 of its 784 values are NaN or infinite" in err and len(err.splitlines()) == 1


def test_predict_refuses_a_decompression_bomb_from_its_header(synthetic_idx, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    from fastlenet import predict, train
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 0
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)        # a small file, 400 MP
    assert bomb.stat().st_size < 2_000_000
    capsys.readouterr()
    assert predict.main([str(out / "best.npz"), str(bomb)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is more than the 16,777,216 pixels" in err and len(err.splitlines()) == 1
    Image.new("1", (5000, 5000)).save(bomb)                         # under Pillow's limit, over ours
    assert predict.main([str(out / "best.npz"), str(bomb)]) == 2
    assert "5000x5000 is more than the 16,777,216 pixels" in capsys.readouterr().err
