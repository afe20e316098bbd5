"""Downloading, for real, from an HTTP server on 127.0.0.1 that these tests start:
good files, a 404 mirror before a good one, a corrupt file, a connection that
drops mid-file, every mirror down -- and hostile mirrors: one that streams without
end, one that announces more than the file's size, one that trickles a byte at a
time, and a transfer interrupted by the user.  None of them leaves a file behind."""
import dataclasses
import gzip
import http.server
import threading
import time

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
        if mode in ("endless", "trickle"):
            self._stream_without_end(mode)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 40 if mode == "huge" else len(body)))   # huge: a terabyte
        self.end_headers()
        if mode == "drop":                       # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def _stream_without_end(self, mode):
        """No Content-Length; zeros for ever (fast), or one byte every 20 ms (trickle)."""
        self.send_response(200)
        self.end_headers()
        block = b"\0" * (1 << 16 if mode == "endless" else 1)
        try:
            while True:
                self.wfile.write(block)
                if mode == "trickle":
                    self.wfile.flush()
                    time.sleep(0.02)
        except OSError:
            pass


def start_server():
    """A threaded HTTP server of Handler on 127.0.0.1: (its base URL, the server)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


@pytest.fixture
def server():
    url, httpd = start_server()
    yield url
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
        sizes = {base: len(files[f"{base}.gz"]) for base in md5}
        info = data.DatasetInfo("tiny", md5, gz_md5, tuple(f"{server}/{m}/" for m in modes), tuple("0123456789"),
                                gz_size=sizes)
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
    assert "drop/train-images-idx3-ubyte.gz" in text and "Fix: pass --data-dir DIR" in text
    leftovers = list((isolated_cache / "tiny").glob("*")) if (isolated_cache / "tiny").exists() else []
    assert leftovers == [], leftovers


def test_all_mirrors_down_gives_one_clear_message(registered, isolated_cache):
    registered("missing", "corrupt")
    with pytest.raises(data.DatasetNotFound) as err:
        data.load("tiny")
    text = str(err.value)
    assert "HTTP 404" in text and "missing/train-images-idx3-ubyte.gz" in text
    assert "corrupt/train-images-idx3-ubyte.gz" in text
    assert "FASTLENET_DATA" in text


def test_nothing_listening_is_reported(monkeypatch, isolated_cache):
    files, md5, gz_md5 = tiny_dataset()
    info = data.DatasetInfo("tiny", md5, gz_md5, ("http://127.0.0.1:9/",), tuple("0123456789"))
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    with pytest.raises(data.DatasetNotFound, match="cannot connect"):
        data.load("tiny")


def test_real_mnist_downloads_from_a_local_mirror(real_data, server, monkeypatch, isolated_cache):
    files = {p.name: p.read_bytes() for p in (real_data / "mnist").iterdir()}
    monkeypatch.setattr(Handler, "files", files)
    info = dataclasses.replace(data.DATASETS["mnist"], mirrors=(f"{server}/missing/", f"{server}/good/"))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    ds = data.load("mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert (isolated_cache / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def _cache_is_empty(cache):
    folder = cache / "tiny"
    return not folder.exists() or list(folder.iterdir()) == []


def test_a_mirror_that_streams_without_end_is_cut_at_the_known_size(registered, isolated_cache):
    registered("endless", "good")
    assert data.load("tiny").x_train.shape[0] == 30          # the good mirror after it
    registered("endless")
    (isolated_cache / "tiny").joinpath("train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DatasetNotFound, match="more than the .* bytes expected"):
        data.load("tiny")
    assert not (isolated_cache / "tiny" / "train-images-idx3-ubyte.gz").exists()


def test_unknown_size_is_capped(registered, isolated_cache, monkeypatch):
    from fastlenet import download
    monkeypatch.setattr(download, "MAX_UNKNOWN_BYTES", 1 << 20)
    info = dataclasses.replace(registered("endless"), gz_size={})
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    with pytest.raises(data.DatasetNotFound, match="more than the 1048576 bytes expected"):
        data.load("tiny")
    assert _cache_is_empty(isolated_cache)


def test_an_announced_size_above_the_known_one_is_refused_before_reading(registered, isolated_cache):
    registered("huge")
    with pytest.raises(data.DatasetNotFound, match="announces 1099511627776 bytes"):
        data.load("tiny")
    assert _cache_is_empty(isolated_cache)


def test_a_trickling_mirror_meets_the_overall_deadline(registered, isolated_cache, monkeypatch):
    from fastlenet import download
    registered("trickle")
    started = time.monotonic()
    with pytest.raises(data.DatasetNotFound, match="deadline"):
        data.download(data.DATASETS["tiny"], isolated_cache / "tiny", deadline=0.5, retries=0)
    assert time.monotonic() - started < 5          # the socket timeout (30 s) never fired
    assert _cache_is_empty(isolated_cache)
    assert download.deadline_for(26421856) == pytest.approx(60 + 26421856 / (64 << 10))


def test_an_interrupted_download_leaves_nothing(registered, isolated_cache, monkeypatch):
    from fastlenet import download
    registered("good")
    calls = []

    def interrupt(n):
        calls.append(n)
        raise KeyboardInterrupt
    real_fetch = download.fetch
    monkeypatch.setattr(download, "fetch", lambda url, size, timeout, deadline, progress, on_start:
                        real_fetch(url, size, timeout, deadline, interrupt, on_start))
    with pytest.raises(KeyboardInterrupt):
        data.load("tiny")
    assert calls and _cache_is_empty(isolated_cache)


def test_each_transfer_that_starts_is_announced_on_stderr(registered, isolated_cache, capsys):
    registered("missing", "good")
    data.load("tiny")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fastlenet: downloading")]
    assert len(lines) == 4                         # per file: the good mirror (the 404 never started)
    assert "train-images-idx3-ubyte.gz (23.6 kB" in lines[0] and "/good/" in lines[0]


def test_offline_is_one_short_line_with_the_two_fixes(monkeypatch, isolated_cache, tmp_path, capsys):
    files, md5, gz_md5 = tiny_dataset()
    mirrors = ("http://127.0.0.1:9/a/", "http://127.0.0.1:9/b/", "http://localhost:9/c/")
    monkeypatch.setitem(data.DATASETS, "tiny", data.DatasetInfo("tiny", md5, gz_md5, mirrors, tuple("0123456789")))
    with pytest.raises(data.DatasetNotFound) as err:
        data.load("tiny")
    text = str(err.value)
    assert "\n" not in text and len(text) < 600, text
    assert text.count("cannot connect") == 1 and "127.0.0.1:9, localhost:9" in text    # hosts, once each
    assert "--data-dir" in text and "network access" in text
    assert capsys.readouterr().err == ""          # nothing announced: no transfer started
