"""--limit reads only the kept images of a .gz file whose own MD5 is the published one
or was checked whole before (fastlenet.verified); anything else is checked whole."""
import gzip
import json
import os
import stat

import numpy as np
import pytest

from fastlenet import data, verified


def _write_tiny(folder, compresslevel=9):
    """Four IDX .gz files (30 train, 10 test images) and their (payload, .gz) MD5s."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    md5, gz_md5 = {}, {}
    for base in data.SPLIT_FILES.values():
        n = 30 if base.startswith("train") else 10
        arr = (rng.integers(0, 256, (n, 28, 28)) if "images" in base else rng.integers(0, 10, n)).astype(np.uint8)
        payload = data.encode_idx(arr)
        blob = gzip.compress(payload, compresslevel=compresslevel, mtime=0)
        (folder / f"{base}.gz").write_bytes(blob)
        md5[base], gz_md5[base] = data.md5_hex(payload), data.md5_hex(blob)
    return md5, gz_md5


@pytest.fixture
def tiny(tmp_path, monkeypatch, isolated_cache):
    """A registered dataset 'tiny' in tmp_path/tiny, and the list of files decompressed whole."""
    md5, gz_md5 = _write_tiny(tmp_path / "tiny")
    monkeypatch.setitem(data.DATASETS, "tiny", data.DatasetInfo("tiny", md5, gz_md5, (), tuple("0123456789")))
    whole = []
    gunzip = data._gunzip

    def counting(blob, name):
        whole.append(name.rsplit("/", 1)[-1])
        return gunzip(blob, name)
    monkeypatch.setattr(data, "_gunzip", counting)
    return tmp_path, whole


def _load(folder, limit=None):
    return data.load("tiny", data_dir=folder, download_missing=False, limit=limit)


def test_a_limit_reads_only_the_kept_images_of_the_published_files(tiny):
    folder, whole = tiny
    few = _load(folder, limit=7)
    assert sorted(whole) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    del whole[:]
    full = _load(folder)
    assert len(whole) == 4
    np.testing.assert_array_equal(few.x_train, full.x_train[:7])
    np.testing.assert_array_equal(few.y_train, full.y_train[:7])
    np.testing.assert_array_equal(few.x_test, full.x_test)
    assert _load(folder, limit=1000).x_train.shape == full.x_train.shape    # a limit past the end keeps all


def test_a_recompressed_copy_is_checked_whole_once_then_read_in_part(tiny, isolated_cache):
    folder, whole = tiny
    md5 = data.DATASETS["tiny"].md5
    _write_tiny(folder / "tiny", compresslevel=1)             # same payloads, other .gz bytes
    first = _load(folder, limit=5)
    assert "train-images-idx3-ubyte.gz" in whole
    pairs = json.loads((isolated_cache / "verified.json").read_text())["pairs"]
    assert md5["train-images-idx3-ubyte"] in pairs.values()
    del whole[:]
    second = _load(folder, limit=5)
    assert "train-images-idx3-ubyte.gz" not in whole
    np.testing.assert_array_equal(first.x_train, second.x_train)


def test_a_changed_file_is_checked_whole_again_and_refused(tiny, isolated_cache):
    folder, whole = tiny
    _write_tiny(folder / "tiny", compresslevel=1)
    _load(folder, limit=5)                                      # recorded
    path = folder / "tiny" / "train-images-idx3-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[-1] ^= 1                                            # past the kept images
    path.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    with pytest.raises(data.ChecksumError, match="train-images"):
        _load(folder, limit=5)


def test_a_record_file_fastlenet_did_not_write_is_ignored_and_kept(tiny, isolated_cache):
    folder, whole = tiny
    _write_tiny(folder / "tiny", compresslevel=1)
    isolated_cache.mkdir(parents=True)
    foreign = b'{"pairs": {"x": "y"}}'
    (isolated_cache / "verified.json").write_bytes(foreign)
    _load(folder, limit=5)
    _load(folder, limit=5)
    assert whole.count("train-images-idx3-ubyte.gz") == 2      # never trusted
    assert (isolated_cache / "verified.json").read_bytes() == foreign


def test_a_record_path_that_is_a_fifo_is_neither_read_nor_replaced(tiny, isolated_cache):
    folder, whole = tiny
    _write_tiny(folder / "tiny", compresslevel=1)
    isolated_cache.mkdir(parents=True)
    os.mkfifo(isolated_cache / "verified.json")          # reading it would block
    _load(folder, limit=5)
    assert stat.S_ISFIFO(os.stat(isolated_cache / "verified.json").st_mode)
    assert "train-images-idx3-ubyte.gz" in whole


def test_a_forged_record_cannot_make_a_wrong_payload_pass(tiny, isolated_cache):
    folder, whole = tiny
    _write_tiny(folder / "tiny", compresslevel=1)
    path = folder / "tiny" / "train-images-idx3-ubyte.gz"
    verified.remember(data.md5_hex(path.read_bytes()), "0" * 32)   # recorded beside another payload MD5
    _load(folder, limit=5)
    assert "train-images-idx3-ubyte.gz" in whole


def test_the_record_keeps_only_the_newest_pairs(isolated_cache):
    for i in range(verified.MAX_ENTRIES + 5):
        verified.remember(f"{i:032x}", "f" * 32)
    pairs = json.loads(verified.record_path().read_text())["pairs"]
    assert len(pairs) == verified.MAX_ENTRIES and f"{4:032x}" not in pairs and verified.payload_md5(f"{5:032x}")
    verified.remember("not a checksum", "f" * 32)
    assert verified.payload_md5("not a checksum") is None


@pytest.mark.parametrize("cut", [3, 20, 200, 20000])
def test_a_truncated_gzip_head_is_an_idx_error(cut):
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)   # incompressible
    blob = gzip.compress(data.encode_idx(images))
    with pytest.raises(data.IDXError, match="truncated|too short|corrupt"):
        data.gunzip_head(blob[:cut], "x.gz", 40)
    assert data.decode_idx(data.gunzip_head(blob, "x.gz", 40)).shape == (40, 28, 28)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_a_limit_on_the_real_files_keeps_their_first_images(real_data, isolated_cache, name):
    few = data.load(name, data_dir=real_data, download_missing=False, limit=512)
    again = data.load(name, data_dir=real_data, download_missing=False, limit=512)   # read in part
    full = data.load(name, data_dir=real_data, download_missing=False)
    for ds in (few, again):
        np.testing.assert_array_equal(ds.x_train, full.x_train[:512])
        np.testing.assert_array_equal(ds.y_train, full.y_train[:512])
