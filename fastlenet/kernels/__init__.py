"""fastlenet kernels: im2col convolution and pooling, forward and backward.

Three interchangeable backends implement one contract (see ``_api.Backend``)::

    from fastlenet import kernels
    kernels.available()              # e.g. ['numpy', 'numba', 'cython']
    k = kernels.backend("numba")
    y = k.conv2d_forward(x, w, b, stride=1, pad=0)

``from fastlenet.kernels import conv2d_forward`` gives the default backend's
function: ``FASTLENET_BACKEND`` if set, otherwise the fastest available one
(cython, then numba, then numpy).  A backend that failed to import is listed
by :func:`unavailable` with its error and raises :class:`BackendUnavailable`
when asked for; it is never silently replaced by another.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Dict, List

from ._api import KERNEL_NAMES, Backend

__all__ = [
    "Backend", "BackendUnavailable", "available", "backend", "default_backend",
    "unavailable", "set_num_threads", "set_kernel_threads", "blas_limit", "usable_cpus", "default_threads", *KERNEL_NAMES,
]

#: backend name -> module, fastest first (the default is the first available)
_MODULES = {
    "cython": "fastlenet.kernels.cython_backend",
    "numba": "fastlenet.kernels.numba_backend",
    "numpy": "fastlenet.kernels.reference",
}
_ORDER = ("numpy", "numba", "cython")          # the order available() lists them in
_loaded: Dict[str, object] = {}
_errors: Dict[str, str] = {}


class BackendUnavailable(RuntimeError):
    """The requested backend is not built, not installed, or failed to import."""


def _load(name: str):
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except Exception as exc:      # noqa: BLE001 - ImportError, or e.g. Numba's RuntimeError for an
        # unusable cache directory: either way the backend is reported, never half-loaded
        _errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    _loaded[name] = module
    return module


def available() -> List[str]:
    """Names of the backends that import on this machine."""
    return [name for name in _ORDER if _load(name) is not None]


def unavailable() -> Dict[str, str]:
    """Backends that failed to import, with the error each raised."""
    available()
    return dict(_errors)


def backend(name: str) -> Backend:
    """The checked kernel functions of backend ``name`` ('numpy', 'numba' or 'cython')."""
    if name not in _MODULES:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {sorted(_MODULES)}")
    module = _load(name)
    if module is None:
        hint = " (rebuild with `pip install -e .`)" if name == "cython" else ""
        raise BackendUnavailable(f"kernel backend {name!r} is not available: {_errors[name]}{hint}")
    return module.BACKEND


def default_backend() -> Backend:
    """``FASTLENET_BACKEND`` if set (an error if it is unavailable), else the fastest available."""
    requested = os.environ.get("FASTLENET_BACKEND")
    if requested:
        if requested not in _MODULES:
            raise ValueError(f"FASTLENET_BACKEND={requested!r} is not a kernel backend; "
                             f"choose one of {sorted(_MODULES)} or unset it")
        return backend(requested)
    for name in _MODULES:                      # fastest first
        if _load(name) is not None:
            return _loaded[name].BACKEND
    raise BackendUnavailable(f"no kernel backend imports: {_errors}")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, cpusets, Slurm), further
    limited by a cgroup v2 CPU quota (containers), not ``os.cpu_count()``'s whole machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_threads() -> int:
    """Threads to use when none are asked for: the usable CPUs, capped at what Numba's
    pool holds (``NUMBA_NUM_THREADS``, itself fixed when Numba starts)."""
    import numba
    return max(1, min(usable_cpus(), numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Threads for every compiled backend, and for BLAS (used by the numpy backend)."""
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"threads must be an integer >= 1, got {n}")
    set_kernel_threads(n)
    _blas_controller().limit(limits=int(n), user_api="blas")


def set_kernel_threads(n: int) -> None:
    """Threads for the compiled backends' own pools only (BLAS untouched): what the
    thread governor (fastlenet.governor) changes while training."""
    for name in available():
        setter = getattr(_loaded[name], "set_num_threads", None)
        if setter is not None:
            setter(int(n))


_controller = None


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def blas_limit(backend_name: str):
    """Context for running a network on ``backend_name``: with a compiled backend,
    BLAS (NumPy's small dense-layer GEMMs) runs on one thread, so it does not fight
    the kernels' own OpenMP threads for the cores (spinning workers of both pools
    otherwise slow a LeNet step 2-3x).  The numpy backend keeps every BLAS thread."""
    if backend_name == "numpy" or backend(backend_name).fast is not None:
        # the numpy backend keeps its BLAS threads; a backend with its own dense
        # products (Backend.fast) makes no BLAS calls in a network: nothing to limit
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=1, user_api="blas")


def __getattr__(attr: str):
    # `from fastlenet.kernels import conv2d_forward` -> the default backend's function,
    # resolved lazily so that importing the package compiles or loads nothing.
    if attr in KERNEL_NAMES:
        return getattr(default_backend(), attr)
    raise AttributeError(f"module 'fastlenet.kernels' has no attribute {attr!r}")
