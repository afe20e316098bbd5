"""One LeNet-5 training step (forward + backward + Adam, batch 256) and inference
on 10,000 images (batch 1,000), every backend and PyTorch side by side:
`pytest --benchmark-only benchmarks/test_bench_training.py`."""
import numpy as np
import pytest

from benchmarks import workloads as W
from fastlenet import models


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
