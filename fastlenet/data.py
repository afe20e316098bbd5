"""Datasets: the IDX codec, the dataset registry, finding/downloading the files,
and turning them into float32 NCHW batches.

Dimension legend: N images, C channels (1 for MNIST, 3 for CIFAR-10), H/W height/width.

Errors are all :class:`DatasetError` subclasses with a message that says what
is wrong and how to fix it: :class:`IDXError` (a malformed file),
:class:`ChecksumError` (right format, wrong content) and
:class:`DatasetNotFound` (nowhere to be found, download impossible).
"""
from __future__ import annotations

import gzip
import io
import math
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .augment import augment  # noqa: F401  (data.augment: the training augmentations, fastlenet.augment)
from .download import md5_hex  # noqa: F401  (data.md5_hex: the one checksum helper)
from . import verified
from .fileio import atomic_write_bytes


class DatasetError(Exception):
    """Base class of every data error fastlenet raises."""


class IDXError(DatasetError, ValueError):
    """A file that is not a valid IDX file (bad header, truncated, corrupt gzip, ...)."""


class ChecksumError(DatasetError):
    """A dataset file whose content does not match the registered checksum."""


class DatasetNotFound(DatasetError):
    """The dataset's files are in none of the searched places and could not be downloaded."""


# --------------------------------------------------------------------------- IDX codec
#: IDX type code -> big-endian dtype
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
#: no IDX payload above this is accepted (the largest real ones are ~50 MB)
MAX_PAYLOAD = 1 << 32
#: deflate cannot expand data by more than ~1032x; a header claiming more is a lie
MAX_GZIP_RATIO = 1100


def _name(source) -> str:
    return str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>"


