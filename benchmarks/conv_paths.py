"""Every Cython conv path forced on the shape suite's layers: the crossovers behind the plan's
rules (fastlenet/kernels/plan.py), measured instead of assumed.

    python -m benchmarks.conv_paths --dtype float64 --batch 32        # WINOGRAD_FLOAT64
    python -m benchmarks.conv_paths --dtype float32 --batch 128 --shapes 64to64_k3_8px

For each layer: the forward paths, the dW paths (backward without dx), and the backward
with dx for each dx path (its dW the plan's, or ``--dw``'s), median of 9 calls after a
warm-up call, ms.  A path that refuses the geometry is left out; a path whose result is
not the reference's is printed as WRONG (and is a bug).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.conv_shapes import fastest_and_median_ms
from benchmarks.test_bench_shapes import SHAPES, tolerance


def _timed(run) -> float:
    return fastest_and_median_ms(run, time.perf_counter)[1]


def _within(got, want, rtol) -> bool:
    """The suite's check (benchmarks.workloads.check): max |diff| within rtol of the largest
    |value| (an absolute 1e-3 called a 5x5 Winograd dW summed over 64 samples, values near
    700, wrong for 0.006 off)."""
    return float(np.abs(got - want).max()) <= rtol * max(1.0, float(np.abs(want).max()))


def _forced(label, run, check):
    """'label ms' for one forced path, '' when the path refuses the geometry."""
    try:
        result = run()
    except ValueError:
        return ""
    return f"{label} {_timed(run):.2f}" if check(result) else f"{label} WRONG"


def layer_paths(name: str, batch: int, dtype, dw_for_dx: str = "") -> str:
    """One layer's line: every forward, dW and dx path forced (x, w: N, C, H, W / F, C, K, K)."""
    from fastlenet.kernels import _cy_conv, plan
    from fastlenet.kernels import reference as ref
    from fastlenet.kernels.cython_backend import LANES
    c, h, w_, f, k, s, p = SHAPES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w_)).astype(dtype)
    wt = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    b = np.zeros(f, dtype)
    planned = plan.conv2d(x.shape, wt.shape, s, p, lanes=LANES, itemsize=x.itemsize)
    oh, ow = planned.out_hw
    dy = rng.standard_normal((batch, f, oh, ow)).astype(dtype)
    want_y = ref.conv2d_forward(x, wt, b, s, p)
    want_dx, want_dw, _ = ref.conv2d_backward(dy, x, wt, s, p, True)
    close = lambda got, want: _within(got, want, tolerance(dtype))                  # noqa: E731
    cells = [f"{name}: plan {'/'.join(planned.names)}"]
    for path in plan.FORWARD:
        codes = dataclasses.replace(planned, forward=path).codes
        cells.append(_forced(f"fwd {path}", lambda: _cy_conv.conv2d_forward(x, wt, b, s, p, oh, ow, codes, None),
                             lambda y: close(y, want_y)))
    for path in plan.DW:
        codes = dataclasses.replace(planned, dw=path).codes
        cells.append(_forced(f"dw {path}", lambda: _cy_conv.conv2d_backward(dy, x, wt, s, p, False, codes,
                                                                            None, None, None),
                             lambda r: close(r[1], want_dw)))
    for path in plan.DX:
        codes = dataclasses.replace(planned, dx=path, dw=dw_for_dx or planned.dw).codes
        cells.append(_forced(f"dx+dw {path}", lambda: _cy_conv.conv2d_backward(dy, x, wt, s, p, True, codes,
                                                                               None, None, None),
                             lambda r: close(r[0], want_dx) and close(r[1], want_dw)))
    return " | ".join(cell for cell in cells if cell)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--dw", default="", help="the dW path beside each dx path (default: the plan's)")
    args = parser.parse_args(argv)
    from fastlenet import kernels
    kernels.set_num_threads(args.threads)
    print(f"cython, {args.threads} threads, batch {args.batch}, {args.dtype}, median ms")
    for name in args.shapes:
        print(layer_paths(name, args.batch, np.dtype(args.dtype).type, args.dw), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
