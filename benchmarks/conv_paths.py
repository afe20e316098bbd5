"""Every Cython conv path forced on the shape suite's layers: the crossovers behind the plan's
rules (fastlenet/kernels/plan.py), measured instead of assumed.

    python -m benchmarks.conv_paths --dtype float64 --batch 32        # WINOGRAD_FLOAT64
    python -m benchmarks.conv_paths --dtype float32 --batch 128 --shapes 64to64_k3_8px
    python -m benchmarks.conv_paths --dtype float32 --batch 64 --pool              # POOLED_DW_MAX_RATIO

For each layer: the forward paths, the dW paths (backward without dx), and the backward
with dx for each dx path (its dW the plan's, or ``--dw``'s), median of 9 calls after a
warm-up call, ms; with ``--pool``, each layer fused with ReLU and a 2x2/2 max pool and
the dW paths of its fused backward (the pooled gradient's argmaxes, or the dense ones),
then the backward with dx for the pooled dW and for the dW the layer plans without a pool.  A path that refuses the geometry is left out; a path whose result is
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


def _layer(name: str, batch: int, dtype, pool=None):
    """(x, w, b, stride, pad, its plan, rng) of one suite layer: the same random data for
    every path (rng carries on for the gradient)."""
    from fastlenet.kernels import plan
    from fastlenet.kernels.cython_backend import LANES
    c, h, w_, f, k, s, p = SHAPES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w_)).astype(dtype)
    wt = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    planned = plan.conv2d(x.shape, wt.shape, s, p, pool, lanes=LANES, itemsize=x.itemsize)
    return x, wt, np.zeros(f, dtype), s, p, planned, rng


def layer_paths(name: str, batch: int, dtype, dw_for_dx: str = "") -> str:
    """One layer's line: every forward, dW and dx path forced (x, w: N, C, H, W / F, C, K, K)."""
    from fastlenet.kernels import _cy_conv, plan
    from fastlenet.kernels import reference as ref
    x, wt, b, s, p, planned, rng = _layer(name, batch, dtype)
    oh, ow = planned.out_hw
    dy = rng.standard_normal((batch, wt.shape[0], oh, ow)).astype(dtype)
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


def pooled_layer_paths(name: str, batch: int, dtype) -> str:
    """One layer fused with ReLU and a 2x2/2 max pool: every dW path forced on its fused
    backward (dW and db only), against the reference's conv -> ReLU -> pool gradient."""
    from fastlenet.kernels import _cy_conv, plan
    from fastlenet.kernels import reference as ref
    from fastlenet.kernels.cython_backend import LANES
    x, wt, b, s, p, planned, rng = _layer(name, batch, dtype, (2, 2))
    f, (oh, ow) = wt.shape[0], planned.out_hw
    y, arg = _cy_conv.conv2d_relu_maxpool_forward(x, wt, b, s, p, oh, ow, 2, 2, planned.codes, None, None)
    grad = rng.standard_normal(y.shape).astype(dtype)
    # the gradient routed by the kernel's own argmax (a Winograd forward's rounding may pick
    # another of two nearly equal window values than the reference's would)
    planes = arg.reshape(batch * f, -1)
    at = (np.arange(batch * f)[:, None] * (oh * ow) + planes)[planes >= 0]
    dz = np.zeros(batch * f * oh * ow, dtype)
    np.add.at(dz, at, grad.reshape(batch * f, -1)[planes >= 0])
    want_dw = ref.conv2d_backward(dz.reshape(batch, f, oh, ow), x, wt, s, p, False)[1]
    active = float(np.mean(arg >= 0))          # the pooled dW's work grows with it, the dense one's not
    cells = [f"{name} + ReLU + 2x2 pool ({active:.0%} of windows pass the ReLU): plan {'/'.join(planned.names)}"]
    dense = plan.conv2d(x.shape, wt.shape, s, p, None, lanes=LANES, itemsize=x.itemsize).dw   # without the pool
    for path, need_dx in [(path, False) for path in plan.DW] + [(dense, True), ("pooled_argmax", True)]:
        codes = dataclasses.replace(planned, dw=path).codes
        run = lambda: _cy_conv.conv2d_relu_maxpool_backward(grad, arg, x, wt, s, p, oh, ow, 2, 2,  # noqa: E731
                                                            need_dx, codes, None, None, None)
        cells.append(_forced(f"{'dx+' if need_dx else ''}dw {path}", run,
                             lambda got: _within(got[1], want_dw, tolerance(dtype))))
    return " | ".join(cell for cell in cells if cell)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--dw", default="", help="the dW path beside each dx path (default: the plan's)")
    parser.add_argument("--pool", action="store_true",
                        help="each layer fused with ReLU + a 2x2/2 max pool: its dW paths (POOLED_DW_MAX_RATIO)")
    args = parser.parse_args(argv)
    from fastlenet import kernels
    kernels.set_num_threads(args.threads)
    print(f"cython, {args.threads} threads, batch {args.batch}, {args.dtype}, median ms")
    for name in args.shapes:
        dtype = np.dtype(args.dtype).type
        line = pooled_layer_paths(name, args.batch, dtype) if args.pool else layer_paths(name, args.batch, dtype,
                                                                                           args.dw)
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
