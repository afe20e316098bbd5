"""CIFAR-10 from the official binary format: synthetic archives in that exact layout,
found on disk or downloaded from a local HTTP server, checked before use."""
import io
import tarfile

import numpy as np
import pytest

from fastlenet import cifar, data
from test_download import Handler, start_server


def synthetic_archive(records_per_batch=20, seed=0, extra=None):
    """(archive bytes, {batch file: (images, labels)}) in the official layout."""
    rng = np.random.default_rng(seed)
    parts, buf = {}, io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for base in cifar.TRAIN_FILES + cifar.TEST_FILES + ("batches.meta.txt",):
            if base.endswith(".bin"):
                images = rng.integers(0, 256, (records_per_batch, 3, 32, 32)).astype(np.uint8)
                labels = rng.integers(0, 10, records_per_batch)
                parts[base] = (images, labels)
                blob = cifar.encode_records(images, labels)
            else:
                blob = "\n".join(cifar.CLASS_NAMES).encode()
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{base}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for name, blob in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), parts


@pytest.fixture
def registered(monkeypatch):
    """Register a synthetic archive's checksum and size as the official ones."""
    blob, parts = synthetic_archive()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", data.md5_hex(blob))
    monkeypatch.setattr(cifar, "ARCHIVE_SIZE", len(blob))
    return blob, parts


def check_dataset(ds, parts):
    x_test, y_test = parts["test_batch.bin"]
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.y_test, y_test)
    np.testing.assert_allclose(ds.x_test, x_test / np.float32(255), rtol=0, atol=1e-7)
    first, labels = parts["data_batch_1.bin"]
    np.testing.assert_array_equal(ds.y_train[:20], labels)
    # the planes are red, green, blue: record byte 1 + 1024 is the first green pixel
    raw = cifar.encode_records(first, labels)
    assert raw[1 + 1024] == first[0, 1, 0, 0]
    assert ds.class_names == cifar.CLASS_NAMES and ds.flip_ok


def test_the_archive_from_a_data_dir(tmp_path, registered, isolated_cache):
    blob, parts = registered
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / cifar.ARCHIVE).write_bytes(blob)
    check_dataset(data.load("cifar10", data_dir=tmp_path), parts)


def test_a_limit_keeps_the_first_training_images(tmp_path, registered, isolated_cache):
    blob, parts = registered
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / cifar.ARCHIVE).write_bytes(blob)
    full = data.load("cifar10", data_dir=tmp_path)
    few = data.load("cifar10", data_dir=tmp_path, limit=30)
    assert few.x_train.shape == (30, 3, 32, 32) and few.y_train.shape == (30,)
    np.testing.assert_array_equal(few.x_train, full.x_train[:30])
    np.testing.assert_array_equal(few.y_train, full.y_train[:30])
    np.testing.assert_array_equal(few.x_test, full.x_test)


def test_extracted_batch_files(tmp_path, registered, isolated_cache):
    blob, parts = registered
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            (tmp_path / m.name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / m.name).write_bytes(tar.extractfile(m).read())
    check_dataset(data.load("cifar10", data_dir=tmp_path), parts)
    only_test = data.load("cifar10", data_dir=tmp_path, test_only=True)
    assert len(only_test.y_train) == 0 and len(only_test.y_test) == 20


def test_download_from_a_local_mirror_then_the_cache(registered, isolated_cache, monkeypatch, capsys):
    blob, parts = registered
    monkeypatch.setattr(Handler, "files", {cifar.ARCHIVE: blob})     # served as /good/<name>
    url, httpd = start_server()
    try:
        monkeypatch.setattr(cifar, "MIRRORS", (url + "/good/",))
        check_dataset(data.load("cifar10"), parts)
        assert "downloading cifar-10-binary.tar.gz" in capsys.readouterr().err
        assert (isolated_cache / "cifar10" / cifar.ARCHIVE).read_bytes() == blob
        monkeypatch.setattr(cifar, "MIRRORS", ("http://127.0.0.1:9/",))     # the cache, no network
        check_dataset(data.load("cifar10"), parts)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_corrupt_archive_is_refused_by_checksum(tmp_path, registered, isolated_cache):
    blob, _ = registered
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / cifar.ARCHIVE).write_bytes(bytes(bad))
    with pytest.raises(data.ChecksumError, match="MD5 .* is not the published"):
        data.load("cifar10", data_dir=tmp_path)


def test_a_member_whose_header_claims_too_much_is_refused_unread(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{cifar.FOLDER}/test_batch.bin")
        info.size = cifar.MAX_RECORDS * cifar.RECORD + cifar.RECORD       # one record too many
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    (tmp_path / cifar.ARCHIVE).write_bytes(buf.getvalue())
    with pytest.raises(data.IDXError, match="not a CIFAR-10 batch file"):
        cifar.read_archive(tmp_path / cifar.ARCHIVE, ["test_batch.bin"])


@pytest.mark.parametrize("blob,message", [
    (b"\0" * 3000, "is not a whole number of CIFAR-10 records"),
    (bytes([12]) + b"\0" * 3072, "label 12 is not a CIFAR-10 class"),
])
def test_records_are_checked(blob, message):
    with pytest.raises(data.IDXError, match=message):
        cifar.decode_records(blob, "x.bin")


def test_a_data_dir_without_cifar_is_an_error(tmp_path, isolated_cache):
    with pytest.raises(data.DatasetNotFound, match="does not hold cifar10"):
        data.load("cifar10", data_dir=tmp_path)
