"""CIFAR-10 from its official binary archive (never the pickled "python version").

Dimension legend: N images, C channels (3: red, green, blue), H/W height/width (32).

``cifar-10-binary.tar.gz`` (170,052,171 bytes, MD5
c32a1d4ab5d03f1284b67883e8d87530, from the dataset's page) holds
``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` (training) and
``test_batch.bin``: records of one label byte (0..9) and 3072 pixel bytes -- the
red plane, then green, then blue, each 32x32 row-major.  Found, like MNIST, in
``--data-dir`` (the folder or ``<dir>/cifar10``), ``$FASTLENET_DATA``, the user
cache, ``/usr/share/datasets``, then downloaded (progress, deadline, MD5 before
anything is written).  A folder may hold the archive or its extracted ``.bin``
files (then only their record structure can be checked: the published checksum
is the archive's).  The archive is read member by member from the gzip stream;
its headers are checked before any member is read, so memory stays bounded
whatever the file claims.
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .data import (ChecksumError, Dataset, DatasetNotFound, IDXError, _progress_enabled, cache_dir,
                   check_asked_folder, search_dirs, to_float)
from .download import TransferError, fetch_verified, md5_hex

NAME = "cifar10"
#: a mirrored CIFAR-10 image still shows its class (training flips, --tta flips)
FLIP_OK = True
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_SIZE = 170_052_171
MIRRORS: Tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32
#: the most records one batch file may hold (the official files hold 10,000)
MAX_RECORDS = 10_000


def decode_records(blob: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    if len(blob) == 0 or len(blob) % RECORD:
        raise IDXError(f"{name}: {len(blob):,} bytes is not a whole number of CIFAR-10 records "
                          f"({RECORD} bytes: a label byte and 3072 pixel bytes)")
    records = np.frombuffer(blob, np.uint8).reshape(-1, RECORD)
    if len(records) > MAX_RECORDS:
        raise IDXError(f"{name}: {len(records):,} records; a CIFAR-10 batch file holds at most {MAX_RECORDS:,}")
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise IDXError(f"{name}: label {int(labels.max())} is not a CIFAR-10 class (0..9): not a CIFAR-10 file")
    return records[:, 1:].reshape((-1,) + IMAGE_SHAPE).copy(), labels


def read_archive(path: Path, wanted: List[str]) -> Dict[str, bytes]:
    """The batch files ``wanted`` from the archive at ``path``, each header checked
    (a regular file, at most MAX_RECORDS records) before its bytes are read."""
    found: Dict[str, bytes] = {}
    limit = MAX_RECORDS * RECORD
    try:
        with tarfile.open(path, "r|gz") as tar:           # a stream: one pass, nothing extracted
            for member in tar:
                base = Path(member.name).name
                if base not in wanted or base in found:
                    continue
                if not member.isfile() or member.size > limit:
                    raise IDXError(f"{path}: member {member.name} is not a CIFAR-10 batch file "
                                      f"({'not a regular file' if not member.isfile() else f'{member.size:,} bytes'})")
                found[base] = tar.extractfile(member).read()
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise IDXError(f"{path}: not a readable tar.gz archive ({type(exc).__name__}: {exc})") from None
    missing = [b for b in wanted if b not in found]
    if missing:
        raise IDXError(f"{path}: the archive has no {', '.join(missing)}")
    return found


def _in_folder(folder: Path, wanted: List[str]) -> Optional[Path]:
    """``folder``'s archive, or the folder holding all ``wanted`` .bin files, or None."""
    for d in (folder / NAME, folder):
        if (d / ARCHIVE).is_file():
            return d / ARCHIVE
        for sub in (d / FOLDER, d):
            if all((sub / b).is_file() for b in wanted):
                return sub
    return None


