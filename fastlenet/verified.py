"""A record of compressed dataset files already checked whole: the MD5 of a .gz file's
bytes -> the MD5 of its decompressed payload, in the user cache (``verified.json``).

A ``--limit`` run decompresses only the images it keeps when the .gz file's own MD5
is the published one or is recorded here beside the expected payload MD5; otherwise
it decompresses the whole file, checks its payload and records the pair.  A changed
file has another MD5 and is checked whole again.  The record is JSON (never
unpickled), at most ``MAX_ENTRIES`` pairs and ``MAX_BYTES`` long; a file there that
fastlenet did not write is ignored and never replaced; failing to write it costs
only speed.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Dict, Optional

from .fileio import atomic_write_bytes

FORMAT = "fastlenet-verified-gz-1"
MAX_ENTRIES = 64
MAX_BYTES = 16384
_MD5 = re.compile(r"[0-9a-f]{32}\Z")


def record_path() -> Path:
    from .data import cache_dir
    return cache_dir() / "verified.json"


def _read(path: Path) -> Optional[Dict[str, str]]:
    """The recorded pairs; None when the file is absent, not a regular file (a FIFO would
    block the read), too long or not ours."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= MAX_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("pairs"), dict):
        return None
    pairs = doc["pairs"]
    if not all(isinstance(k, str) and isinstance(v, str) and _MD5.match(k) and _MD5.match(v)
               for k, v in pairs.items()):
        return None
    return pairs


def payload_md5(gz_md5: str) -> Optional[str]:
    """The payload MD5 recorded for a .gz file with MD5 ``gz_md5``, if any."""
    return (_read(record_path()) or {}).get(gz_md5)


def remember(gz_md5: str, payload_md5: str) -> None:
    """Record a .gz file checked whole (the newest ``MAX_ENTRIES`` pairs are kept)."""
    path = record_path()
    pairs = _read(path)
    if pairs is None and path.exists() or not (_MD5.match(gz_md5) and _MD5.match(payload_md5)):
        return                                  # not ours, or not checksums: leave it alone
    pairs = dict(pairs or {})
    pairs.pop(gz_md5, None)
    pairs[gz_md5] = payload_md5
    kept = dict(list(pairs.items())[-MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"format": FORMAT, "pairs": kept}, indent=1).encode())
    except OSError:
        pass                                    # a read-only cache: the next run checks the file whole again
