"""One backend's public ``conv2d_forward`` and ``conv2d_backward`` on the shape suite's
layers (float32, the fastest of 9 calls after a warm-up call, ms): a quick before/after
check of a kernel change beside the full suite (benchmarks/test_bench_shapes.py).

    python -m benchmarks.conv_shapes numba [--threads 2]
    PYTHONPATH=/tmp/old python benchmarks/conv_shapes.py numba      # another source tree

With ``--threads 1`` the time is the calling thread's CPU time (the kernels then run on
it): less moved by other work on a shared machine than the wall clock.
"""
from __future__ import annotations

import argparse
import time

#: name -> (batch, channels, size, filters, kernel, stride, pad)
SHAPES = {
    "3 -> 32, 3x3 pad 1, 32x32": (128, 3, 32, 32, 3, 1, 1),
    "32 -> 64, 3x3 pad 1, 16x16": (128, 32, 16, 64, 3, 1, 1),
    "64 -> 64, 3x3 pad 1, 8x8": (128, 64, 8, 64, 3, 1, 1),
    "32 -> 64, 3x3 stride 2, 32x32": (128, 32, 32, 64, 3, 2, 1),
    "64 -> 128, 1x1, 16x16": (128, 64, 16, 128, 1, 1, 0),
    "16 -> 32, 5x5 pad 2, 24x24, batch 64": (64, 16, 24, 32, 5, 1, 2),
    "LeNet C3, 6 -> 16, 5x5, 14x14, batch 256": (256, 6, 14, 16, 5, 1, 0),
}


def fastest_ms(run, clock, repeats: int = 9) -> float:
    run()
    times = []
    for _ in range(repeats):
        t0 = clock()
        run()
        times.append(clock() - t0)
    return 1000 * min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", nargs="?", default="numba", choices=["numba", "cython", "numpy"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import numpy as np

    import fastlenet
    from fastlenet import kernels
    kernels.set_num_threads(args.threads)
    be = kernels.backend(args.backend)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    print(f"{be.name} backend from {fastlenet.__file__}, {args.threads} thread(s), fastest of 9, ms")
    print("| layer | forward | backward (dx, dW, db) |\n|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (n, c, h, f, k, s, pad) in SHAPES.items():
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32) * 0.1
        b = np.zeros(f, np.float32)
        dy = be.conv2d_forward(x, w, b, s, pad)
        fwd = fastest_ms(lambda: be.conv2d_forward(x, w, b, s, pad), clock)
        bwd = fastest_ms(lambda: be.conv2d_backward(dy, x, w, s, pad), clock)
        print(f"| {name} | {fwd:.2f} | {bwd:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
