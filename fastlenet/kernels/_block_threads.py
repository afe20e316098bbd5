"""Run numbered blocks of work on T threads: the Numba convolutions' parallel loop.

The Numba convolutions are serial, GIL-free kernels (``nogil=True``) over one block
of samples each; this module runs them on a persistent pool of T - 1 worker threads
plus the calling thread.  Blocks are claimed one at a time from a shared counter, so
a thread that loses its core to other work simply claims fewer (a static split
would wait for it).  Which thread computes a block never changes a result: every
block writes only its own outputs and partial sums.

Why not ``prange``: a Numba parallel region compiles its whole call tree again
through the parfor pipeline, about 10 s per convolution kernel on a cold cache,
and it would have to contain every plan path; here only the paths a model uses
compile, once each (``python -m benchmarks.numba_compile``).
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

_lock = threading.Lock()
_executor: Optional[ThreadPoolExecutor] = None
_workers = 0


def _forget_pool() -> None:
    """After fork: the child has none of the parent's threads."""
    global _executor, _workers
    _executor, _workers = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _workers
    with _lock:
        if _executor is None or _workers < workers:
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastlenet-numba")
            _workers = workers
        return _executor


def run_blocks(run_block: Callable[[int, int], None], blocks: int, threads: int) -> None:
    """Call ``run_block(q, t)`` once for every block q in range(blocks), on up to
    ``threads`` threads; t (0 .. threads-1) names the thread.  Returns when every block
    is done (not when every worker has woken: one that wakes after the others took all
    the blocks finds none and touches nothing); re-raises the first block's error."""
    threads = max(1, min(int(threads), blocks))
    if threads == 1:
        for q in range(blocks):
            run_block(q, 0)
        return
    claim = itertools.count().__next__            # atomic under the GIL
    count_done = itertools.count(1).__next__
    all_done = threading.Event()
    errors = []

    def work(t: int) -> None:
        q = claim()
        while q < blocks:
            try:
                run_block(q, t)
            except BaseException as error:        # noqa: BLE001 -- re-raised by the caller
                errors.append(error)
            if count_done() == blocks:
                all_done.set()
            q = claim()

    pool = _pool(threads - 1)
    for t in range(1, threads):
        pool.submit(work, t)
    work(0)
    all_done.wait()
    if errors:
        raise errors[0]
