"""The IDX codec: round trips, and a crafted file for every way a file can be bad."""
import gzip
import tracemalloc

import numpy as np
import pytest

from fastlenet import data
from fastlenet.data import IDXError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, dtype, shape, gz):
    a = (np.arange(np.prod(shape)) - 3).astype(dtype).reshape(shape)
    path = tmp_path / ("f.idx.gz" if gz else "f.idx")
    data.write_idx(path, a)
    b = data.read_idx(path, ndim=len(shape))
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def valid(images=3):
    return data.encode_idx(np.arange(images * 4, dtype=np.uint8).reshape(images, 2, 2))


def header(code=0x08, dims=(3, 2, 2)):
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


BAD = [
    ("bad magic", b"\x01\x02" + valid()[2:], "bad magic number"),
    ("unknown type code", header(0x0A) + bytes(12), "unknown IDX type code 0x0a"),
    ("rank 0", bytes([0, 0, 8, 0]), "rank 0"),
    ("short header", b"\x00\x00", "too short for an IDX header"),
    ("truncated header", header()[:9], "truncated IDX header"),
    ("truncated data", valid()[:-3], "truncated"),
    ("trailing bytes", valid() + b"xx", "trailing bytes"),
    ("empty", b"", "too short"),
]


@pytest.mark.parametrize("desc,blob,msg", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("gz", [False, True])
def test_bad_files_are_refused_with_a_clear_message(tmp_path, desc, blob, msg, gz):
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(IDXError, match=msg):
        data.read_idx(path, ndim=3)


def test_rank_mismatch(tmp_path):
    path = tmp_path / "labels"
    data.write_idx(path, np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="expected a rank-3 IDX file, got rank 1"):
        data.read_idx(path, ndim=3)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(valid(50))[:-20])
    with pytest.raises(IDXError, match="truncated or corrupt gzip"):
        data.read_idx(path)


def test_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(valid(50)))
    blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "c.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(IDXError, match="corrupt gzip|truncated|bad magic|header"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_header_is_refused_before_allocating(tmp_path, gz):
    blob = header(dims=(10**9, 28, 28)) + bytes(100)
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    tracemalloc.start()
    with pytest.raises(IDXError, match="header says|impossible"):
        data.read_idx(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10 * 2**20, f"allocated {peak} bytes for a {path.stat().st_size}-byte file"


def test_an_empty_array_with_huge_other_dimensions_is_refused():
    """A zero dimension makes the data 0 bytes, but NumPy cannot describe the array its
    other dimensions ask for (found by the fuzzer: dims 0 x 39338 x 472217 x 62064870)."""
    blob = bytes([0, 0, 0x0E, 4]) + np.asarray([0, 39338, 472217, 62064870], ">u4").tobytes()
    with pytest.raises(IDXError, match="empty array"):
        data.decode_idx(blob)


def test_image_label_count_mismatch_and_label_range(tmp_path):
    for split, n in (("train", 4), ("t10k", 2)):
        data.write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        data.write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8))
    ds = data.load("idx", data_dir=tmp_path)
    assert ds.num_classes == 4 and ds.x_train.shape == (4, 1, 28, 28)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(IDXError, match="train: 4 images but 3 labels"):
        data.load("idx", data_dir=tmp_path)


def test_labels_outside_0_to_9_in_a_registered_dataset(tmp_path, monkeypatch, isolated_cache):
    import dataclasses
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split in ("train", "t10k"):
        data.write_idx(folder / f"{split}-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
        data.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.array([3, 12], np.uint8))
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], mirrors=()))
    with pytest.raises(IDXError, match=r"labels outside 0..9 \(found 3..12\)"):
        data.load("mnist", data_dir=tmp_path, verify=False)


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(IDXError, match="cannot write dtype complex128"):
        data.write_idx(tmp_path / "x", np.zeros(2, complex))
