"""Each kernel at the LeNet-5 shapes (batch 256), every backend and PyTorch in
one group: `pytest --benchmark-only benchmarks/test_bench_kernels.py`."""
import numpy as np
import pytest

from benchmarks import workloads as W
from fastlenet import kernels
from fastlenet.kernels import reference as ref


def data(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32) * 0.2
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    return x, w, b


def kernel_pair(backend):
    """(k, torch-or-None): the kernel namespace of a backend, with threads set."""
    if backend == "torch":
        return None, W.torch_or_skip()
    W.setup_threads()
    return kernels.backend(backend), None


@pytest.mark.parametrize("shape", sorted(W.CONV_SHAPES))
@pytest.mark.parametrize("backend", W.ALL)
def test_conv2d_forward(benchmark, backend, shape):
    x_shape, w_shape, pad = W.CONV_SHAPES[shape]
    benchmark.group = f"conv2d_forward {shape} x{x_shape} w{w_shape}"
    x, w, b = data(x_shape, w_shape)
    want = ref.conv2d_forward(x, w, b, 1, pad)
    k, torch = kernel_pair(backend)
    if torch:
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        fn = lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        W.check("torch conv", fn().numpy(), want)
    else:
        fn = lambda: k.conv2d_forward(x, w, b, 1, pad)
        W.check(f"{backend} conv", fn(), want)        # also the Numba warm-up
    benchmark(fn)
    W.record(benchmark, W.conv_flops(x_shape, w_shape, pad))


@pytest.mark.parametrize("shape", sorted(W.CONV_SHAPES))
@pytest.mark.parametrize("backend", W.ALL)
def test_conv2d_backward(benchmark, backend, shape):
    x_shape, w_shape, pad = W.CONV_SHAPES[shape]
    need_dx = shape != "C1"                           # the first layer never needs dx
    benchmark.group = f"conv2d_backward {shape} x{x_shape} w{w_shape} need_dx={need_dx}"
    x, w, b = data(x_shape, w_shape)
    dy = np.random.default_rng(1).standard_normal(ref.conv2d_forward(x, w, b, 1, pad).shape).astype(np.float32)
    want = ref.conv2d_backward(dy, x, w, 1, pad, need_dx)
    k, torch = kernel_pair(backend)
    if torch:
        tdy, tx, tw = map(torch.from_numpy, (dy, x, w))
        fn = lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, [w_shape[0]], [1, 1], [pad, pad], [1, 1],
                                                         False, [0, 0], 1, [need_dx, True, True])
        got = fn()
        W.check("torch dw", got[1].numpy(), want[1])
    else:
        fn = lambda: k.conv2d_backward(dy, x, w, 1, pad, need_dx)
        got = fn()
        W.check(f"{backend} dw", got[1], want[1])
        W.check(f"{backend} db", got[2], want[2])
        if need_dx:
            W.check(f"{backend} dx", got[0], want[0])
    benchmark(fn)
    W.record(benchmark, W.conv_flops(x_shape, w_shape, pad) * (2 if need_dx else 1))


@pytest.mark.parametrize("shape", sorted(W.POOL_SHAPES))
@pytest.mark.parametrize("backend", W.ALL)
def test_maxpool2d_forward(benchmark, backend, shape):
    x_shape = W.POOL_SHAPES[shape]
    benchmark.group = f"maxpool2d_forward {shape} x{x_shape}"
    x = np.random.default_rng(2).standard_normal(x_shape).astype(np.float32)
    want, _ = ref.maxpool2d_forward(x, 2, 2)
    k, torch = kernel_pair(backend)
    if torch:
        tx = torch.from_numpy(x)
        fn = lambda: torch.nn.functional.max_pool2d(tx, 2, 2, return_indices=True)
        W.check("torch maxpool", fn()[0].numpy(), want)
    else:
        fn = lambda: k.maxpool2d_forward(x, 2, 2)
        W.check(f"{backend} maxpool", fn()[0], want)
    benchmark(fn)


@pytest.mark.parametrize("shape", sorted(W.POOL_SHAPES))
@pytest.mark.parametrize("backend", W.ALL)
def test_maxpool2d_backward(benchmark, backend, shape):
    x_shape = W.POOL_SHAPES[shape]
    benchmark.group = f"maxpool2d_backward {shape} x{x_shape}"
    x = np.random.default_rng(2).standard_normal(x_shape).astype(np.float32)
    y, arg = ref.maxpool2d_forward(x, 2, 2)
    dy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    want = ref.maxpool2d_backward(dy, arg, x.shape, 2, 2)
    k, torch = kernel_pair(backend)
    if torch:
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        _, idx = torch.nn.functional.max_pool2d(tx, 2, 2, return_indices=True)
        fn = lambda: torch.ops.aten.max_pool2d_with_indices_backward(tdy, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
        W.check("torch maxpool dx", fn().numpy(), want)
    else:
        fn = lambda: k.maxpool2d_backward(dy, arg, x.shape, 2, 2)
        W.check(f"{backend} maxpool dx", fn(), want)
    benchmark(fn)


@pytest.mark.parametrize("shape", sorted(W.POOL_SHAPES))
@pytest.mark.parametrize("backend", W.ALL)
def test_avgpool2d_forward_backward(benchmark, backend, shape):
    x_shape = W.POOL_SHAPES[shape]
    benchmark.group = f"avgpool2d forward+backward {shape} x{x_shape}"
    x = np.random.default_rng(2).standard_normal(x_shape).astype(np.float32)
    want_y = ref.avgpool2d_forward(x, 2, 2)
    dy = np.random.default_rng(3).standard_normal(want_y.shape).astype(np.float32)
    want_dx = ref.avgpool2d_backward(dy, x.shape, 2, 2)
    k, torch = kernel_pair(backend)
    if torch:
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        fn = lambda: (torch.nn.functional.avg_pool2d(tx, 2, 2),
                      torch.ops.aten.avg_pool2d_backward(tdy, tx, [2, 2], [2, 2], [0, 0], False, True, None))
        y, dx = fn()
        W.check("torch avgpool", y.numpy(), want_y)
        W.check("torch avgpool dx", dx.numpy(), want_dx)
    else:
        fn = lambda: (k.avgpool2d_forward(x, 2, 2), k.avgpool2d_backward(dy, x.shape, 2, 2))
        y, dx = fn()
        W.check(f"{backend} avgpool", y, want_y)
        W.check(f"{backend} avgpool dx", dx, want_dx)
    benchmark(fn)