def _verify_archive(path: Path) -> None:
    size = path.stat().st_size
    if size != ARCHIVE_SIZE:
        raise ChecksumError(f"{path}: {size:,} bytes, the published {ARCHIVE} has {ARCHIVE_SIZE:,}; delete it "
                            "and download it again, or point --data-dir elsewhere")
    digest = md5_hex(path.read_bytes())
    if digest != ARCHIVE_MD5:
        raise ChecksumError(f"{path}: MD5 {digest} is not the published {ARCHIVE_MD5}; the file is corrupt or "
                            "a different archive: delete it and download it again")


def download(dest: Optional[Path] = None, timeout: float = 30.0, progress: Optional[bool] = None) -> Path:
    """Fetch the archive into ``dest`` (default: the user cache) within the bounds of
    :mod:`fastlenet.download`; returns its path."""
    dest = Path(dest) if dest is not None else cache_dir() / NAME
    urls = [m.rstrip("/") + "/" + ARCHIVE for m in MIRRORS]
    try:
        return fetch_verified(urls, ARCHIVE, ARCHIVE_MD5, ARCHIVE_SIZE, dest, timeout=timeout,
                              progress=_progress_enabled() if progress is None else progress)
    except TransferError as exc:
        raise DatasetNotFound(f"downloading {ARCHIVE} failed: {exc}") from None


def locate(data_dir=None, wanted: Optional[List[str]] = None) -> Optional[Path]:
    """The archive or the folder of batch files in the first searched folder that has
    them (``fastlenet info``), or None."""
    wanted = wanted or list(TRAIN_FILES + TEST_FILES)
    return next((f for f in (_in_folder(d, wanted) for d in search_dirs(NAME, data_dir)) if f), None)


def _source(data_dir, wanted: List[str], download_missing: bool) -> Path:
    """Where the files are: the first searched folder holding them, else a download."""
    check_asked_folder(NAME, data_dir, holds=lambda folder: _in_folder(folder, wanted) is not None,
                       wanted=f"{ARCHIVE} or {FOLDER}/{{{', '.join(wanted)}}}")
    found = locate(data_dir, wanted)
    if found is not None:
        return found
    if not download_missing:
        raise DatasetNotFound(f"cifar10 is not in any of: {', '.join(map(str, search_dirs(NAME, data_dir)))}")
    try:
        return download()
    except DatasetNotFound as exc:
        raise DatasetNotFound(f"cifar10 is not in {' or '.join(map(str, search_dirs(NAME, data_dir)))}, and {exc}. "
                              f"Fix: pass --data-dir DIR (or set FASTLENET_DATA) to a folder with {ARCHIVE} "
                              "or its extracted files, or allow network access") from None


def load(data_dir=None, download_missing: bool = True, verify: bool = True, test_only: bool = False,
         limit=None):
    """CIFAR-10 as a :class:`fastlenet.data.Dataset`: float32 (N, 3, 32, 32) in [0, 1]; with
    ``limit``, the first ``limit`` training images only (only those converted to float)."""
    wanted = list(TEST_FILES if test_only else TRAIN_FILES + TEST_FILES)
    where = _source(data_dir, wanted, download_missing)
    if where.is_file():
        if verify:
            _verify_archive(where)
        blobs = read_archive(where, wanted)
    else:
        blobs = {b: (where / b).read_bytes() for b in wanted}
    parts = {b: decode_records(blobs[b], str(where / b if where.is_dir() else f"{where}:{b}")) for b in wanted}
    x_test, y_test = parts[TEST_FILES[0]]
    if test_only:
        x_train, y_train = x_test[:0], y_test[:0]
    else:
        x_train = np.concatenate([parts[b][0] for b in TRAIN_FILES])[:limit]
        y_train = np.concatenate([parts[b][1] for b in TRAIN_FILES])[:limit]
    return Dataset(NAME, to_float(x_train), y_train, to_float(x_test), y_test, CLASS_NAMES, flip_ok=FLIP_OK,
                   source=str(where), image_size=IMAGE_SHAPE[1:])


def encode_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """(N, 3, 32, 32) uint8 images and labels -> one batch file's bytes (for tests and tools)."""
    images = np.asarray(images, np.uint8).reshape(len(labels), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], images], axis=1).tobytes()
