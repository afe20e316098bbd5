"""Registered datasets: loading the real files, the resolution order, checksum
errors, recompressed copies, and the preparation helpers."""
import gzip
import shutil
import tracemalloc

import numpy as np
import pytest

from fastlenet import data


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_real_dataset(real_data, name):
    ds = data.load(name, data_dir=real_data, download_missing=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert np.bincount(ds.y_test).tolist() == ([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
                                              if name == "mnist" else [1000] * 10)
    assert ds.num_classes == 10 and ds.flip_ok == (name == "fashion-mnist")


def test_folder_itself_or_its_named_subfolder(real_data, isolated_cache):
    a = data.load("mnist", data_dir=real_data, download_missing=False)          # <folder>/mnist
    b = data.load("mnist", data_dir=real_data / "mnist", download_missing=False)  # the folder itself
    assert a.source == b.source


def test_environment_variable_then_user_cache(real_data, isolated_cache, monkeypatch, tmp_path):
    with pytest.raises(data.DatasetNotFound, match="is not in any of"):
        data.load("mnist", download_missing=False)
    monkeypatch.setenv("FASTLENET_DATA", str(real_data))
    assert data.load("mnist", download_missing=False).source == str(real_data / "mnist")
    monkeypatch.delenv("FASTLENET_DATA")
    shutil.copytree(real_data / "mnist", isolated_cache / "mnist")
    assert data.load("mnist", download_missing=False).source == str(isolated_cache / "mnist")


def test_system_folder_is_searched_last(real_data, isolated_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [real_data])
    assert data.load("fashion-mnist", download_missing=False).source == str(real_data / "fashion-mnist")


def test_recompressed_copies_are_accepted_and_corrupt_ones_named(real_data, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in (real_data / "mnist").iterdir():
        payload = gzip.decompress(f.read_bytes())
        if "labels" in f.name:
            (folder / f.name).write_bytes(gzip.compress(payload, compresslevel=1))   # recompressed
        else:
            (folder / f.name[:-3]).write_bytes(payload)                              # raw
    ds = data.load("mnist", data_dir=tmp_path, download_missing=False)
    assert ds.x_train.shape == (60000, 1, 28, 28)
    raw = folder / "t10k-images-idx3-ubyte"
    blob = bytearray(raw.read_bytes())
    blob[5000] ^= 1
    raw.write_bytes(bytes(blob))
    with pytest.raises(data.ChecksumError, match="t10k-images-idx3-ubyte: checksum mismatch for mnist"):
        data.load("mnist", data_dir=tmp_path, download_missing=False)


def test_unknown_dataset_and_idx_without_folder():
    with pytest.raises(data.DatasetNotFound, match="unknown dataset 'cifar'"):
        data.load("cifar")
    with pytest.raises(data.DatasetNotFound, match="needs --data-dir"):
        data.load("idx")


def test_full_mnist_loads_as_float32_nchw_in_unit_range(real_data):
    ds = data.load("mnist", data_dir=real_data, download_missing=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


# ---------------------------------------------------------------------------- preparation
def test_stratified_split_is_deterministic_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), [100, 200, 50, 80, 120, 90, 60, 70, 110, 120])
    tr, va = data.stratified_split(labels, 0.2, seed=3)
    tr2, va2 = data.stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    counts = np.bincount(labels[va], minlength=10)
    np.testing.assert_array_equal(counts, np.round(0.2 * np.bincount(labels)).astype(int))
    assert not np.array_equal(va, data.stratified_split(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="validation fraction must be in"):
        data.stratified_split(labels, 1.0)


def test_batches_cover_everything_once_with_a_short_last_batch():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    got = list(data.batches(x, y, 4, np.random.default_rng(0)))
    assert [len(b[1]) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in got]).tolist()) == list(range(10))
    for bx, by in got:
        np.testing.assert_array_equal(bx[:, 0], by * 2)
    again = [b[1].tolist() for b in data.batches(x, y, 4, np.random.default_rng(0))]
    assert again == [b[1].tolist() for b in got]
    assert [b[1].tolist() for b in data.batches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batches_do_not_copy_the_dataset():
    x = np.zeros((20000, 1, 28, 28), np.float32)           # 62 MB
    y = np.zeros(20000, np.int64)
    tracemalloc.start()
    for bx, by in data.batches(x, y, 256, np.random.default_rng(0)):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < x.nbytes / 10, peak


def test_standardize_and_pad():
    ds = data.Dataset("t", np.full((4, 1, 2, 2), 0.5, np.float32) + np.arange(4, dtype=np.float32)[:, None, None, None],
                      np.zeros(4, int), np.ones((2, 1, 2, 2), np.float32), np.zeros(2, int), ("a",))
    data.standardize(ds)
    assert abs(ds.x_train.mean()) < 1e-6 and abs(ds.x_train.std() - 1) < 1e-5
    assert ds.mean == pytest.approx([2.0]) and ds.std[0] > 0          # one per channel


def test_standardize_per_channel():
    rng = np.random.default_rng(0)
    x = rng.random((50, 3, 4, 4), dtype=np.float32) * np.array([1, 10, 100], np.float32)[:, None, None]
    ds = data.Dataset("t", x.copy(), np.zeros(50, int), x[:5].copy(), np.zeros(5, int), ("a", "b"))
    data.standardize(ds)
    assert len(ds.mean) == 3 and ds.mean[2] > 10 * ds.mean[1] > 10 * ds.mean[0]
    for c in range(3):
        plane = ds.x_train[:, c]
        assert abs(plane.mean()) < 1e-5 and abs(plane.std() - 1) < 1e-4
    np.testing.assert_allclose(ds.x_test, ds.x_train[:5], rtol=0, atol=0)
    padded = data.pad_to(np.ones((1, 1, 28, 28), np.float32), 32)
    assert padded.shape == (1, 1, 32, 32) and padded.sum() == 784 and padded[0, 0, 2, 2] == 1
    with pytest.raises(ValueError, match="cannot pad"):
        data.pad_to(np.ones((1, 1, 33, 33)), 32)


def test_rotation_and_erasing():
    from fastlenet.augment import augment, rotated
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[:, 0, 14, 4:24] = 1.0                                  # a horizontal bar
    r = rotated(x, np.array([90.0, 0.0]))
    np.testing.assert_allclose(r[1], x[1], atol=1e-6)        # 0 degrees: unchanged
    assert r[0, 0, 4:24, 13:15].sum() > 15 and r[0, 0, 14, :4].sum() == 0     # now vertical
    rng = np.random.default_rng(0)
    ones = np.ones((200, 3, 10, 12), np.float32)
    erased = augment(ones, rng, max_shift=0, erase=0.5)
    hit = (erased == 0).any(axis=(1, 2, 3))
    assert 70 < hit.sum() < 130                              # about half the images
    frac = (erased[hit] == 0).mean(axis=(1, 2, 3))
    assert frac.min() >= 0.015 and frac.max() <= 0.25        # 2-20% of the image (rounded sides)
    plain = augment(ones, np.random.default_rng(1), max_shift=2)
    same = augment(ones, np.random.default_rng(1), max_shift=2, rotate=0.0, erase=0.0)
    np.testing.assert_array_equal(plain, same)               # unused kinds draw nothing


def test_elastic_warps_are_smooth_bounded_and_draw_nothing_when_off():
    from fastlenet.augment import WARP_GRID, augment, elastic_warped
    x = np.zeros((3, 1, 28, 28), np.float32)
    x[:, 0, 14, 4:24] = 1.0                                  # a horizontal bar
    np.testing.assert_array_equal(elastic_warped(x, np.zeros((3, 2, WARP_GRID, WARP_GRID))), x)
    shift = np.zeros((3, 2, WARP_GRID, WARP_GRID))
    shift[0, 0] = -2.0                                       # every pixel reads 2 rows up: moved down
    shift[1, 1] = 0.5                                        # half a pixel to the left: blended
    warped = elastic_warped(x, shift)
    np.testing.assert_allclose(warped[0, 0, 16, 4:24], 1.0, atol=1e-6)
    assert warped[0, 0, 14].sum() == 0
    np.testing.assert_allclose(warped[1, 0, 14, 3:24], np.r_[0.5, np.ones(19), 0.5], atol=1e-6)
    rng = np.random.default_rng(0)
    bent = augment(x, rng, max_shift=0, elastic=2.0)
    assert bent.shape == x.shape and bent.dtype == x.dtype and 0 <= bent.min() and bent.max() <= 1 + 1e-6
    assert not np.array_equal(bent, x)
    ones = np.ones((4, 1, 12, 12), np.float32)
    plain = augment(ones, np.random.default_rng(1), max_shift=2)
    np.testing.assert_array_equal(plain, augment(ones, np.random.default_rng(1), max_shift=2, elastic=0.0))


@pytest.mark.parametrize("max_shift,flip", [(1, False), (2, True), (3, False)])
def test_shifts_and_flips_are_the_drawn_ones_image_by_image(max_shift, flip):
    """The vectorised shift (one gather over sliding windows) against a readable loop
    that replays the same draws: each image moved by its own (oy, ox), zero fill."""
    from fastlenet.augment import augment
    x = np.random.default_rng(3).random((9, 2, 7, 6)).astype(np.float32) + 1
    got = augment(x, np.random.default_rng(11), max_shift, flip=flip)
    rng = np.random.default_rng(11)
    oy, ox = rng.integers(0, 2 * max_shift + 1, 9), rng.integers(0, 2 * max_shift + 1, 9)
    mirrored = rng.random(9) < 0.5 if flip else np.zeros(9, bool)
    for i in range(9):
        expected = np.zeros_like(x[i])
        for r in range(7):
            for c in range(6):
                sr, sc = r + oy[i] - max_shift, c + ox[i] - max_shift
                if 0 <= sr < 7 and 0 <= sc < 6:
                    expected[:, r, c] = x[i, :, sr, sc]
        np.testing.assert_array_equal(got[i], expected[:, :, ::-1] if mirrored[i] else expected)
    assert got.flags.c_contiguous and got.dtype == x.dtype


def test_a_limit_converts_only_the_first_images_and_keeps_every_class(synthetic_idx):
    full = data.load("idx", data_dir=synthetic_idx)
    few = data.load("idx", data_dir=synthetic_idx, limit=5)
    assert few.x_train.shape == (5,) + full.x_train.shape[1:] and few.y_train.shape == (5,)
    np.testing.assert_array_equal(few.x_train, full.x_train[:5])
    np.testing.assert_array_equal(few.y_train, full.y_train[:5])
    assert len(np.unique(few.y_train)) < len(full.class_names)
    assert few.class_names == full.class_names              # classes from every label, not the first 5
    np.testing.assert_array_equal(few.x_test, full.x_test)
