"""Kernel workspaces are reused between calls (per thread, per geometry): reuse
must never change a result, and concurrent calls from two Python threads must
not share them."""
import threading

import numpy as np
import pytest

from checks import assert_close, linear_grads
from fastlenet import kernels
from fastlenet.kernels import _workspace

COMPILED = [name for name in ("cython",) if name in kernels.available()]


def _conv_case(rng, n=6):
    x = rng.standard_normal((n, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    return x, w, b


def _run(k, x, w, b):
    """Every kernel that keeps workspaces, on one input: fused and plain conv, dense."""
    y, arg = k.fused.forward(x, w, b, 1, 0, 10, 10, 2, 2)
    grads = k.fused.backward(np.ones_like(y), arg, x, w, 1, 0, 10, 10, 2, 2, True)
    z = k.conv2d_forward(x, w, b, 1, 1)
    plain = k.conv2d_backward(np.ones_like(z) * 0.5, x, w, 1, 1)
    flat = np.ascontiguousarray(y.reshape(len(y), -1))
    dense_w = np.ascontiguousarray(w.reshape(16, -1)[:, :40].T)       # (40, 16)
    d = k.linear.forward(np.ascontiguousarray(flat[:, :40]), dense_w, b, True)
    dense = linear_grads(k.linear, np.ones_like(d) * 0.25, np.ascontiguousarray(flat[:, :40]), dense_w, d)
    return [y, arg, *grads, z, *plain, d, *dense]


@pytest.mark.parametrize("name", COMPILED)
def test_reused_workspaces_give_the_results_of_fresh_ones(name):
    k = kernels.backend(name)
    rng = np.random.default_rng(0)
    first = _conv_case(rng)
    second = _conv_case(rng)
    _run(k, *first)                              # leaves workspaces behind
    reused = _run(k, *second)
    _workspace.clear()
    fresh = _run(k, *second)
    for i, (a, b) in enumerate(zip(reused, fresh)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("name", COMPILED)
def test_concurrent_threads_do_not_share_workspaces(name):
    k = kernels.backend(name)
    cases = [_conv_case(np.random.default_rng(seed), n=32) for seed in range(4)]
    want = [_run(k, *case) for case in cases]
    got = [None] * len(cases)

    def work(i):
        for _ in range(5):
            got[i] = _run(k, *cases[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(cases)):
        for j, (a, b) in enumerate(zip(got[i], want[i])):
            # close, not equal: a thread's OpenMP team size (so its summation order) may differ
            assert_close(f"thread {i} output {j}", a, b)


def _address(a):
    return a.__array_interface__["data"][0]


def test_an_output_is_handed_out_again_only_when_nothing_refers_to_it():
    _workspace.clear()
    first = _workspace.output((50, 40), np.float32)
    address = _address(first)
    del first
    again = _workspace.output((50, 40), np.float32)
    assert _address(again) == address                        # freed: reused, no new pages
    other = _workspace.output((50, 40), np.float32)
    assert _address(other) != address                        # `again` is still held
    row = again[3]                                           # a view (its base is the raw buffer)
    del again
    assert _address(_workspace.output((50, 40), np.float32)) != address
    del row
    exported = memoryview(_workspace.output((50, 40), np.float32))   # reused, then exported
    assert _address(np.asarray(exported)) == address
    assert _address(_workspace.output((50, 40), np.float32)) != address
    assert _workspace.output((50, 40), np.float64).dtype == np.float64
    assert _workspace.output((40, 50), np.float32).shape == (40, 50)


@pytest.mark.parametrize("name", COMPILED)
def test_results_kept_by_the_caller_are_never_overwritten(name):
    k = kernels.backend(name)
    rng = np.random.default_rng(1)
    cases = [_conv_case(rng) for _ in range(5)]
    kept = [_run(k, *case) for case in cases]                # every result of every call held
    _workspace.clear()
    for case, outputs in zip(cases, kept):
        for i, (a, b) in enumerate(zip(outputs, _run(k, *case))):
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
