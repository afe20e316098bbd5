"""Downloading, for real, from an HTTP server on 127.0.0.1 that these tests start:
good files, a 404 mirror before a good one, a corrupt file, a connection that
drops mid-file, and every mirror down."""
import dataclasses
import gzip
import http.server
import threading

import numpy as np
import pytest

from fastlenet import data


class Handler(http.server.BaseHTTPRequestHandler):
    files = {}          # name -> bytes

    def log_message(self, *args):
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if mode == "missing" or body is None:
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:-10] + b"0123456789"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":                       # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def tiny_dataset(seed=0):
    """Four small IDX .gz files and a DatasetInfo with their checksums."""
    rng = np.random.default_rng(seed)
    files, md5, gz_md5 = {}, {}, {}
    for base in data.SPLIT_FILES.values():
        n = 30 if base.startswith("train") else 10
        arr = (rng.integers(0, 256, (n, 28, 28)) if "images" in base else rng.integers(0, 10, n)).astype(np.uint8)
        payload = data.encode_idx(arr)
        blob = gzip.compress(payload, mtime=0)
        files[f"{base}.gz"] = blob
        md5[base], gz_md5[base] = data.md5_hex(payload), data.md5_hex(blob)
    return files, md5, gz_md5


@pytest.fixture
def registered(server, monkeypatch, isolated_cache):
    files, md5, gz_md5 = tiny_dataset()
    monkeypatch.setattr(Handler, "files", files)

    def register(*modes):
        info = data.DatasetInfo("tiny", md5, gz_md5, tuple(f"{server}/{m}/" for m in modes), tuple("0123456789"))
        monkeypatch.setitem(data.DATASETS, "tiny", info)
        return info
    return register


def test_download_into_the_user_cache(registered, isolated_cache):
    registered("good")
    ds = data.load("tiny")
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert sorted(p.name for p in (isolated_cache / "tiny").iterdir()) == sorted(Handler.files)
    data.load("tiny", download_missing=False)              # now found in the cache


def test_404_mirror_then_a_good_one(registered, isolated_cache):
    registered("missing", "good")
    assert data.load("tiny").x_train.shape[0] == 30


def test_corrupt_file_is_refused_and_the_next_mirror_used(registered, isolated_cache):
    registered("corrupt", "good")
    assert data.load("tiny").x_train.shape[0] == 30


def test_dropped_connection_leaves_no_file_that_looks_complete(registered, isolated_cache):
    registered("drop")
    with pytest.raises(data.DatasetNotFound) as err:
        data.load("tiny")
    text = str(err.value)
    assert "drop/train-images-idx3-ubyte.gz" in text and "Put the four .gz files" in text
    leftovers = list((isolated_cache / "tiny").glob("*")) if (isolated_cache / "tiny").exists() else []
    assert leftovers == [], leftovers


def test_all_mirrors_down_gives_one_clear_message(registered, isolated_cache):
    registered("missing", "corrupt")
    with pytest.raises(data.DatasetNotFound) as err:
        data.load("tiny")
    text = str(err.value)
    assert "missing/train-images-idx3-ubyte.gz: HTTPError" in text
    assert "corrupt/train-images-idx3-ubyte.gz" in text
    assert "FASTLENET_DATA" in text


def test_nothing_listening_is_reported(monkeypatch, isolated_cache):
    files, md5, gz_md5 = tiny_dataset()
    info = data.DatasetInfo("tiny", md5, gz_md5, ("http://127.0.0.1:9/",), tuple("0123456789"))
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    with pytest.raises(data.DatasetNotFound, match="ConnectionError"):
        data.load("tiny")


def test_real_mnist_downloads_from_a_local_mirror(real_data, server, monkeypatch, isolated_cache):
    files = {p.name: p.read_bytes() for p in (real_data / "mnist").iterdir()}
    monkeypatch.setattr(Handler, "files", files)
    info = dataclasses.replace(data.DATASETS["mnist"], mirrors=(f"{server}/missing/", f"{server}/good/"))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    ds = data.load("mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert (isolated_cache / "mnist" / "train-images-idx3-ubyte.gz").is_file()
