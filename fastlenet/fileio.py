"""Atomic file writes: a temporary file in the same folder, fsync, rename.

Every file fastlenet writes (checkpoints, run files, exported models, IDX files)
goes through here, so a crash at any moment leaves either the old file or the new
one, never a torn one.  A write replaces only a regular file: a target that is a
symbolic link, a device (``/dev/null``), a FIFO, a socket or a folder is refused,
and so is a target that is one of the write's own inputs (``export RUN/best.npz
RUN/best.npz``).  The temporary file gets an unpredictable name in the target's
folder and is created exclusively without following links (``tempfile.mkstemp``:
``O_CREAT | O_EXCL | O_NOFOLLOW``), so a planted symlink cannot redirect the write;
it is removed on every failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np


class WriteRefused(OSError):
    """A write that would replace something that is not a regular file, or its own input."""


def check_target(path: Path, sources: Iterable = ()) -> None:
    """Raise :class:`WriteRefused` unless ``path`` is absent or a regular file that is
    none of ``sources`` (files the caller read to make what it writes)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise WriteRefused(f"refusing to write {path}: it is a symbolic link (fastlenet replaces only regular files)")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
        raise WriteRefused(f"refusing to write {path}: it is {kind} (fastlenet replaces only regular files)")
    for source in sources:
        try:
            same = os.path.samefile(path, source)
        except OSError:
            continue
        if same:
            raise WriteRefused(f"refusing to write {path}: it is the input being read ({source}); "
                               "choose another output path")


def atomic_write_bytes(path: Path, data: bytes, sources: Iterable = ()) -> None:
    """Write ``data`` to a new temporary file in ``path``'s folder, fsync, then rename it
    over ``path`` -- after :func:`check_target` (``sources``: the inputs it must not replace)."""
    path = Path(path)
    check_target(path, sources)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)                 # a normal file's mode, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check_target(path, sources)                  # still safe to replace at rename time
        os.replace(tmp, path)
        tmp = None
    finally:
        if fd != -1:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def read_npy_header(f) -> tuple:
    """``(shape, dtype)`` from the .npy header at ``f``'s position (public NumPy readers,
    no data read); leaves ``f`` at the start of the data."""
    from numpy.lib import format as npy
    version = npy.read_magic(f)
    reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, _, dtype = reader(f)
    return shape, dtype


def write_json(path: Path, doc: dict) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