def _raw_bytes(source) -> Tuple[bytes, bool]:
    """The file's bytes and whether they are gzip-compressed."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    return data, data[:2] == b"\x1f\x8b"


def _parse_header(head: bytes, name: str, ndim: Optional[int]):
    if len(head) < 4:
        raise IDXError(f"{name}: file too short for an IDX header ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise IDXError(f"{name}: bad magic number {head[:4].hex()} (an IDX file starts with 00 00)")
    code, rank = head[2], head[3]
    if code not in IDX_TYPES:
        raise IDXError(f"{name}: unknown IDX type code 0x{code:02x} (known: "
                       + ", ".join(f"0x{c:02x}" for c in IDX_TYPES) + ")")
    if rank == 0:
        raise IDXError(f"{name}: IDX rank 0 (no dimensions)")
    if ndim is not None and rank != ndim:
        raise IDXError(f"{name}: expected a rank-{ndim} IDX file, got rank {rank}")
    return IDX_TYPES[code], rank


def _shape(head: bytes, rank: int, name: str) -> Tuple[int, ...]:
    if len(head) < 4 + 4 * rank:
        raise IDXError(f"{name}: truncated IDX header (needs {4 + 4 * rank} bytes, has {len(head)})")
    return tuple(int(d) for d in np.frombuffer(head, ">u4", count=rank, offset=4))


def decode_idx(data: bytes, name: str = "<bytes>", ndim: Optional[int] = None,
               compressed_size: Optional[int] = None) -> np.ndarray:
    """Parse an uncompressed IDX payload (header + data) into a native-endian array."""
    dtype, rank = _parse_header(data[:4], name, ndim)
    shape = _shape(data[: 4 + 4 * rank], rank, name)
    expected = math.prod(shape) * dtype.itemsize        # exact (Python ints)
    body = len(data) - 4 - 4 * rank
    if body != expected:
        what = "truncated" if body < expected else "trailing bytes after the data"
        raise IDXError(f"{name}: header says {shape} x {dtype.itemsize} bytes = {expected} bytes "
                       f"of data, file holds {body} ({what})")
    if math.prod(d for d in shape if d) * dtype.itemsize > MAX_PAYLOAD:
        # a zero dimension beside huge ones: an empty array NumPy cannot even describe
        raise IDXError(f"{name}: header says {shape} x {dtype.itemsize} bytes: an empty array whose other "
                       f"dimensions exceed the {MAX_PAYLOAD:,}-byte limit of an IDX file")
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * rank).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress, refusing before any large allocation a header that claims an impossible size."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            head = f.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in IDX_TYPES:
                rank = head[3]
                head += f.read(4 * rank)
                dtype = IDX_TYPES[head[2]]
                if len(head) == 4 + 4 * rank:
                    shape = _shape(head, rank, name)
                    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                    limit = min(MAX_PAYLOAD, MAX_GZIP_RATIO * len(data))
                    if claimed > limit:
                        raise IDXError(f"{name}: header claims {shape} ({claimed:,} bytes), "
                                       f"impossible for a {len(data):,}-byte gzip file")
                    return head + f.read(claimed + 1)   # one byte more reveals trailing data
            return head + f.read(MAX_GZIP_RATIO * len(data))
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(f"{name}: truncated or corrupt gzip data ({exc})") from None


def _inflate(stream, data: bytes, size: int, name: str) -> bytes:
    """Exactly ``size`` more bytes from a zlib stream fed ``data`` (the previous call's unconsumed tail)."""
    out = stream.decompress(data, size)
    while len(out) < size and stream.unconsumed_tail:
        out += stream.decompress(stream.unconsumed_tail, size - len(out))
    if len(out) < size:
        raise IDXError(f"{name}: truncated gzip data ({len(out)} of {size} bytes)")
    return out


def gunzip_head(data: bytes, name: str, records: int) -> bytes:
    """The first ``records`` items of a gzip IDX file (N, ...), as the payload of an IDX file of
    that many items: only they are decompressed (0.01 s for 512 MNIST images, the whole file
    0.2 s).  The rest of the file is not read, so only for a file checked by other means."""
    stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        head = _inflate(stream, data, 4, name)
        dtype, rank = _parse_header(head, name, None)
        head += _inflate(stream, stream.unconsumed_tail, 4 * rank, name)
        shape = _shape(head, rank, name)
        kept = min(records, shape[0])
        body = _inflate(stream, stream.unconsumed_tail, kept * math.prod(shape[1:]) * dtype.itemsize, name)
    except zlib.error as exc:
        raise IDXError(f"{name}: corrupt gzip data ({exc})") from None
    return head[:4] + kept.to_bytes(4, "big") + head[8:] + body


def read_idx_bytes(source: Union[str, os.PathLike, bytes]) -> bytes:
    """The decompressed IDX payload of a file (raw or gzip) or of bytes."""
    data, gz = _raw_bytes(source)
    return _gunzip(data, _name(source)) if gz else data


def read_idx(source: Union[str, os.PathLike, bytes], ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (raw or gzip, any type code and rank) into a native-endian array."""
    return decode_idx(read_idx_bytes(source), _name(source), ndim)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (header + big-endian data) of ``array``."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IDXError(f"cannot write dtype {array.dtype} as IDX (supported: uint8, int8, int16, int32, float32, float64)")
    if not 1 <= array.ndim <= 255:
        raise IDXError(f"IDX rank must be 1..255, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, IDX_TYPES[code]).tobytes()


def write_idx(path: Union[str, os.PathLike], array: np.ndarray, compress: Optional[bool] = None) -> None:
    """Write ``array`` as IDX; gzip when ``compress`` or when ``path`` ends in .gz. Atomic."""
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)


# --------------------------------------------------------------------------- registry
SPLIT_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its files' checksums, mirrors and class names."""

    name: str
    md5: Dict[str, str]              # file base name -> MD5 of the decompressed payload
    gz_md5: Dict[str, str]           # file base name -> MD5 of the published .gz
    mirrors: Tuple[str, ...]
    class_names: Tuple[str, ...]
    flip_ok: bool = False            # horizontal flips keep the label (clothes yes, digits no)
    gz_size: Dict[str, int] = field(default_factory=dict)   # base name -> bytes of the .gz


DATASETS: Dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        md5={"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        gz_md5={"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        gz_size={"train-images-idx3-ubyte": 9912422, "train-labels-idx1-ubyte": 28881,
                 "t10k-images-idx3-ubyte": 1648877, "t10k-labels-idx1-ubyte": 4542},
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        md5={"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
             "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
             "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
             "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        gz_md5={"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        gz_size={"train-images-idx3-ubyte": 26421856, "train-labels-idx1-ubyte": 29491,
                 "t10k-images-idx3-ubyte": 4422079, "t10k-labels-idx1-ubyte": 5125},
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        flip_ok=True,
    ),
}

#: every name --dataset takes: the registered IDX datasets, CIFAR-10 (fastlenet.cifar), any IDX folder
DATASET_NAMES = sorted(DATASETS) + ["cifar10", "idx"]

def mirror_keeps_label(name: str) -> bool:
    """Whether a mirrored image of dataset ``name`` still shows its class (clothes,
    CIFAR-10 objects: yes; digits and an unknown ``idx`` folder: no) -- the flip_ok its
    loader gives the Dataset."""
    if name in DATASETS:
        return DATASETS[name].flip_ok
    from . import cifar
    return name == cifar.NAME and cifar.FLIP_OK


#: system-wide folders searched after the user cache (Debian: dataset-fashion-mnist)
SYSTEM_DIRS: List[Path] = [Path("/usr/share/datasets")]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fastlenet`` (``~/.cache/fastlenet`` by default, via platformdirs)."""
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("fastlenet", appauthor=False))


def _file_in(folder: Path, base: str) -> Optional[Path]:
    for candidate in (folder / f"{base}.gz", folder / base):
        if candidate.is_file():
            return candidate
    return None


def _files_in(folder: Path, name: str, bases=None) -> Optional[Dict[str, Path]]:
    """The files ``bases`` (default: all four) in ``folder`` or ``folder/<name>``, or None
    when incomplete."""
    for d in (folder / name, folder) if name else (folder,):
        found = {base: _file_in(d, base) for base in (bases or SPLIT_FILES.values())}
        if all(found.values()):
            return found
    return None


def search_dirs(name: str, data_dir: Optional[Union[str, Path]] = None) -> List[Path]:
    """The folders searched for ``name``, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get("FASTLENET_DATA")
    if env:
        dirs.append(Path(env))
    dirs.append(cache_dir())
    dirs.extend(SYSTEM_DIRS)
    return dirs


def locate(name: str, data_dir=None, bases=None) -> Optional[Dict[str, Path]]:
    """The files ``bases`` (default: all four) of registered dataset ``name`` from the first
    searched folder that holds them all (:func:`search_dirs`), or None."""
    return next((f for f in (_files_in(d, name, bases) for d in search_dirs(name, data_dir)) if f), None)


def check_asked_folder(name: str, data_dir, bases=None, holds=None, wanted: Optional[str] = None) -> None:
    """A folder the user named (--data-dir, else $FASTLENET_DATA) must hold the dataset:
    it is never silently skipped for another source.  ``holds(folder)`` says whether it
    does (default: the IDX files ``bases``), ``wanted`` what the message lists."""
    env = os.environ.get("FASTLENET_DATA")
    if data_dir is not None:
        folder, flag, fix = data_dir, f"--data-dir {data_dir}", ""
    elif env:
        folder, flag, fix = env, f"FASTLENET_DATA={env}", "; fix it or unset it"
    else:
        return
    found = holds(Path(folder)) if holds is not None else _files_in(Path(folder), name, bases) is not None
    if found:
        return
    if not Path(folder).exists():
        raise DatasetNotFound(f"{flag} does not exist{fix}")
    raise DatasetNotFound(f"{flag} does not hold {name}: looked in {folder} and {Path(folder) / name} for "
                          f"{wanted or _listing(bases or SPLIT_FILES.values())}{fix}")


def _verified_payload(info: DatasetInfo, base: str, path: Path, records: Optional[int] = None) -> bytes:
    """The checked payload.  With ``records``, of a .gz file whose own MD5 is the published
    one or was checked whole before (fastlenet.verified), only the first ``records`` items
    are decompressed; otherwise the whole payload is, and checked."""
    blob, gz = _raw_bytes(path)                   # read once, whichever way it is checked
    blob_md5 = md5_hex(blob) if records is not None and gz else None
    if blob_md5 is not None and (blob_md5 == info.gz_md5.get(base)
                                 or verified.payload_md5(blob_md5) == info.md5[base]):
        return gunzip_head(blob, str(path), records)
    payload = _gunzip(blob, str(path)) if gz else blob
    digest = md5_hex(payload)
    if digest != info.md5[base]:
        raise ChecksumError(
            f"{path}: checksum mismatch for {info.name} {base} (MD5 of the decompressed data is "
            f"{digest}, expected {info.md5[base]}); the file is corrupt or a different dataset: "
            f"delete it and download it again, or point --data-dir elsewhere"
        )
    if blob_md5 is not None:
        verified.remember(blob_md5, digest)
    return payload


# --------------------------------------------------------------------------- download
def _progress_enabled() -> bool:
    return sys.stderr.isatty()


def download(info: DatasetInfo, dest: Optional[Path] = None, timeout: float = 30.0,
             retries: int = 1, progress: Optional[bool] = None,
             deadline: Optional[float] = None) -> Dict[str, Path]:
    """Fetch the four .gz files from the first mirror that gives each intact (each tried
    1 + ``retries`` times) into ``dest`` (default: the user cache), within the bounds of
    :mod:`fastlenet.download` (known size, one deadline per file, MD5 checked before
    anything is written).  Raises :class:`DatasetNotFound` listing every attempt."""
    from .download import TransferError, fetch_verified

    dest = Path(dest) if dest is not None else cache_dir() / info.name
    progress = _progress_enabled() if progress is None else progress
    paths = {}
    for base in SPLIT_FILES.values():
        fname = f"{base}.gz"
        urls = [mirror.rstrip("/") + "/" + fname for mirror in info.mirrors]
        try:
            paths[base] = fetch_verified(urls, fname, info.gz_md5[base], info.gz_size.get(base), dest,
                                         retries=retries, timeout=timeout, deadline=deadline,
                                         progress=progress)
        except TransferError as exc:
            raise DatasetNotFound(f"downloading {fname} failed: {exc}") from None
    return paths


# --------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """Images as float32 (N, C, H, W) in [0, 1] (or standardised) and int64 labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: Tuple[str, ...]
    flip_ok: bool = False
    source: str = ""
    mean: Optional[List[float]] = None   # standardisation statistics (train set, per channel), if applied
    std: Optional[List[float]] = None
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)     # what loading changed, to tell the user
    image_size: Optional[Tuple[int, int]] = None       # (H, W) as stored, before any padding

    def stored_image_size(self) -> Tuple[int, int]:
        return tuple(self.image_size) if self.image_size else tuple(self.x_train.shape[2:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


#: the most classes a dataset may have (bounds the model's output layer)
MAX_CLASSES = 1000


def _images_and_labels(images: np.ndarray, labels: np.ndarray, what: str, num_classes: Optional[int],
                       limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Checked (float images, int64 labels); with ``limit`` only the first ``limit`` images
    are converted (the labels stay whole: every one is checked, and classes come from all)."""
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise IDXError(f"{what} images must be a rank-3 (N, H, W) or rank-4 (N, C, H, W) uint8 IDX file, "
                       f"got rank {images.ndim} {images.dtype}")
    if labels.ndim != 1:
        raise IDXError(f"{what} labels must be a rank-1 IDX file, got rank {labels.ndim}")
    if len(images) != len(labels):
        raise IDXError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise IDXError(f"{what}: no images")
    labels = _integer_labels(labels, what)
    if num_classes is not None and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise IDXError(f"{what}: labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()})")
    return to_float(images[:limit]), labels


def _integer_labels(labels: np.ndarray, what: str) -> np.ndarray:
    """int64 labels; float labels only when every one is a whole number."""
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            bad = labels[~whole][0]
            raise IDXError(f"{what} labels must be whole numbers: {int((~whole).sum())} of {len(labels)} "
                           f"are not (e.g. {float(bad):g})")
        if np.abs(labels).max() > 2 ** 31:
            raise IDXError(f"{what} labels reach {np.abs(labels).max():g}, too large to be class numbers")
    return labels.astype(np.int64)


def class_mapping(y_train: np.ndarray, y_test: np.ndarray) -> Tuple[np.ndarray, Tuple[str, ...], Optional[str]]:
    """For a dataset whose classes come from its labels (``idx``): the sorted distinct
    label values, the class names (those values) and a note when they are not
    0..K-1 -- the labels are then remapped to 0..K-1 and the names keep the originals."""
    values = np.unique(np.concatenate([np.unique(y_train), np.unique(y_test)]))
    if len(values) > MAX_CLASSES:
        raise IDXError(f"the labels hold {len(values)} distinct values, more than the {MAX_CLASSES} classes "
                       "fastlenet builds a model for")
    names = tuple(str(int(v)) for v in values)
    if values[0] == 0 and values[-1] == len(values) - 1:
        return values, names, None
    shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:10]) + f", ... {names[-1]}"
    note = (f"the labels are not 0..{len(values) - 1} but {{{shown}}}: remapped to {len(values)} classes "
            "0..K-1 in that order; the class names (kept in every checkpoint) are the original values")
    missing = sorted(set(np.unique(y_test)) - set(np.unique(y_train)))
    if missing:
        note += f"; classes {', '.join(str(int(m)) for m in missing[:10])} appear only in the test set"
    return values, names, note


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1] (C = 1 for rank 3)."""
    if images.ndim == 3:
        images = images[:, None]
    out = np.empty(images.shape, np.float32)
    np.multiply(images, np.float32(1 / 255), out=out)
    return out


def _wanted(test_only: bool) -> Dict[str, str]:
    return {k: v for k, v in SPLIT_FILES.items() if k.startswith("test") or not test_only}


def _listing(bases) -> str:
    return ", ".join(f"{b}[.gz]" for b in bases)


def _idx_files(data_dir, wanted: Dict[str, str]) -> Tuple[Dict[str, bytes], Dict[str, Path], str]:
    if data_dir is None:
        raise DatasetNotFound("--dataset idx needs --data-dir: a folder holding " + _listing(wanted.values()))
    files = _files_in(Path(data_dir), "", wanted.values())
    if files is None:
        raise DatasetNotFound(f"{data_dir} does not hold the IDX files " + _listing(wanted.values()))
    return {base: read_idx_bytes(p) for base, p in files.items()}, files, str(Path(data_dir))


def _registered_files(name: str, data_dir, wanted: Dict[str, str], download_missing: bool,
                      verify: bool, limit: Optional[int] = None) -> Tuple[Dict[str, bytes], Dict[str, Path], str]:
    """The payloads of a registered dataset's files (with ``limit``, the training files'
    first ``limit`` items where their published checksum allows reading only those)."""
    if name not in DATASETS:
        raise DatasetNotFound(f"unknown dataset {name!r}; choose one of {DATASET_NAMES}")
    info = DATASETS[name]
    searched = search_dirs(name, data_dir)
    check_asked_folder(name, data_dir, wanted.values())
    files = locate(name, data_dir, wanted.values())
    if files is None and download_missing:
        try:
            files = download(info)
        except DatasetNotFound as exc:
            raise DatasetNotFound(
                f"{name} is not in {' or '.join(map(str, searched))}, and {exc}. Fix: pass --data-dir DIR "
                f"(or set FASTLENET_DATA) to a folder with the files {', '.join(wanted.values())} "
                f"(.gz or not), or allow network access") from None
    if files is None:
        raise DatasetNotFound(f"{name} is not in any of: {', '.join(map(str, searched))}")
    files = {base: files[base] for base in wanted.values()}
    payloads = {base: (_verified_payload(info, base, p, limit if base.startswith("train") else None) if verify
                       else read_idx_bytes(p)) for base, p in files.items()}
    return payloads, files, str(next(iter(files.values())).parent)


def load(name: str, data_dir: Optional[Union[str, Path]] = None, download_missing: bool = True,
         verify: bool = True, test_only: bool = False, limit: Optional[int] = None) -> Dataset:
    """Load ``mnist``, ``fashion-mnist``, ``cifar10`` (fastlenet.cifar) or ``idx`` (any folder
    with the four standard files, images (N, H, W) or (N, C, H, W)).

    Registered datasets are looked up in ``data_dir`` (the folder itself or
    ``data_dir/<name>``), ``$FASTLENET_DATA``, the user cache and
    ``/usr/share/datasets``, then downloaded; checksums are verified on the
    decompressed payload.  ``idx`` needs ``data_dir`` and infers the class count.
    ``test_only``: only the two ``t10k-*`` files are needed (the train arrays are empty).
    ``limit``: keep the first ``limit`` training images, and convert only those to float
    (all 60,000 of them are 188 MB of float32 and 0.05 s of the start-up); of a published
    .gz whose MD5 matches, only those images and labels are decompressed (0.2 s less start-up).
    The classes come from every label (``idx``) or the dataset's registry entry.
    """
    if name == "cifar10":
        from . import cifar
        return cifar.load(data_dir, download_missing, verify, test_only, limit)
    wanted = _wanted(test_only)
    info = DATASETS.get(name) if name != "idx" else None
    payloads, files, source = (_idx_files(data_dir, wanted) if name == "idx" else
                               _registered_files(name, data_dir, wanted, download_missing, verify, limit))
    arrays = {key: decode_idx(payloads[base], str(files[base]), None if "images" in key else 1)
              for key, base in wanted.items()}
    num_classes = len(info.class_names) if info else None
    x_test, y_test = _images_and_labels(arrays["test_images"], arrays["test_labels"], "test", num_classes)
    if test_only:
        x_train, y_train = x_test[:0], y_test[:0]
    else:
        x_train, y_train = _images_and_labels(arrays["train_images"], arrays["train_labels"], "train", num_classes,
                                              limit)
    notes = []
    if info is None:
        values, class_names, note = class_mapping(y_train, y_test)
        if note:
            y_train, y_test = np.searchsorted(values, y_train), np.searchsorted(values, y_test)
            notes.append(note)
    else:
        class_names = info.class_names
    if x_train.shape[1:] != x_test.shape[1:] and not test_only:
        raise IDXError(f"train images are {x_train.shape[1:]} (C, H, W) but test images are {x_test.shape[1:]}")
    y_train = y_train[:limit]
    return Dataset(name, x_train, y_train, x_test, y_test, class_names,
                   flip_ok=bool(info and info.flip_ok), source=source, notes=notes,
                   image_size=tuple(x_test.shape[2:]))


# --------------------------------------------------------------------------- preparation
def _per_channel(values, what: str) -> np.ndarray:
    """A number or one number per channel -> float32 (C, 1, 1), broadcast over (N, C, H, W)."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def apply_standardization(x: np.ndarray, mean, std, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(x - mean) / std in float32, per channel (``mean``/``std``: a number or one per
    channel), the one formula used in training and at inference; ``out=x`` works in place."""
    out = np.subtract(x, _per_channel(mean, "mean"), out=out, dtype=np.float32)
    out /= _per_channel(std, "std")
    return out


def channel_statistics(x: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel (mean, std) of float images (N, C, H, W), in float64 (a std of 0 -> 1)."""
    means, stds = [], []
    for c in range(x.shape[1]):
        plane = x[:, c]
        means.append(float(plane.mean(dtype=np.float64)))
        stds.append(float(plane.std(dtype=np.float64)) or 1.0)
    return tuple(means), tuple(stds)


def standardize(ds: Dataset) -> Dataset:
    """Subtract the train-set mean and divide by its std, per channel, in place (the
    statistics kept on ``ds``: one number per channel)."""
    mean, std = channel_statistics(ds.x_train)
    for name in ("x_train", "x_test", "x_val"):
        a = getattr(ds, name)
        if a is not None:
            apply_standardization(a, mean, std, out=a)
    ds.mean, ds.std = list(mean), list(std)
    return ds


def pad_to(x: np.ndarray, size: int = 32) -> np.ndarray:
    """Zero-pad (N, C, H, W) images symmetrically to size x size."""
    h, w = x.shape[2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} images to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros(x.shape[:2] + (size, size), x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def prepare_inputs(x: np.ndarray, info, input_shape) -> np.ndarray:
    """Apply what training applied (``info``: a checkpoint's checked
    :class:`fastlenet.meta.Inference`): standardisation with its train-set statistics,
    then zero-padding from its stored image size to the model's input size."""
    if tuple(x.shape[2:]) != tuple(info.image_size):
        raise ValueError(f"the model was trained on {info.image_size[0]}x{info.image_size[1]} images; "
                         f"these are {x.shape[2]}x{x.shape[3]}")
    if info.mean is not None:
        x = apply_standardization(x, info.mean, info.std)
    if tuple(x.shape[2:]) != tuple(input_shape[1:]):
        x = pad_to(x, input_shape[1])
    return np.ascontiguousarray(x, np.float32)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: (train indices, validation indices), each sorted.
    Each class contributes round(fraction * count) samples to validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = int(round(fraction * len(idx)))
        val.append(rng.permutation(idx)[:take])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


#: how a validation set is taken from the training set
VAL_FROM = ("stratified", "random", "end")


def validation_indices(labels: np.ndarray, fraction: float, seed: int = 0,
                       how: str = "stratified") -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted:

    * ``stratified``: round(fraction * count) of each class, seeded (:func:`stratified_split`);
    * ``random``: a seeded random ``fraction`` of all images (scikit-learn's
      ``train_test_split`` without ``stratify``, PyTorch's ``random_split``);
    * ``end``: the last ``fraction``, unshuffled -- Keras' ``validation_split``: it keeps
      the first ``int(n * (1 - fraction))`` images for training."""
    if how == "stratified":
        return stratified_split(labels, fraction, seed)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    n = len(labels)
    if how == "end":
        split_at = int(n * (1 - fraction))
        return np.arange(split_at), np.arange(split_at, n)
    if how == "random":
        order = np.random.default_rng(seed).permutation(n)
        take = int(round(fraction * n))
        return np.sort(order[take:]), np.sort(order[:take])
    raise ValueError(f"validation split must be one of {VAL_FROM}, got {how!r}")


def split_validation(ds: Dataset, fraction: float, seed: int = 0, how: str = "stratified") -> Dataset:
    """Move a ``fraction`` of the training set into ``x_val``/``y_val``, taken as ``how``
    says (:func:`validation_indices`; default stratified)."""
    train, val = validation_indices(ds.y_train, fraction, seed, how)
    ds.x_val, ds.y_val = ds.x_train[val], ds.y_train[val]
    ds.x_train, ds.y_train = ds.x_train[train], ds.y_train[train]
    return ds


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order (n,) of epoch ``epoch`` (0-based) of a run seeded ``seed``:
    derived from (seed, epoch) alone, so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator of batch ``batch``'s augmentation, from (seed, epoch, batch) alone."""
    return np.random.default_rng([seed, epoch, batch, 1])


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: Optional[np.random.Generator] = None,
            order: Optional[np.ndarray] = None, start: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield (x, y) mini-batches, from batch number ``start`` on; the last may be short.

    The order is ``order`` (e.g. :func:`epoch_order`), else shuffled with ``rng`` when
    given, else the stored order.  Each batch's indices are sorted (reading memory
    forwards); only one batch is gathered at a time: the dataset is never copied whole.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    n = len(x)
    if order is None and rng is not None:
        order = rng.permutation(n)
    for first in range(start * batch_size, n, batch_size):
        if order is None:
            yield x[first:first + batch_size], y[first:first + batch_size]
        else:
            idx = np.sort(order[first:first + batch_size])
            yield x[idx], y[idx]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


# --------------------------------------------------------------------------- augmentation
