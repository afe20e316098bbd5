"""One backend's public ``conv2d_forward`` and ``conv2d_backward`` on the shape suite's
layers (float32, the fastest of 9 calls after a warm-up call, ms), with the paths its plan
runs: a quick before/after check of a kernel change beside the full suite
(benchmarks/test_bench_shapes.py).

    python -m benchmarks.conv_shapes numba [--threads 2]
    python -m benchmarks.conv_shapes cython --batch 1 --calls 400   # every layer at batch 1
    PYTHONPATH=/tmp/old python benchmarks/conv_shapes.py numba      # another source tree

Each cell is the fastest call and, in parentheses, the median (ms).

With ``--threads 1`` the time is the calling thread's CPU time (the kernels then run on
it): less moved by other work on a shared machine than the wall clock.
"""
from __future__ import annotations

import argparse
import time

#: the batch of each layer of the shape suite (benchmarks/test_bench_shapes.py SHAPES):
#: the issue's table -- 5x5 at 64, LeNet C3 at 256 -- else 128
BATCH = {"16to32_k5p2_24px": 64, "lenetC3_6to16_k5_14px": 256}


def fastest_and_median_ms(run, clock, repeats: int = 9):
    run()
    times = []
    for _ in range(repeats):
        t0 = clock()
        run()
        times.append(clock() - t0)
    times.sort()
    return 1000 * times[0], 1000 * times[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", nargs="?", default="numba", choices=["numba", "cython", "numpy"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="every layer at this batch (default: the suite's)")
    p.add_argument("--calls", type=int, default=9, help="timed calls per cell (default 9)")
    args = p.parse_args(argv)
    import numpy as np

    import fastlenet
    from benchmarks.test_bench_shapes import SHAPES
    from fastlenet import kernels
    kernels.set_num_threads(args.threads)
    be = kernels.backend(args.backend)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    print(f"{be.name} backend from {fastlenet.__file__}, {args.threads} thread(s), fastest (median) of "
          f"{args.calls} calls, ms")
    print("| layer | forward | backward (dx, dW, db) | plan (forward, dW, dx) |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (c, h, wd, f, k, s, pad) in SHAPES.items():
        n = args.batch or BATCH.get(name, 128)
        x = rng.standard_normal((n, c, h, wd), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32) * 0.1
        b = np.zeros(f, np.float32)
        dy = be.conv2d_forward(x, w, b, s, pad)
        fwd = fastest_and_median_ms(lambda: be.conv2d_forward(x, w, b, s, pad), clock, args.calls)
        bwd = fastest_and_median_ms(lambda: be.conv2d_backward(dy, x, w, s, pad), clock, args.calls)
        paths = be.plan_conv2d(x.shape, w.shape, s, pad).names if be.name != "numpy" else ("reference",)
        digits = 3 if min(fwd) < 1 else 2
        print(f"| {name}, batch {n} | {fwd[0]:.{digits}f} ({fwd[1]:.{digits}f}) | {bwd[0]:.{digits}f} "
              f"({bwd[1]:.{digits}f}) | {', '.join(paths)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
