"""Competing work for the busy-machine benchmarks: N CPU-bound processes that run
for as long as a measurement does.

    with competing_load(2):            # two pure-Python spinners, one per core here
        measure(...)
    with competing_load(1, "fastlenet"):   # a second fastlenet training, epoch after epoch

Kinds:

* ``cpu`` -- ``while True: pass`` in a fresh interpreter: takes a whole core and never
  yields it, like a compile job or a second simulation;
* ``fastlenet`` -- a second fastlenet training (cython backend, all usable CPUs, the
  reference epoch in a loop), as when a user runs two trainings or a sweep;
* ``torch`` -- the same epoch in PyTorch, in a loop (another framework's OpenMP pool).

Every process is started before the measurement and killed (its whole process group)
when the block ends, whatever way it ends.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

KINDS = ("cpu", "fastlenet", "torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(kind: str, data_dir: str | None) -> list:
    if kind == "cpu":
        return [sys.executable, "-c", "while True: pass"]
    backend = "cython" if kind == "fastlenet" else "torch"
    cmd = [sys.executable, "-m", "benchmarks.compare", "--child", backend, "--loop"]
    return cmd + (["--data-dir", data_dir] if data_dir else [])


@contextlib.contextmanager
def competing_load(n: int, kind: str = "cpu", data_dir: str | None = None, settle: float = 0.5):
    """Run ``n`` competing processes of ``kind`` for the duration of the block."""
    if kind not in KINDS:
        raise ValueError(f"unknown load kind {kind!r}; choose one of {KINDS}")
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(_command(kind, data_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        if n:
            time.sleep(settle if kind == "cpu" else 8 * settle)   # trainings load their data first
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait()
