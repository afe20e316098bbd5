"""The machine's measured peaks, for the benchmark tables' "share of peak" columns.

    python -m benchmarks.peaks            # CPU, vector width, FMA and sgemm peaks

* **FMA peak** -- the FP32 multiply-add loop of the Cython extension (csrc/peak.h:
  12 independent vector FMA chains, no memory traffic) on every thread at once: the
  most the cores can do with this build's vectors;
* **sgemm peak** -- NumPy's BLAS (OpenBLAS) multiplying 2048 x 2048 float32 matrices
  with the same thread count: what a tuned library reaches on real data.

Both are measured in the same run as the tables that use them (never copied from
another day's machine), best of a few tries so that a noisy neighbour lowers neither.
"""
from __future__ import annotations

import argparse
import os
import time

FMA_SECONDS = 0.25       # per try; long enough for clocks to settle, short enough to repeat
TRIES = 5


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """The build's vector ISA and width, e.g. 'avx2+fma, 8 float32 lanes (256-bit)'."""
    from fastlenet.kernels import _cy_probe
    return f"{_cy_probe.isa()}, {_cy_probe.LANES} float32 lanes ({32 * _cy_probe.LANES}-bit)"


def fma_peak(threads: int) -> float:
    """GFLOP/s of the FMA loop on ``threads`` threads (best of TRIES)."""
    from fastlenet.kernels import _cy_probe
    iters = 1 << 16
    while True:                                   # size one try to about FMA_SECONDS
        t0 = time.perf_counter()
        _cy_probe.fma_flops(iters, threads)
        if time.perf_counter() - t0 > FMA_SECONDS / 4:
            break
        iters *= 2
    best = 0.0
    for _ in range(TRIES):
        t0 = time.perf_counter()
        flops, _ = _cy_probe.fma_flops(4 * iters, threads)
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def sgemm_peak(threads: int, n: int = 2048) -> float:
    """GFLOP/s of NumPy's float32 matmul (n x n) on ``threads`` BLAS threads (best of TRIES)."""
    import numpy as np
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.T.copy()
    out = np.empty_like(a)
    best = 0.0
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(TRIES):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def measure(threads: int) -> dict:
    return {"cpu": cpu_model(), "isa": vector_isa(), "threads": threads,
            "fma_gflops": fma_peak(threads), "sgemm_gflops": sgemm_peak(threads)}


def describe(peaks: dict) -> str:
    return (f"{peaks['cpu']} ({peaks['isa']}), {peaks['threads']} threads: measured FP32 FMA peak "
            f"{peaks['fma_gflops']:.0f} GFLOP/s, OpenBLAS sgemm {peaks['sgemm_gflops']:.0f} GFLOP/s")


def main(argv=None):
    from fastlenet.kernels import usable_cpus
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=usable_cpus())
    args = p.parse_args(argv)
    print(describe(measure(args.threads)))
    if args.threads != 1:
        print(f"  1 thread: FMA {fma_peak(1):.0f} GFLOP/s, sgemm {sgemm_peak(1):.0f} GFLOP/s")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
