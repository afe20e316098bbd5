"""One LeNet-5 training step (forward + backward + Adam, batch 256) and inference
on 10,000 images (batch 1,000), every backend and PyTorch side by side, and one
training step of the CIFAR-shaped and VGG-style networks (benchmarks/networks.py):
`pytest --benchmark-only benchmarks/test_bench_training.py`."""
import functools

import numpy as np
import pytest

from benchmarks import networks
from benchmarks import workloads as W
from fastlenet import models, optim


@pytest.mark.parametrize("backend", W.ALL)
def test_training_step(benchmark, backend):
    benchmark.group = f"LeNet-5 training step (batch {W.BATCH}, Adam, {W.THREADS} threads)"
    ref_step, _, _, _ = W.fastlenet_step("numpy")
    ref_loss = ref_step()
    if backend == "torch":
        torch = W.torch_or_skip()
        step, _ = W.torch_step(torch)
    else:
        W.setup_threads()
        step, _, _, _ = W.fastlenet_step(backend)
    first = step()                                   # checked before timing (and Numba warmed up)
    assert abs(first - ref_loss) < 1e-4 * max(1.0, abs(ref_loss)), (first, ref_loss)
    benchmark(step)
    W.record(benchmark, W.lenet5_step_flops(W.BATCH))


@pytest.mark.parametrize("backend", W.ALL)
def test_inference_10k(benchmark, backend):
    benchmark.group = f"LeNet-5 inference, 10,000 images (batch 1,000, {W.THREADS} threads)"
    rng = np.random.default_rng(0)
    x = rng.random((10000, 1, 28, 28)).astype(np.float32)
    ref = models.build("lenet5", backend="numpy", seed=0)
    want = ref.forward(x[:1000])
    if backend == "torch":
        torch = W.torch_or_skip()
        net = W.torch_lenet5(torch).eval()
        tx = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return [net(tx[i:i + 1000]) for i in range(0, 10000, 1000)]
        W.check("torch logits", run()[0].numpy(), want)
    else:
        W.setup_threads()
        model = models.build("lenet5", backend=backend, seed=0)

        def run():
            return [model.forward(x[i:i + 1000]) for i in range(0, 10000, 1000)]
        W.check(f"{backend} logits", run()[0], want)
    benchmark(run)
    W.record(benchmark, W.inference_flops(10000))


@functools.lru_cache(maxsize=None)
def _network_batch(network, batch):
    """(x, y, the reference's first-step loss) for a network's training-step benchmark."""
    ref = networks.build(network, "numpy")
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + ref.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return x, y, ref.loss_and_grads(x, y)[0]


@pytest.mark.parametrize("network,batch", [("cifar-cnn", 64), ("vgg-small", 32)])
@pytest.mark.parametrize("backend", ["numba", "cython", "torch"])
def test_network_training_step(benchmark, backend, network, batch):
    """Networks beyond LeNet-5 (benchmarks/networks.py), one step, PyTorch's twin beside."""
    benchmark.group = f"{network} training step (batch {batch}, Adam, {W.THREADS} threads)"
    x, y, ref_loss = _network_batch(network, batch)
    if backend == "torch":
        torch = W.torch_or_skip()
        step = W.torch_train_step(torch, networks.torch_twin(torch, networks.build(network, "numpy")), x, y)
    else:
        W.setup_threads()
        model = networks.build(network, backend)
        fopt = optim.Adam(model.params, lr=1e-3, backend=backend)

        def step():
            loss, grads = model.loss_and_grads(x, y)
            fopt.step(grads)
            return loss
    first = step()                                   # checked before timing (and Numba warmed up)
    assert abs(first - ref_loss) < 1e-4 * max(1.0, abs(ref_loss)), (first, ref_loss)
    benchmark(step)
    W.record(benchmark, networks.step_flops(networks.build(network, "numpy"), batch))
