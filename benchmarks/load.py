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

Sessions (``session``), which decide how Linux shares the cores: with autogrouping on
(``/proc/sys/kernel/sched_autogroup_enabled``, the default of desktop and server kernels
alike) the scheduler first shares the CPUs between *sessions* (a terminal, an ssh login, a
service), then between the threads of each:

* ``own`` -- each competing process in a session of its own, as a job started from another
  terminal or by another user: with 2 such processes on 2 cores, the measured program's
  session gets 2/3 of a core *whatever its thread count*;
* ``same`` -- in the measuring program's session, as ``make -j2 &`` typed in the same shell:
  the cores are shared thread by thread, so the measured program's 2 threads get 1 of the
  2 cores.

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
SESSIONS = ("own", "same")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(kind: str, data_dir: str | None) -> list:
    if kind == "cpu":
        return [sys.executable, "-c", "while True: pass"]
    backend = "cython" if kind == "fastlenet" else "torch"
    cmd = [sys.executable, "-m", "benchmarks.compare", "--child", backend, "--loop"]
    return cmd + (["--data-dir", data_dir] if data_dir else [])


@contextlib.contextmanager
def competing_load(n: int, kind: str = "cpu", data_dir: str | None = None, settle: float = 0.5,
                   session: str = "own"):
    """Run ``n`` competing processes of ``kind`` for the duration of the block, each in a
    session of its own or in this one (``session``, see the module docstring); each is
    the leader of its own process group either way, so it is killed with its children."""
    if kind not in KINDS:
        raise ValueError(f"unknown load kind {kind!r}; choose one of {KINDS}")
    if session not in SESSIONS:
        raise ValueError(f"unknown load session {session!r}; choose one of {SESSIONS}")
    group = {"start_new_session": True} if session == "own" else {"preexec_fn": os.setpgrp}
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(_command(kind, data_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, **group))
        if n:
            time.sleep(settle if kind == "cpu" else 8 * settle)   # trainings load their data first
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait()
