"""Shared test helpers: dtype-keyed tolerances, a comparison that explains
itself, a central finite-difference gradient checker, and the campaigns' outcome table."""
from __future__ import annotations

import numpy as np

from fastlenet import kernels
from fastlenet.kernels import reference as ref

#: (rtol, atol) keyed by dtype; atol is scaled by the reference's magnitude.
TOLERANCE = {
    np.dtype(np.float32): (2e-4, 2e-5),
    np.dtype(np.float64): (1e-9, 1e-11),
}

COMPILED = ("numba", "cython")


def assert_close(name, actual, expected, dtype=None, rtol=None, atol=None):
    """Compare with dtype-keyed tolerances (NaN and Inf only where expected has them); on
    failure name the tensor, the max difference and the first mismatching index."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    dt = np.dtype(dtype or expected.dtype)
    if expected.dtype.kind == "f" and not np.isfinite(expected).all():
        # NaN and Inf exactly where expected has them (an Inf would also make the scaled
        # tolerance below infinite), then the finite values
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{name}: NaN in different places"
        inf = np.isinf(expected)
        assert np.array_equal(actual[inf], expected[inf]), f"{name}: Inf in different places or signs"
        finite = np.isfinite(expected)
        actual, expected = actual[finite], expected[finite]
    r, a = TOLERANCE.get(dt, TOLERANCE[np.dtype(np.float64)])
    rtol = r if rtol is None else rtol
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    atol = a * scale if atol is None else atol
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = diff > atol + rtol * np.abs(expected)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: max |diff| {diff.max():.3e} (rtol {rtol:g}, atol {atol:.1e}); "
            f"{int(bad.sum())} of {bad.size} mismatch, first at {first}: "
            f"got {actual[first]!r}, expected {expected[first]!r}"
        )


def numerical_grad(f, x, eps=1e-6, indices=None):
    """Central differences of scalar f() w.r.t. x (modified in place and restored).
    ``indices``: flat indices to probe (default: all)."""
    flat = x.reshape(-1)
    idx = range(flat.size) if indices is None else indices
    grad = np.zeros(flat.size)
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad.reshape(x.shape)


def backend(name):
    return kernels.backend(name)


def linear_grads(lin, dy, x, w, y=None, need_dx=True):
    """(dx | None, dW, db) from a backend's dense fast path (``Backend.fast``), which
    writes dW and db into arrays it is given (here NaN-filled: every element must be
    written).  ``y``: the ReLU'd forward output for the fused Dense -> ReLU, or None."""
    dw = np.full(w.shape, np.nan, w.dtype)
    db = np.full(w.shape[1], np.nan, w.dtype)
    dx = lin.linear_backward(dy, x, w, dy if y is None else y, y is not None, need_dx, dw, db)
    return dx, dw, db


def print_outcomes(outcomes, failures: int, seed: int) -> int:
    """A campaign's table, (group, outcome) -> count, and its exit status (1 on any failure)."""
    width = max([len(o) for _, o in outcomes] + [8])
    for (group, outcome), n in sorted(outcomes.items()):
        print(f"  {group:<11} {outcome:<{width}} {n}")
    print(f"unexpected: {failures} (seed {seed})")
    return 1 if failures else 0


def assert_same_step(a, b, x, y) -> None:
    """Models ``a`` and ``b`` (the same weights) give the same loss and gradients on (x, y)."""
    la, ga = a.loss_and_grads(x, y)
    lb, gb = b.loss_and_grads(x, y)
    assert abs(la - lb) < 1e-5, (la, lb)
    assert ga.keys() == gb.keys()
    for key in ga:
        assert_close(key, ga[key], gb[key])


def reference_conv_and_grads(x, w, b, s, p, pool, rng):
    """(a random output gradient, the reference's (y, dx, dw, db) for it): plain, followed by a
    ReLU (pool "relu"), or fused with ReLU and the max pool (y and its gradient then pooled)."""
    z = ref.conv2d_forward(x, w, b, s, p)
    if pool is None or pool == "relu":
        grad = rng.standard_normal(z.shape).astype(x.dtype)
        if pool == "relu":
            return grad, (np.maximum(z, 0),) + tuple(ref.conv2d_backward(grad * (z > 0), x, w, s, p))
        return grad, (z,) + tuple(ref.conv2d_backward(grad, x, w, s, p))
    r = np.maximum(z, 0)
    y, arg = ref.maxpool2d_forward(r, *pool)
    grad = rng.standard_normal(y.shape).astype(x.dtype)
    dz = ref.maxpool2d_backward(grad, arg, r.shape, *pool) * (z > 0)
    return grad, (y,) + tuple(ref.conv2d_backward(dz, x, w, s, p))
