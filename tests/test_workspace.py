"""Kernel workspaces are reused between calls (per thread, per geometry): reuse
must never change a result, and concurrent calls from two Python threads must
not share them.  Outputs are owned explicitly (``out=``, layer buffers): nothing a
caller holds is ever rewritten, and no reference count is read to decide it."""
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
    y, arg = k.fast.conv2d_relu_maxpool_forward(x, w, b, 1, 0, 10, 10, 2, 2)
    grads = k.fast.conv2d_relu_maxpool_backward(np.ones_like(y), arg, x, w, 1, 0, 10, 10, 2, 2, True)
    z = k.conv2d_forward(x, w, b, 1, 1)
    plain = k.conv2d_backward(np.ones_like(z) * 0.5, x, w, 1, 1)
    flat = np.ascontiguousarray(y.reshape(len(y), -1))
    dense_w = np.ascontiguousarray(w.reshape(16, -1)[:, :40].T)       # (40, 16)
    d = k.fast.linear_forward(np.ascontiguousarray(flat[:, :40]), dense_w, b, True)
    dense = linear_grads(k.fast, np.ones_like(d) * 0.25, np.ascontiguousarray(flat[:, :40]), dense_w, d)
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


def test_no_reference_count_is_read_anywhere():
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    sources = [*root.glob("fastlenet/**/*.py"), *root.glob("csrc/*.pyx"), *root.glob("csrc/*.pxi")]
    assert sources
    hits = [str(p) for p in sources if "getrefcount" in p.read_text()]
    assert hits == []


@pytest.mark.parametrize("name", kernels.available())
def test_out_arrays_receive_every_result(name):
    k = kernels.backend(name)
    x, w, b = _conv_case(np.random.default_rng(2))
    y = np.full((6, 16, 12, 12), np.nan, np.float32)
    assert k.conv2d_forward(x, w, b, 1, 1, out=y) is y
    np.testing.assert_array_equal(y, k.conv2d_forward(x, w, b, 1, 1))
    dx = np.full(x.shape, np.nan, np.float32)
    got = k.conv2d_backward(np.ones_like(y), x, w, 1, 1, out=dx)
    assert got[0] is dx and np.isfinite(dx).all()
    p, arg = np.full((6, 6, 7, 7), np.nan, np.float32), np.zeros((6, 6, 7, 7), np.int32)
    assert k.maxpool2d_forward(x, 2, 2, out=p, arg_out=arg)[0] is p
    np.testing.assert_array_equal(arg, k.maxpool2d_forward(x, 2, 2)[1])
    with pytest.raises(ValueError, match="out must have shape"):
        k.conv2d_forward(x, w, b, 1, 0, out=y)
    with pytest.raises(TypeError, match="dtype"):
        k.avgpool2d_forward(x, 2, out=p.astype(np.float64))


@pytest.mark.parametrize("name", COMPILED)
def test_layers_reuse_their_own_buffers_but_never_the_logits(name):
    from fastlenet import models
    model = models.build("lenet5", backend=name, seed=0)
    x = np.random.default_rng(3).random((32, 1, 28, 28)).astype(np.float32)
    first_hidden = model.runnable[0]
    a = model.forward(x)
    kept = a.copy()
    hidden = first_hidden.outputs.get("y", (32, 6, 14, 14), np.float32)
    b = model.forward(x[::-1].copy())
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, kept)                   # the caller's logits are untouched
    assert first_hidden.outputs.get("y", (32, 6, 14, 14), np.float32) is hidden   # reused, no new pages


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


@pytest.mark.parametrize("dtype_a", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (4, 1, 3, 1)])
def test_an_aligned_pair_is_two_aligned_arrays_that_do_not_overlap(shape, dtype_a):
    a, b = _workspace.aligned_empty_pair(shape, dtype_a, np.int32)
    assert a.shape == b.shape == shape and a.dtype == dtype_a and b.dtype == np.int32
    if not _workspace.EXACT:              # exact workspaces (the AddressSanitizer runs): plain np.empty
        assert a.ctypes.data % _workspace.ALIGN == 0 and b.ctypes.data % _workspace.ALIGN == 0
    assert a.flags.c_contiguous and b.flags.c_contiguous and a.flags.writeable and b.flags.writeable
    a.fill(np.nan)
    b.fill(-1)
    assert np.isnan(a).all() and (b == -1).all()            # neither write reached the other
    assert not np.shares_memory(a, b)


@pytest.mark.parametrize("fill_zero", [False, True])
def test_aligned_arrays_past_the_small_size_start_on_a_cache_line(fill_zero):
    make = _workspace.aligned_zeros if fill_zero else _workspace.aligned_empty
    small = _workspace.SMALL // 4                      # float32 elements of a plain array
    for shape in [(small,), (small + 1,), (3, 7, 11), (1, 64, 16, 16)]:
        a = make(shape, np.float32)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
        if fill_zero:
            assert not a.any()
        if a.nbytes > _workspace.SMALL and not _workspace.EXACT:
            assert a.ctypes.data % _workspace.ALIGN == 0, shape
