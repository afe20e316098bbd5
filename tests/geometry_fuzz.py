"""Random geometries through every kernel path of a compiled backend, checked
against the NumPy reference: fused conv + ReLU + pool (every pool kernel and
dW/dx layout the geometry selects), plain conv forward/backward and the dense
products.
    python tests/geometry_fuzz.py --cases 300 --seed 0 [--backend numba]
Run under AddressSanitizer by tests/asan.sh (the C micro-kernels are unchecked)."""
import argparse
import sys

import numpy as np

from checks import linear_grads
from fastlenet import kernels


def close(name, got, want, case):
    tol = (1e-3 if got.dtype == np.float32 else 1e-9) * max(1.0, float(np.abs(want).max(initial=0)))
    if not np.allclose(got, want, rtol=1e-3, atol=tol):
        raise SystemExit(f"{name} differs from the reference for {case}: "
                         f"max |diff| {float(np.abs(got - want).max()):.3g}")


def one_case(k, ref, rng):
    # batches past one block of samples (16) exercise the dynamic schedule
    # 8 or more channels reach the Numba backend's flipped-conv dx (plan.DOTS_MIN_DX_C), 3x3
    # kernels with 8 or more channels in and out the Cython Winograd (plan.WINOGRAD_MIN_C),
    # square 5x5 ones with 16 or more its F(2x2, 5x5) (plan.WINOGRAD5_MIN_C)
    n, c, f = int(rng.choice([1, 2, 3, 5, 17, 40])), int(rng.choice([1, 2, 3, 4, 6, 16, 33])), int(rng.integers(1, 35))
    kh = int(rng.choice([1, 2, 3, 3, 5, 5]))
    kw = kh if rng.random() < 0.6 else int(rng.choice([1, 2, 3, 3, 5]))
    s, p = int(rng.choice([1, 1, 1, 2])), int(rng.integers(0, 3))
    h, w = int(rng.integers(kh, 40)), int(rng.integers(kw, 40))
    size, ps = int(rng.choice([2, 2, 3])), int(rng.choice([2, 2, 1]))
    oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    if oh < size or ow < size:
        return False
    dt = np.float32 if rng.random() < 0.8 else np.float64
    case = dict(n=n, c=c, h=h, w=w, f=f, kh=kh, kw=kw, s=s, p=p, size=size, ps=ps, dtype=np.dtype(dt).name)
    x = rng.standard_normal((n, c, h, w)).astype(dt)
    wt = rng.standard_normal((f, c, kh, kw)).astype(dt)
    b = rng.standard_normal(f).astype(dt)
    # fused path against the reference conv -> ReLU -> max pool
    y, arg = k.fast.conv2d_relu_maxpool_forward(x, wt, b, s, p, oh, ow, size, ps)
    z = ref.conv2d_forward(x, wt, b, s, p)
    r = np.maximum(z, 0)
    ry, rarg = ref.maxpool2d_forward(r, size, ps)
    close("fused y", y, ry, case)
    # two window values within rounding of each other may swap as the window's max: the
    # fused arg must pick a maximum (checked by value), and the reference gradient is
    # routed the way it chose (-1, a window whose max is <= 0, routes nothing either way)
    chosen = np.where(arg >= 0, arg, rarg)
    flat = r.reshape(n, f, -1)
    close("fused arg (its value)", np.take_along_axis(flat, chosen.reshape(n, f, -1), 2), ry.reshape(n, f, -1), case)
    dy = rng.standard_normal(y.shape).astype(dt)
    dz = ref.maxpool2d_backward(dy, chosen, r.shape, size, ps) * (z > 0)
    rdx, rdw, rdb = ref.conv2d_backward(dz, x, wt, s, p)
    dx, dw, db = k.fast.conv2d_relu_maxpool_backward(dy, arg, x, wt, s, p, oh, ow, size, ps, True)
    close("fused dx", dx, rdx, case)
    close("fused dw", dw, rdw, case)
    close("fused db", db, rdb, case)
    _, dw1, _ = k.fast.conv2d_relu_maxpool_backward(dy, arg, x, wt, s, p, oh, ow, size, ps, False)
    close("fused dw (no dx)", dw1, rdw, case)
    # plain convolution
    close("conv y", k.conv2d_forward(x, wt, b, s, p), z, case)
    g = rng.standard_normal(z.shape).astype(dt)
    for name, got, want in zip(("conv dx", "conv dw", "conv db"),
                               k.conv2d_backward(g, x, wt, s, p), ref.conv2d_backward(g, x, wt, s, p)):
        close(name, got, want, case)
    if k.fast is None:
        return True
    # fused conv -> ReLU (no pool); an output within rounding of 0 may fall on either side
    # of the kink (seed 1: the reference's 3e-8 is the kernel's 0), so the reference
    # gradient is masked where the kernel's own output passed it, as the kernel masks it
    yr = k.fast.conv2d_relu_forward(x, wt, b, s, p, oh, ow)
    close("conv relu y", yr, r, case)
    for name, got, want in zip(("conv relu dx", "conv relu dw", "conv relu db"),
                               k.fast.conv2d_relu_backward(g, yr, x, wt, s, p, True),
                               ref.conv2d_backward(g * (yr > 0), x, wt, s, p)):
        close(name, got, want, case)
    # dense products
    # rows past one block (32) exercise the dynamic schedule; D a multiple of 16 the direct dx
    m, d, u = int(rng.choice([1, 2, 5, 19, 33, 70])), int(rng.choice([3, 16, 33, 64, 69])), int(rng.integers(1, 40))
    xx, ww = rng.standard_normal((m, d)).astype(dt), rng.standard_normal((d, u)).astype(dt)
    bb, gy = rng.standard_normal(u).astype(dt), rng.standard_normal((m, u)).astype(dt)
    close("linear y", k.fast.linear_forward(xx, ww, bb, False), xx @ ww + bb, case)
    ldx, ldw, ldb = linear_grads(k.fast, gy, xx, ww)
    close("linear dx", ldx, gy @ ww.T, case)
    close("linear dw", ldw, xx.T @ gy, case)
    close("linear db", ldb, gy.sum(axis=0), case)
    yr = k.fast.linear_forward(xx, ww, bb, True)                  # fused Dense -> ReLU
    close("linear relu y", yr, np.maximum(xx @ ww + bb, 0), case)
    gr = gy * (yr > 0)
    rdx, rdw, rdb = linear_grads(k.fast, gy, xx, ww, yr)
    close("linear relu dx", rdx, gr @ ww.T, case)
    close("linear relu dw", rdw, xx.T @ gr, case)
    close("linear relu db", rdb, gr.sum(axis=0), case)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="cython", choices=["cython", "numba"])
    args = ap.parse_args(argv)
    k, ref = kernels.backend(args.backend), kernels.backend("numpy")
    rng = np.random.default_rng(args.seed)
    done = 0
    while done < args.cases:
        done += one_case(k, ref, rng)
    print(f"{done} random geometries: every {args.backend} kernel path matches the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
