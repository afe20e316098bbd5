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

import importlib
import os
from typing import Dict, List

from ._api import KERNEL_NAMES, Backend

__all__ = [
    "Backend", "BackendUnavailable", "available", "backend", "default_backend",
    "unavailable", "set_num_threads", *KERNEL_NAMES,
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
    except ImportError as exc:
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
        return backend(requested)
    for name in _MODULES:                      # fastest first
        if _load(name) is not None:
            return _loaded[name].BACKEND
    raise BackendUnavailable(f"no kernel backend imports: {_errors}")


def set_num_threads(n: int) -> None:
    """Threads for every compiled backend that is loaded, and for BLAS."""
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    for name in available():
        setter = getattr(_loaded[name], "set_num_threads", None)
        if setter is not None:
            setter(int(n))
    from threadpoolctl import threadpool_limits
    threadpool_limits(int(n))


def __getattr__(attr: str):
    # `from fastlenet.kernels import conv2d_forward` -> the default backend's function,
    # resolved lazily so that importing the package compiles or loads nothing.
    if attr in KERNEL_NAMES:
        return getattr(default_backend(), attr)
    raise AttributeError(f"module 'fastlenet.kernels' has no attribute {attr!r}")
