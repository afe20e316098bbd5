"""Shared benchmark workloads: the LeNet-5 shapes, FLOP counts, a PyTorch twin
of every kernel and of the training step, and the helpers that check a result
before it is timed.

Dimension legend: N batch, C channels, H/W height/width, F filters, K kernel.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from fastlenet import kernels, models, optim

THREADS = int(os.environ.get("FASTLENET_BENCH_THREADS",
                             len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
BATCH = 256

# name -> (x shape, w shape, pad): the two LeNet-5 convolutions at batch 256
CONV_SHAPES = {
    "C1": ((BATCH, 1, 28, 28), (6, 1, 5, 5), 2),
    "C3": ((BATCH, 6, 14, 14), (16, 6, 5, 5), 0),
}
# name -> x shape of the 2x2 pools that follow them
POOL_SHAPES = {"S2": (BATCH, 6, 28, 28), "S4": (BATCH, 16, 10, 10)}

BACKENDS = ["numpy", "numba", "cython"]
ALL = BACKENDS + ["torch"]


def torch_or_skip():
    try:
        import torch
    except ImportError:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0 to compare; never a dependency)")
    torch.set_num_threads(THREADS)
    return torch


def setup_threads():
    kernels.set_num_threads(THREADS)


def conv_flops(x_shape, w_shape, pad):
    n, c, h, w = x_shape
    f, _, kh, kw = w_shape
    oh, ow = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
    return 2.0 * n * f * oh * ow * c * kh * kw


def lenet5_step_flops(batch):
    """Forward + backward FLOPs of a LeNet-5 step (backward = 2 x forward for
    conv/dense, minus the first layer's unused input gradient)."""
    c1 = conv_flops((batch, 1, 28, 28), (6, 1, 5, 5), 2)
    c3 = conv_flops((batch, 6, 14, 14), (16, 6, 5, 5), 0)
    dense = 2.0 * batch * (400 * 120 + 120 * 84 + 84 * 10)
    return 2 * c1 + 3 * c3 + 3 * dense


def inference_flops(n):
    c1 = conv_flops((n, 1, 28, 28), (6, 1, 5, 5), 2)
    c3 = conv_flops((n, 6, 14, 14), (16, 6, 5, 5), 0)
    return c1 + c3 + 2.0 * n * (400 * 120 + 120 * 84 + 84 * 10)


def check(name, got, want, rtol=2e-4):
    """Fail a benchmark whose result is wrong before timing it."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"{name}: wrong result (max |diff| {err:.3e}); not timing it"


def record(benchmark, flops):
    """Store GFLOP/s (from the mean time) in extra_info once the timing is known."""
    benchmark.extra_info["gflop"] = flops / 1e9
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.mean:
        benchmark.extra_info["gflops"] = round(flops / stats.stats.mean / 1e9, 2)


def torch_lenet5(torch, seed=0):
    """The same LeNet-5 (ReLU, max pool) in PyTorch, with fastlenet's initial weights."""
    from benchmarks import networks
    return networks.torch_twin(torch, models.build("lenet5", backend="numpy", seed=seed))


def fastlenet_step(backend, batch=BATCH, seed=0):
    """(step function, model) for one forward + backward + Adam step on a fixed batch."""
    model = models.build("lenet5", backend=backend, seed=seed)
    opt = optim.Adam(model.params, lr=1e-3, backend=backend)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def step():
        loss, grads = model.loss_and_grads(x, y)
        opt.step(grads)
        return loss
    return step, model, x, y


def torch_step(torch, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28)).astype(np.float32)
    net = torch_lenet5(torch, seed)
    return torch_train_step(torch, net, x, rng.integers(0, 10, batch)), net


def torch_train_step(torch, net, x, y):
    """step() -> loss: one forward + backward + Adam (lr 1e-3) step of ``net`` on the fixed
    batch x (N, ...) float32, y (N,) int64."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step
