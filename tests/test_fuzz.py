"""Fuzzing the two readers of untrusted files: every input either loads or raises
the project's own error (IDXError / CheckpointError) - never another exception,
a hang, or an allocation beyond the file's size.  The long campaign is
`python tests/fuzz_campaign.py --cases 100000`."""
import gzip
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastlenet import checkpoint, data, models

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_idx(gz):
    blob = data.encode_idx(np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4))
    return gzip.compress(blob, mtime=0) if gz else blob


def read_or_refuse(blob, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        arr = data.read_idx(path)
    except data.IDXError as exc:
        assert str(exc)
        arr = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * len(blob) + (1 << 20), f"allocated {peak} bytes for {len(blob)} input bytes"
    return arr


@FUZZ
@given(blob=st.binary(max_size=300))
def test_random_bytes(tmp_path_factory, blob):
    read_or_refuse(blob, tmp_path_factory.mktemp("f"))


@FUZZ
@given(gz=st.booleans(), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips(tmp_path_factory, gz, flips):
    blob = bytearray(valid_idx(gz))
    for pos, bit in flips:
        blob[pos % len(blob)] ^= 1 << bit
    read_or_refuse(bytes(blob), tmp_path_factory.mktemp("f"))


@FUZZ
@given(gz=st.booleans(), cut=st.integers(0, 10**6))
def test_truncations(tmp_path_factory, gz, cut):
    blob = valid_idx(gz)
    read_or_refuse(blob[: cut % len(blob)], tmp_path_factory.mktemp("f"))


@FUZZ
@given(code=st.integers(0, 255), dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=5),
       body=st.binary(max_size=64), gz=st.booleans())
def test_crafted_headers(tmp_path_factory, code, dims, body, gz):
    blob = bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes() + body
    read_or_refuse(gzip.compress(blob) if gz else blob, tmp_path_factory.mktemp("f"))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "c.npz"
    checkpoint.save(path, models.build("lenet5", backend="numpy"), {"epoch": 1})
    return path.read_bytes()


def load_or_refuse(blob, tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(blob)
    try:
        checkpoint.load_model(path, backend="numpy")
    except checkpoint.CheckpointError as exc:
        assert str(exc)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 7)), min_size=1, max_size=3))
def test_checkpoint_bit_flips(tmp_path_factory, good_checkpoint, flips):
    blob = bytearray(good_checkpoint)
    for pos, bit in flips:
        blob[pos % len(blob)] ^= 1 << bit
    load_or_refuse(bytes(blob), tmp_path_factory.mktemp("c"))


@FUZZ
@given(cut=st.integers(0, 10**7))
def test_checkpoint_truncations(tmp_path_factory, good_checkpoint, cut):
    load_or_refuse(good_checkpoint[: cut % len(good_checkpoint)], tmp_path_factory.mktemp("c"))


@FUZZ
@given(blob=st.binary(max_size=400))
def test_checkpoint_random_bytes(tmp_path_factory, blob):
    load_or_refuse(b"PK\x03\x04" + blob, tmp_path_factory.mktemp("c"))
