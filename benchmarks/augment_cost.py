"""What the training augmentation costs per epoch: one epoch's worth of batches (469 of
128 images, 28x28) through ``fastlenet.augment.augment`` with each default recipe's
setting (MNIST: shifts of up to 2 px; Fashion-MNIST: 1 px plus flips), median of 7.

    python -m benchmarks.augment_cost
    PYTHONPATH=/tmp/old python benchmarks/augment_cost.py     # another source tree (a path, so it comes first)

An isolated loop, not a training epoch: timed inside ``fastlenet train`` (Fashion-MNIST,
2 threads, one epoch of 446 batches, the calls wrapped with a timer) the same change measured
0.17 -> 0.11 s on 2026-12-06 (AMD EPYC Zen 4), against 0.37 -> 0.07 s here; the cause of the
gap was not isolated.  Quote the in-training figure for what a user gains.
"""
from __future__ import annotations

import statistics
import sys
import time


def main() -> int:
    import numpy as np

    import fastlenet
    from fastlenet.augment import augment
    x = np.random.default_rng(0).random((128, 1, 28, 28), dtype=np.float32)
    settings = {"mnist (2 px shifts)": (2, False), "fashion-mnist (1 px shifts + flips)": (1, True)}
    times = {name: [] for name in settings}
    for _ in range(7):
        for name, (shift, flip) in settings.items():
            t0 = time.perf_counter()
            for batch in range(469):
                augment(x, np.random.default_rng(batch), shift, flip=flip)
            times[name].append(time.perf_counter() - t0)
    print(f"fastlenet from {fastlenet.__file__}")
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.3f} s per epoch of batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
