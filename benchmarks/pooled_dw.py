"""The pooled dW (plan dW 'pooled_argmax') in training: one network's training steps with the
rule on and off, interleaved in one process, and the share of pooling windows the ReLU lets
through (the pooled dW's work grows with it, the dense dW's does not).

    python -m benchmarks.pooled_dw --model vgg-small --batch 32 [--threads 2] [--rounds 5]
    FASTLENET_DATA=../shared/datasets python -m benchmarks.pooled_dw --model lenet5 --batch 256

Each round trains ``--steps`` steps with plan.POOLED_DW_MAX_RATIO = 0 (every fused layer on
the dW its geometry plans without the pool) and then as many with the rule as shipped, the
model and optimizer carried on; LeNet-5 on Fashion-MNIST's first images, any other network
on random images of its input shape.  Prints each round's seconds, the medians and their
ratio, then the windows passing per fused conv + ReLU + pool layer, first and last step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _data(model, name: str, batch: int, steps: int, data_dir):
    """(x, y): ``steps`` batches of the dataset (LeNet-5) or of random images."""
    rng = np.random.default_rng(0)
    if model.input_shape == (1, 28, 28) and name.startswith("lenet5"):
        from fastlenet import data
        ds = data.load("fashion-mnist", data_dir=data_dir)
        return ds.x_train[:batch * steps], ds.y_train[:batch * steps].astype(np.int64)
    x = rng.random((batch * steps,) + model.input_shape, dtype=np.float32)
    return x, rng.integers(0, 10, len(x))


def _passing(model) -> list:
    """Share of pooling windows whose max passed the ReLU, per fused conv + ReLU + pool layer."""
    from fastlenet.layers import ConvReLUMaxPool
    return [float(np.mean(layer.arg >= 0)) for layer in model.runnable if isinstance(layer, ConvReLUMaxPool)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    from benchmarks import networks
    from fastlenet import kernels, optim
    from fastlenet.kernels import plan
    kernels.set_num_threads(args.threads)
    model = networks.build(args.model, "cython")
    opt = optim.Adam(model.params, lr=1e-3, backend="cython")
    x, y = _data(model, args.model, args.batch, args.steps, args.data_dir)

    def steps() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(x), args.batch):
            opt.step(model.loss_and_grads(x[i:i + args.batch], y[i:i + args.batch])[1])
        return time.perf_counter() - t0

    shipped, seconds = plan.POOLED_DW_MAX_RATIO, {"dense dW": [], "pooled dW": []}
    steps()                                            # warm-up: workspaces, caches
    first = _passing(model)
    try:
        for _ in range(args.rounds):
            for label, ratio in (("dense dW", 0.0), ("pooled dW", shipped)):
                plan.POOLED_DW_MAX_RATIO = ratio
                plan._plan.cache_clear()                # the plans are cached per geometry
                seconds[label].append(steps())
    finally:
        plan.POOLED_DW_MAX_RATIO = shipped
        plan._plan.cache_clear()
    print(f"cython, {args.model}, batch {args.batch}, {args.threads} threads, {args.steps} steps a round, s")
    for label, times in seconds.items():
        print(f"  {label:9s} " + " ".join(f"{t:.3f}" for t in times) + f"  median {statistics.median(times):.3f}")
    ratio = statistics.median(seconds["pooled dW"]) / statistics.median(seconds["dense dW"])
    print(f"  pooled / dense (medians): {ratio:.3f}")
    print("  windows passing the ReLU per fused layer, first -> last step: "
          + ", ".join(f"{a:.0%} -> {b:.0%}" for a, b in zip(first, _passing(model))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
