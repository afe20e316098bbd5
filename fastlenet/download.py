"""Fetching a registered dataset's files over HTTP(S), with bounds on everything.

Each file is fetched into memory, never more than its known size (or
:data:`MAX_UNKNOWN_BYTES` when a dataset does not record sizes), within one overall
deadline per file (the socket timeout alone lets a mirror that trickles a byte a
second hold a download for ever), its MD5 checked, and only then written into
place atomically (:func:`fastlenet.fileio.atomic_write_bytes`).  An interrupted,
killed or refused transfer therefore leaves nothing behind: there is no partial
file on disk at any moment.  Each attempt is announced on stderr in one line; a
progress bar follows on a terminal.
"""
from __future__ import annotations

import hashlib
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .fileio import atomic_write_bytes

#: cap on a file whose size the registry does not record
MAX_UNKNOWN_BYTES = 64 << 20
#: the overall deadline per file: this many seconds, plus the time the file takes at MIN_RATE
BASE_DEADLINE_S = 60.0
MIN_RATE = 64 << 10                      # bytes per second
CHUNK = 1 << 16


def md5_hex(data: bytes) -> str:
    """The MD5 digest of ``data`` as hex (a checksum against corruption, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class TransferError(Exception):
    """Fetching failed; the message says why in a few words.  ``attempts``: the
    (url, reason) of every attempt, when several were made."""

    def __init__(self, message: str, attempts=()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)


class Unreachable(TransferError):
    """No connection could be made (DNS, refused, no route): retrying will not help."""


def summary(attempts) -> str:
    """The attempts grouped by reason: 'reason (url, url); reason (url)'."""
    groups: Dict[str, List[str]] = {}
    for url, reason in attempts:
        groups.setdefault(reason, [])
        if url not in groups[reason]:
            groups[reason].append(url)
    def where(reason, urls):                     # unreachable: the hosts say it all
        if reason.startswith("cannot connect"):
            return ", ".join(dict.fromkeys(urllib.parse.urlsplit(u).netloc for u in urls))
        return ", ".join(urls)
    return "; ".join(f"{reason} ({where(reason, urls)})" for reason, urls in groups.items())


def deadline_for(size: Optional[int]) -> float:
    """Seconds allowed for a file of ``size`` bytes (``None``: the size cap)."""
    return BASE_DEADLINE_S + (size if size is not None else MAX_UNKNOWN_BYTES) / MIN_RATE


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _announced_length(response, url: str, limit: int) -> Optional[int]:
    header = response.headers.get("Content-Length")
    if header is None:
        return None
    try:
        length = int(header)
    except ValueError:
        raise TransferError(f"bad Content-Length {header[:40]!r}") from None
    if length > limit:
        raise TransferError(f"the server announces {length} bytes, more than the {limit} expected")
    return length


def fetch(url: str, size: Optional[int], timeout: float = 30.0, deadline: Optional[float] = None,
          progress: Optional[Callable[[int], None]] = None,
          on_start: Optional[Callable[[], None]] = None) -> bytes:
    """The body of ``url``: at most ``size`` bytes (or :data:`MAX_UNKNOWN_BYTES`), all
    within ``deadline`` seconds (default :func:`deadline_for`); ``timeout`` bounds each
    read.  Raises :class:`TransferError` naming what went wrong."""
    limit = size if size is not None else MAX_UNKNOWN_BYTES
    deadline = deadline_for(size) if deadline is None else deadline
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, deadline)) as response:
            length = _announced_length(response, url, limit)
            if on_start is not None:
                on_start()
            body = bytearray()
            while True:
                left = deadline - (time.monotonic() - start)
                if left <= 0:
                    raise TransferError(f"not finished within the {deadline:.0f} s deadline "
                                        f"({_megabytes(len(body))} received)")
                chunk = response.read1(min(CHUNK, limit + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise TransferError(f"the server sent more than the {limit} bytes expected")
                if progress is not None:
                    progress(len(chunk))
    except urllib.error.HTTPError as exc:
        raise TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise Unreachable(f"cannot connect: {reason}") from None
    except (OSError, ValueError) as exc:           # timeouts, resets, IncompleteRead, bad URLs
        raise TransferError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}") from None
    if length is not None and len(body) != length:
        raise TransferError(f"connection closed after {len(body)} of {length} bytes")
    return bytes(body)


def _progress_bar(total: Optional[int], label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False)


def fetch_verified(urls: List[str], fname: str, md5: str, size: Optional[int], dest: Path,
                   retries: int = 1, timeout: float = 30.0, deadline: Optional[float] = None,
                   progress: bool = False) -> Path:
    """Try each of ``urls`` (1 + ``retries`` times after a transfer that broke off; once
    when it cannot be reached or answers an HTTP error) until one gives ``size`` bytes
    whose MD5 is ``md5``; write them atomically to ``dest/fname``.  Each transfer that
    starts is announced on stderr.  Raises :class:`TransferError` with every attempt."""
    attempts = []
    for url in urls:
        for _ in range(1 + retries):
            bar = _progress_bar(size, fname, progress)
            try:
                body = fetch(url, size, timeout, deadline, bar.update if bar else None,
                             on_start=lambda: _announce(fname, size, deadline, url))
            except TransferError as exc:
                attempts.append((url, str(exc)))
                if isinstance(exc, Unreachable) or str(exc).startswith("HTTP "):
                    break                        # neither will get better on a retry
                continue
            finally:
                if bar is not None:
                    bar.close()
            got = md5_hex(body)
            if got != md5:
                attempts.append((url, f"MD5 {got} is not the published {md5} (corrupt or a different file)"))
                break
            dest.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest / fname, body)
            return dest / fname
    raise TransferError(summary(attempts), attempts)


def _announce(fname: str, size: Optional[int], deadline: Optional[float], url: str) -> None:
    what = f"{_megabytes(size)}, " if size is not None else ""
    print(f"fastlenet: downloading {fname} ({what}at most {deadline or deadline_for(size):.0f} s) from {url}",
          file=sys.stderr, flush=True)
