"""kernels.available(), kernels.backend(), the default backend and the
report of a backend that failed to import."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastlenet import kernels


def test_all_three_backends_are_available():
    assert kernels.available() == ["numpy", "numba", "cython"], kernels.unavailable()
    assert kernels.unavailable() == {}


def test_backend_returns_the_same_contract_everywhere():
    for name in kernels.available():
        k = kernels.backend(name)
        assert k.name == name
        for fn in kernels.KERNEL_NAMES:
            assert callable(getattr(k, fn)), (name, fn)
        # one contract: the same checks everywhere (a wrong rank is the same error on every backend)
        with pytest.raises(ValueError, match="x must be 4-D"):
            k.conv2d_forward(np.zeros((2, 3), np.float32), np.zeros((1, 1, 1, 1), np.float32),
                             np.zeros(1, np.float32))
        # and the compiled backends declare every internal fast path
        from fastlenet.kernels._fast import FastPaths
        if name != "numpy":
            assert isinstance(k.fast, FastPaths)
            assert all(callable(getattr(k.fast, f)) for f in FastPaths.__dataclass_fields__)
        else:
            assert k.fast is None


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kernel backend 'torch'"):
        kernels.backend("torch")


def test_broken_backend_is_reported_not_replaced(monkeypatch, swap_backend_module):
    swap_backend_module("cython", "fastlenet.kernels._does_not_exist")
    assert "cython" not in kernels.available()
    assert "_does_not_exist" in kernels.unavailable()["cython"]
    with pytest.raises(kernels.BackendUnavailable, match="'cython' is not available"):
        kernels.backend("cython")
    monkeypatch.setenv("FASTLENET_BACKEND", "cython")
    with pytest.raises(kernels.BackendUnavailable):
        kernels.default_backend()


def run(code, **env):
    full = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_default_backend_follows_the_environment():
    code = "from fastlenet import kernels; print(kernels.default_backend().name)"
    assert run(code, FASTLENET_BACKEND="numpy") == "numpy"
    assert run(code, FASTLENET_BACKEND="numba") == "numba"
    env = {k: v for k, v in os.environ.items() if k != "FASTLENET_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "cython"


def test_module_level_functions_are_the_default_backends():
    from fastlenet.kernels import conv2d_forward
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    y = conv2d_forward(x, w, np.zeros(1, np.float32))
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 9, np.float32))


def test_set_num_threads_validates():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            kernels.set_num_threads(bad)
    kernels.set_num_threads(1)
    import numba
    assert numba.get_num_threads() == 1
    kernels.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))


def test_default_threads_follow_the_affinity_mask():
    import os
    import subprocess
    import sys
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    assert 1 <= kernels.usable_cpus() <= len(os.sched_getaffinity(0))
    one_cpu = sorted(os.sched_getaffinity(0))[0]
    code = ("import os; os.sched_setaffinity(0, {%d}); from fastlenet import kernels; "
            "print(kernels.usable_cpus(), kernels.default_threads())" % one_cpu)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
