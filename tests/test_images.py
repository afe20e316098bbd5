"""Reading what users hand to predict (fastlenet.images): values scaled by their real
range (16-bit, 32-bit, float 0..1), transparency composited (the drawing in the alpha
channel, or over black), channel-last arrays only when unambiguous, header bombs
refused -- each against the value it must give."""
import numpy as np
import pytest

from fastlenet import images

PIL = pytest.importorskip("PIL.Image")


def digit(h=28, w=28):
    a = np.zeros((h, w), np.float64)
    a[6:22, 12:16] = 1.0                     # a "1"
    a[6:9, 9:16] = 0.5
    return a


def read_png(tmp_path, img, name="x.png"):
    path = tmp_path / name
    img.save(path)
    notes = []
    return images.read_picture(path, notes)[0, 0], notes


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = (digit() * 40000).astype(np.uint16)
    got, notes = read_png(tmp_path, PIL.fromarray(a))
    np.testing.assert_allclose(got, a / 65535, atol=1e-6)
    assert any("scaled by 65535" in n for n in notes)


@pytest.mark.parametrize("peak,full", [(200, 255), (60000, 65535), (3_000_000, 2**31 - 1)])
def test_32_bit_integer_image_is_scaled_by_the_range_that_holds_it(tmp_path, peak, full):
    a = (digit() * peak).astype(np.int32)
    got, _ = read_png(tmp_path, PIL.fromarray(a, mode="I"), "x.tif")
    np.testing.assert_allclose(got, a / full, atol=1e-6)


def test_float_image_in_0_1_is_kept(tmp_path):
    a = digit().astype(np.float32)
    got, _ = read_png(tmp_path, PIL.fromarray(a, mode="F"), "x.tif")
    np.testing.assert_allclose(got, a, atol=1e-7)
    assert got.max() == 1.0                  # not near-black


def test_drawing_in_the_alpha_channel_is_read_as_ink(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)               # black strokes on transparency
    rgba[..., 3] = (digit() * 255).astype(np.uint8)
    got, notes = read_png(tmp_path, PIL.fromarray(rgba, "RGBA"))
    np.testing.assert_allclose(got, rgba[..., 3] / 255, atol=1e-6)
    assert any("alpha channel" in n for n in notes)


def test_varied_colour_with_transparency_is_composited_over_black(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 0] = np.linspace(0, 255, 28).astype(np.uint8)[None, :]
    rgba[..., 1] = rgba[..., 2] = rgba[..., 0]
    rgba[..., 3] = 255
    rgba[:14, :, 3] = 0                                   # top half transparent
    got, notes = read_png(tmp_path, PIL.fromarray(rgba, "RGBA"))
    assert np.all(got[:14] == 0)
    np.testing.assert_allclose(got[14:], np.broadcast_to(rgba[14:, :, 0] / 255, (14, 28)), atol=2e-3)
    assert any("over black" in n for n in notes)


def test_palette_and_bilevel_pictures(tmp_path):
    got, _ = read_png(tmp_path, PIL.fromarray((digit() > 0.7).astype(np.uint8) * 255).convert("1"))
    assert set(np.unique(got)) == {0.0, 1.0}
    got, _ = read_png(tmp_path, PIL.fromarray((digit() * 255).astype(np.uint8)).convert("P"))
    np.testing.assert_allclose(got, digit(), atol=2 / 255)


@pytest.mark.parametrize("shape,expect", [
    ((28, 28), (1, 1, 28, 28)),
    ((5, 28, 28), (5, 1, 28, 28)),
    ((28, 28, 3), (1, 1, 28, 28)),          # one RGB image, not 28 images
    ((28, 28, 4), (1, 1, 28, 28)),
    ((6, 28, 28, 3), (6, 1, 28, 28)),
    ((6, 3, 28, 28), (6, 1, 28, 28)),
    ((6, 1, 28, 28), (6, 1, 28, 28)),
])
def test_array_layouts_accepted(tmp_path, shape, expect):
    a = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    assert images.read_array(tmp_path / "a.npy", []).shape == expect


def test_channel_last_grey_matches_luminance(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3)).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    want = np.asarray(PIL.fromarray(rgb).convert("L"), np.float32) / 255
    np.testing.assert_allclose(images.read_array(tmp_path / "rgb.npy", [])[0, 0], want, atol=1.5 / 255)


@pytest.mark.parametrize("shape", [(5, 28, 3), (28, 28, 2), (2, 28, 28, 28, 1), (6, 5, 28, 28)])
def test_ambiguous_layouts_are_refused_naming_the_shape(tmp_path, shape):
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    with pytest.raises(images.ImageError, match=rf"shape \({shape[0]}, "):
        images.read_array(tmp_path / "a.npy", [])


@pytest.mark.parametrize("array,message", [
    (np.full((28, 28), -3, np.int64), "negative pixel values"),
    (np.full((28, 28), 300.0), "neither 0..1 nor 0..255"),
    (np.array(["a"] * 4).reshape(2, 2), "not numeric"),
    (np.zeros((0, 28, 28), np.uint8), "empty"),
    (np.zeros((0, 4, 28, 28), bool), "empty"),          # found by tests/robustness_campaign.py
])
def test_bad_values_are_refused(tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(images.ImageError, match=message):
        images.read_array(tmp_path / "a.npy", [])


def test_integer_arrays_of_8_bit_values_and_uint16(tmp_path):
    np.save(tmp_path / "i.npy", (digit() * 255).astype(np.int64))       # NumPy's default int
    np.testing.assert_allclose(images.read_array(tmp_path / "i.npy", [])[0, 0], digit(), atol=1 / 255)
    np.save(tmp_path / "u.npy", (digit() * 65535).astype(">u2"))
    np.testing.assert_allclose(images.read_array(tmp_path / "u.npy", [])[0, 0], digit(), atol=1e-5)


def test_npy_whose_header_promises_more_than_the_file_holds(tmp_path):
    path = tmp_path / "bomb.npy"
    np.save(path, np.zeros((2, 2), np.float64))
    raw = path.read_bytes().replace(b"(2, 2)", b"(100000, 100000)")
    path.write_bytes(raw)
    with pytest.raises(images.ImageError, match="promises a .100000, 100000. float64 array"):
        images.read_array(path, [])


def test_box_resize_averages_and_keeps_constants():
    a = np.arange(56 * 56, dtype=np.float32).reshape(1, 1, 56, 56)
    got = images.resize(a, 28)
    want = a.reshape(1, 1, 28, 2, 28, 2).mean((3, 5))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(images.resize(np.full((2, 1, 37, 19), 0.25, np.float32), 28), 0.25, rtol=1e-6)
    small = images.resize(np.eye(4, dtype=np.float32)[None, None], 8)
    np.testing.assert_array_equal(small[0, 0], np.kron(np.eye(4), np.ones((2, 2))))
