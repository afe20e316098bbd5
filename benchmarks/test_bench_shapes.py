"""The shape suite: the public kernels on common CNN shapes that are not LeNet-5's,
every backend and PyTorch in one pytest-benchmark group per case, each result
checked against the NumPy reference before it is timed.

    pytest --benchmark-only benchmarks/test_bench_shapes.py              # everything
    pytest --benchmark-only benchmarks/test_bench_shapes.py -k "b128 and f32 and t2"

Cases: conv forward and backward (dx, dw, db) on SHAPES at batch 1, 32 and 128 in
float32, batch 32 in float64; max and average pooling 2x2/2 and 3x3/2 (overlapping)
on POOL_SHAPES; 1 and 2 threads for the batch-128 float32 cases.

Dimension legend: N batch, C input channels, F filters, H/W height/width, K kernel.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import workloads as W
from fastlenet import kernels
from fastlenet.kernels import reference as ref

#: name -> (C, H, W, F, K, stride, pad)
SHAPES = {
    "3to32_k3_32px": (3, 32, 32, 32, 3, 1, 1),
    "32to64_k3_16px": (32, 16, 16, 64, 3, 1, 1),
    "64to64_k3_8px": (64, 8, 8, 64, 3, 1, 1),
    "32to64_k3s2_32px": (32, 32, 32, 64, 3, 2, 1),
    "64to128_k1_16px": (64, 16, 16, 128, 1, 1, 0),
    "16to32_k5p2_24px": (16, 24, 24, 32, 5, 1, 2),
    "lenetC3_6to16_k5_14px": (6, 14, 14, 16, 5, 1, 0),
}
#: name -> (C, H, W) of pooling inputs
POOL_SHAPES = {"32ch_32px": (32, 32, 32), "64ch_16px": (64, 16, 16)}
POOLS = {"2x2s2": (2, 2), "3x3s2": (3, 2)}
#: (batch, dtype, threads) per case tag
CASES = {
    "b128_f32_t2": (128, np.float32, 2), "b128_f32_t1": (128, np.float32, 1),
    "b32_f32_t2": (32, np.float32, 2), "b1_f32_t2": (1, np.float32, 2), "b32_f64_t2": (32, np.float64, 2),
}


def conv_case(shape: str, case: str, seed: int = 0):
    c, h, w, f, k, stride, pad = SHAPES[shape]
    n, dtype, threads = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    return x, wt, b, stride, pad, threads


def flops(x, wt, stride, pad) -> float:
    n, c, h, w = x.shape
    f, _, k, _ = wt.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return 2.0 * n * f * oh * ow * c * k * k


def runner(backend: str, threads: int):
    """(kernel namespace or None, torch or None) with ``threads`` set."""
    if backend == "torch":
        torch = W.torch_or_skip()
        torch.set_num_threads(threads)
        return None, torch
    kernels.set_num_threads(threads)
    return kernels.backend(backend), None


def every_conv_case(test):
    """Parametrise ``test`` over every backend x conv shape x case."""
    for name, values in (("backend", W.ALL), ("shape", list(SHAPES)), ("case", list(CASES))):
        test = pytest.mark.parametrize(name, values)(test)
    return test


def tolerance(dtype) -> float:
    return 2e-4 if dtype == np.float32 else 1e-9


@every_conv_case
def test_shape_conv_forward(benchmark, backend, shape, case):
    x, wt, b, stride, pad, threads = conv_case(shape, case)
    benchmark.group = f"shape conv fwd {shape} {case}"
    want = ref.conv2d_forward(x, wt, b, stride, pad)
    k, torch = runner(backend, threads)
    if torch:
        tx, tw, tb = map(torch.from_numpy, (x, wt, b))
        fn = lambda: torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=pad).numpy()  # noqa: E731
    else:
        fn = lambda: k.conv2d_forward(x, wt, b, stride, pad)                                      # noqa: E731
    W.check(f"{backend} conv fwd", fn(), want, tolerance(x.dtype))    # also the Numba warm-up
    benchmark(fn)
    W.record(benchmark, flops(x, wt, stride, pad))


@every_conv_case
def test_shape_conv_backward(benchmark, backend, shape, case):
    x, wt, b, stride, pad, threads = conv_case(shape, case)
    benchmark.group = f"shape conv bwd {shape} {case}"
    dy = np.random.default_rng(1).standard_normal(ref.conv2d_forward(x, wt, b, stride, pad).shape).astype(x.dtype)
    want = ref.conv2d_backward(dy, x, wt, stride, pad, True)
    k, torch = runner(backend, threads)
    if torch:
        tdy, tx, tw = map(torch.from_numpy, (dy, x, wt))
        fn = lambda: [t.numpy() for t in torch.ops.aten.convolution_backward(  # noqa: E731
            tdy, tx, tw, [wt.shape[0]], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1, [True, True, True])]
    else:
        fn = lambda: k.conv2d_backward(dy, x, wt, stride, pad, True)                             # noqa: E731
    got = fn()
    for name, g, w_ in zip(("dx", "dw", "db"), got, want):
        W.check(f"{backend} {name}", g, w_, tolerance(x.dtype))
    benchmark(fn)
    W.record(benchmark, 2 * flops(x, wt, stride, pad))


@pytest.mark.parametrize("case", ["b128_f32_t2", "b32_f32_t2", "b32_f64_t2"])
@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("backend", W.ALL)
def test_shape_pool_forward(benchmark, backend, kind, shape, pool, case):
    n, dtype, threads = CASES[case]
    size, stride = POOLS[pool]
    x = np.random.default_rng(2).standard_normal((n,) + POOL_SHAPES[shape]).astype(dtype)
    benchmark.group = f"shape {kind}pool fwd {shape} {pool} {case}"
    want = (ref.maxpool2d_forward(x, size, stride)[0] if kind == "max" else ref.avgpool2d_forward(x, size, stride))
    k, torch = runner(backend, threads)
    if torch:
        tx = torch.from_numpy(x)
        op = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        fn = lambda: op(tx, size, stride).numpy()                                                  # noqa: E731
    elif kind == "max":
        fn = lambda: k.maxpool2d_forward(x, size, stride)[0]                                       # noqa: E731
    else:
        fn = lambda: k.avgpool2d_forward(x, size, stride)                                          # noqa: E731
    W.check(f"{backend} {kind}pool", fn(), want, tolerance(dtype))
    benchmark(fn)
