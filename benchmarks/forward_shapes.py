"""The public ``conv2d_forward`` of one backend on the shapes whose plan depends on the
backend's filter-lanes crossover (float32, 2 threads, median of 7 after a warm-up call),
each with the forward path the backend's own plan picks.

    python -m benchmarks.forward_shapes numba        # or cython
    python -m benchmarks.forward_shapes numba --every-path   # Numba: each forward path forced (crossovers)
    python -m benchmarks.forward_shapes numba --load 2       # beside 2 CPU-bound processes (benchmarks/load.py)
    PYTHONPATH=/tmp/old python benchmarks/forward_shapes.py numba    # another source tree
"""
from __future__ import annotations

import statistics
import sys
import time

#: name -> (batch, channels, size, filters, kernel, pad); stride 1
SHAPES = {
    "5x5 pad 2, 16 -> 32, 24x24, batch 64": (64, 16, 24, 32, 5, 2),
    "3x3 pad 1, 64 -> 64, 8x8, batch 128": (128, 64, 8, 64, 3, 1),
    "LeNet C3, 6 -> 16, 5x5, 14x14, batch 256": (256, 6, 14, 16, 5, 0),
    "3x3 pad 1, 32 -> 64, 16x16, batch 128": (128, 32, 16, 64, 3, 1),
    "3x3 pad 1, 64 -> 128, 8x8, batch 128 (K 576)": (128, 64, 8, 128, 3, 1),
    "3x3 pad 1, 128 -> 128, 8x8, batch 64 (K 1152)": (64, 128, 8, 128, 3, 1),
}


def numba_paths(x, w, b, pad) -> dict:
    """Median ms of each forward path the Numba kernel can run on this geometry, forced."""
    from fastlenet.kernels import numba_conv, plan
    oh = x.shape[2] + 2 * pad - w.shape[2] + 1
    found = {}
    for name in plan.FORWARD:
        if name in numba_conv.CYTHON_ONLY:
            continue                                # not built in this backend
        if name == "direct" and x.shape[1] * w.shape[2] * w.shape[3] > plan.MAX_DIRECT_K:
            continue
        run = lambda: numba_conv.conv_forward(x, w, b, 1, pad, oh, oh, path=name)  # noqa: E731
        run()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        found[name] = round(1000 * statistics.median(times), 2)
    return found


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--load" in argv:
        import os
        sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run as a file too (last: PYTHONPATH trees win)
        from benchmarks.load import competing_load
        at = argv.index("--load")
        with competing_load(int(argv[at + 1])):
            return measure(argv[:at] + argv[at + 2:], f" beside {argv[at + 1]} CPU-bound processes")
    return measure(argv, "")


def measure(argv, load: str) -> int:
    import numpy as np

    import fastlenet
    from fastlenet import kernels
    kernels.set_num_threads(2)
    names = [a for a in argv if not a.startswith("--")]
    be = kernels.backend(names[0] if names else "numba")
    rng = np.random.default_rng(0)
    print(f"{be.name} backend from {fastlenet.__file__}, 2 threads{load}")
    for name, (n, c, h, f, k, p) in SHAPES.items():
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32) * 0.1
        b = np.zeros(f, np.float32)
        be.conv2d_forward(x, w, b, 1, p)                        # compiles (Numba) and warms up
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            be.conv2d_forward(x, w, b, 1, p)
            times.append(time.perf_counter() - t0)
        path = be.plan_conv2d(x.shape, w.shape, 1, p).forward
        print(f"{name:48} {1000 * statistics.median(times):8.2f} ms  {path}")
        if "--every-path" in argv and be.name == "numba":
            print(f"{'':48} every path: {numba_paths(x, w, b, p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
