"""The threading runtime's settings, applied when fastlenet is imported, before any
kernel library starts its threads.

fastlenet's compiled kernels run on GNU OpenMP (libgomp): the Cython extension is
built with ``-fopenmp``, and Numba's default threading layer here is its ``omp``
layer, linked to the same libgomp.  After each parallel region libgomp's idle
workers spin, waiting for the next one, for ``GOMP_SPINCOUNT`` iterations
(300,000 by default, about a millisecond) before they sleep.  A training step
runs dozens of short regions, so on a quiet machine the spin costs nothing; on a
shared one the spinning workers hold the cores that the working thread (or the
other program) needs, and an epoch took 3.6-4.6x its quiet time beside two
CPU-bound processes (issue 15).  ``OMP_WAIT_POLICY=PASSIVE`` (no spin at all)
fixes the collapse but slows the quiet epoch, because every region then starts
by waking sleeping threads.

fastlenet sets a short spin instead (:data:`SPIN_COUNT`), chosen by measurement
(2026-12-02, 2-core AMD EPYC AVX2 VM, cython epoch, medians of 3, s; README "Busy
machines"):

=============  =======  =======  =====  ======  =======
GOMP_SPINCOUNT default  PASSIVE  1000   10000   100000
=============  =======  =======  =====  ======  =======
quiet          4.27     4.41     4.26   4.52    4.15
2 CPU hogs     15.65*   13.95    14.44  15.51   27.25
=============  =======  =======  =====  ======  =======

(* one of its three runs took 32.2 s: the collapse.)  1000 spins (a few
microseconds) is as fast as the default when quiet and as good as PASSIVE under
load: a worker woken within the gaps of one kernel finds its work at once, and
one that waits longer sleeps and gives its core away.

libgomp reads its environment once, when it is loaded, so the setting goes into
``os.environ`` at ``import fastlenet`` -- before any extension or Numba loads
libgomp -- and is inherited by the processes fastlenet starts.  The user's own
setting always wins: nothing is set when ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
is already in the environment, ``FASTLENET_SPINCOUNT=N`` replaces the value and
``FASTLENET_SPINCOUNT=libgomp`` keeps libgomp's default.
If libgomp was loaded before fastlenet (another library imported first), the
setting comes too late for this process; :func:`status` says so.
"""
from __future__ import annotations

import os
from typing import Dict

#: GOMP_SPINCOUNT fastlenet sets when the user set neither it nor OMP_WAIT_POLICY
SPIN_COUNT = 1000
_USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: FASTLENET_SPINCOUNT value that sets nothing (libgomp's default spin; the benchmarks'
#: peers run with it, as their users get them)
LIBGOMP_DEFAULT = "libgomp"

_state: Dict[str, str] = {}


def _libgomp_loaded() -> bool:
    """Whether this process has already mapped libgomp (Linux; False where unknown)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def configure() -> None:
    """Set the OpenMP wait policy for this process and its children (see the module
    docstring); called once by ``import fastlenet``."""
    if _state:
        return
    if any(key in os.environ for key in _USER_KEYS):
        _state["source"] = "user"
        return
    value = os.environ.get("FASTLENET_SPINCOUNT", str(SPIN_COUNT))
    _state["source"] = "FASTLENET_SPINCOUNT" if "FASTLENET_SPINCOUNT" in os.environ else "fastlenet"
    if value == LIBGOMP_DEFAULT:                  # leave libgomp's own default alone
        return
    if not value.isdigit():
        raise ValueError(f"FASTLENET_SPINCOUNT must be a whole number of spins or {LIBGOMP_DEFAULT!r}, "
                         f"got {value!r}")
    _state["too_late"] = "yes" if _libgomp_loaded() else ""
    os.environ["GOMP_SPINCOUNT"] = value


def status() -> Dict[str, str]:
    """What governs the OpenMP workers' wait: ``{'OMP_WAIT_POLICY': ..., 'GOMP_SPINCOUNT': ...,
    'set_by': 'user' | 'fastlenet' | 'FASTLENET_SPINCOUNT', 'effective': 'yes' | 'no (...)'}``."""
    configure()
    effective = "no (libgomp was loaded before fastlenet)" if _state.get("too_late") else "yes"
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "(unset: 300000)"),
            "set_by": _state["source"], "effective": effective}
