"""Optimizers against hand-written update formulas, in-place updates without
parameter-sized allocations, schedules and early stopping."""
import tracemalloc

import numpy as np
import pytest

from fastlenet import kernels, optim


def setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {"a.w": rng.standard_normal((4, 3)), "a.b": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(p.shape) for k, p in params.items()} for _ in range(5)]
    return params, grads


def run(opt_factory, params, grads):
    ids = {k: id(p) for k, p in params.items()}
    o = opt_factory(params)
    for g in grads:
        o.step(g)
    assert {k: id(p) for k, p in params.items()} == ids       # updated in place
    return params


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_formula(nesterov):
    params, grads = setup()
    ref = {k: p.copy() for k, p in params.items()}
    vel = {k: np.zeros_like(p) for k, p in ref.items()}
    lr, mu, wd = 0.1, 0.9, 0.01
    for g in grads:
        for k in ref:
            ge = g[k] + (wd * ref[k] if k.endswith(".w") else 0)
            vel[k] = mu * vel[k] + ge
            ref[k] = ref[k] - lr * (ge + mu * vel[k] if nesterov else vel[k])
    got = run(lambda p: optim.SGD(p, lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd), params, grads)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, err_msg=k)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_formula(decoupled):
    params, grads = setup(1)
    ref = {k: p.copy() for k, p in params.items()}
    m = {k: np.zeros_like(p) for k, p in ref.items()}
    v = {k: np.zeros_like(p) for k, p in ref.items()}
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.05
    for t, g in enumerate(grads, 1):
        for k in ref:
            ge = g[k]
            if k.endswith(".w"):
                if decoupled:
                    ref[k] = ref[k] * (1 - lr * wd)
                else:
                    ge = ge + wd * ref[k]
            m[k] = b1 * m[k] + (1 - b1) * ge
            v[k] = b2 * v[k] + (1 - b2) * ge * ge
            mhat, vhat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * mhat / (np.sqrt(vhat) + eps)
    got = run(lambda p: optim.Adam(p, lr=lr, weight_decay=wd, decoupled=decoupled), params, grads)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, err_msg=k)


def tiled(arrays, dtype):
    """The same arrays as views of one declared flat buffer (a FlatArrays, like a model's params)."""
    from fastlenet.flat import flat_views
    _, out = flat_views({k: a.shape for k, a in arrays.items()}, dtype)
    for k, a in arrays.items():
        out[k][...] = a
    return out


@pytest.mark.skipif("cython" not in kernels.available(), reason="the cython backend is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", ["none", "l2", "decoupled"])
def test_compiled_adam_equals_numpy_adam(decay, dtype):
    params, grads = setup(2)
    params["big.w"] = np.random.default_rng(3).standard_normal((300, 70))   # several parallel chunks
    grads = [dict(g, **{"big.w": np.random.default_rng(i).standard_normal((300, 70))})
             for i, g in enumerate(grads)]
    kwargs = dict(lr=1e-2, weight_decay=0.0 if decay == "none" else 0.05, decoupled=decay == "decoupled")
    results = {}
    for backend in ("numpy", "cython"):
        p = tiled(params, dtype)
        o = optim.Adam(p, backend=backend, **kwargs)
        assert (o._update is not None) == (backend == "cython")    # the compiled pass really runs
        for g in grads:
            o.step(tiled(g, dtype) if backend == "cython" else {k: a.astype(dtype) for k, a in g.items()})
        results[backend] = (p, o)
    (p_ref, o_ref), (p_got, o_got) = results["numpy"], results["cython"]
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for k in params:
        np.testing.assert_allclose(p_got[k], p_ref[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
        np.testing.assert_allclose(o_got.m[k], o_ref.m[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
        np.testing.assert_allclose(o_got.v[k], o_ref.v[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)


def test_flat_arrays_declare_their_buffer_and_stay_fixed():
    from fastlenet.flat import FlatArrays, flat_views
    flat, views = flat_views({"a.w": (2, 3), "a.b": (3,)}, np.float32)
    assert isinstance(views, FlatArrays) and views.buffer is flat and views.names == ("a.w", "a.b")
    views["a.b"][...] = 7
    np.testing.assert_array_equal(flat[6:], 7)
    with pytest.raises(TypeError, match="fixed"):
        views["a.b"] = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="fixed"):
        views.pop("a.w")
    assert optim.flat_views is flat_views
    plain = optim.Adam(dict(views), lr=1e-3, backend="numpy")      # a plain dict: no buffer declared
    assert plain._param_buffer is None and optim.Adam(views, backend="numpy")._param_buffer is flat


def test_adamw_is_decoupled_adam():
    """With a zero gradient AdamW only shrinks the weight, p (1 - lr wd); Adam + L2 takes a
    full Adam step on the gradient wd p (its normalised size is lr)."""
    w, b = np.ones(3), np.ones(2)
    o = optim.AdamW({"x.w": w, "x.b": b}, lr=1e-3, weight_decay=0.1)
    o.step({"x.w": np.zeros(3), "x.b": np.zeros(2)})
    np.testing.assert_allclose(w, 1 - 1e-3 * 0.1)
    np.testing.assert_array_equal(b, 1.0)                   # biases are not decayed
    w2 = np.ones(3)
    optim.Adam({"x.w": w2}, lr=1e-3, weight_decay=0.1).step({"x.w": np.zeros(3)})
    np.testing.assert_allclose(w2, 1 - 1e-3, rtol=1e-6)


def test_adam_per_tensor_path_equals_the_flat_path():
    """Parameters of two dtypes cannot share one flat buffer: the per-tensor path runs,
    and gives the flat path's numbers."""
    rng = np.random.default_rng(0)
    a32, b64 = rng.standard_normal(5).astype(np.float32), rng.standard_normal(4)
    mixed = {"l.w": a32.copy(), "l.b": b64.copy()}
    per = optim.Adam(mixed, lr=1e-2, weight_decay=0.01, backend="numpy")
    assert not per._flat
    ref_w = optim.Adam({"l.w": a32.copy().astype(np.float64)}, lr=1e-2, weight_decay=0.01, backend="numpy")
    ref_b = optim.Adam({"l.b": b64.copy()}, lr=1e-2, weight_decay=0.01, backend="numpy")
    for step in range(3):
        g = {"l.w": rng.standard_normal(5).astype(np.float32), "l.b": rng.standard_normal(4)}
        per.step(g)
        ref_w.step({"l.w": g["l.w"].astype(np.float64)})
        ref_b.step({"l.b": g["l.b"]})
    np.testing.assert_allclose(mixed["l.w"], ref_w.params["l.w"], rtol=1e-5)
    np.testing.assert_allclose(mixed["l.b"], ref_b.params["l.b"], rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    lambda p: optim.AdamW(p, lr=1e-3),
], ids=["sgd", "adam", "adamw"])
def test_step_allocates_nothing_parameter_sized(make):
    params = {"big.w": np.zeros((500, 400), np.float32), "big.b": np.zeros(400, np.float32)}
    grads = {k: np.ones_like(p) for k, p in params.items()}
    o = make(params)
    o.step(grads)                          # warm-up
    tracemalloc.start()
    o.step(grads)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < params["big.w"].nbytes // 10, peak


def test_optimizer_state_round_trip():
    params, grads = setup()
    a = optim.Adam(params, lr=1e-2)
    a.step(grads[0])
    state = {k: np.array(v, copy=True) for k, v in a.state_dict().items()}
    b = optim.Adam({k: p.copy() for k, p in params.items()}, lr=5.0)
    b.load_state_dict(state)
    assert b.steps == 1 and b.lr == 1e-2
    np.testing.assert_array_equal(b.m["a.w"], a.m["a.w"])


def test_bad_learning_rate_is_rejected():
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        optim.SGD({"p": np.zeros(2)}, lr=0)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD({"p": np.zeros(2)}, lr=0.1, nesterov=True)


def test_schedules():
    assert [optim.StepLR(1.0, 2, 0.5).lr(e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert [optim.ListLR([3, 2, 1]).lr(e) for e in range(5)] == [3, 2, 1, 1, 1]
    cos = optim.CosineLR(1.0, 4, min_lr=0.0)
    assert cos.lr(0) == 1.0 and abs(cos.lr(2) - 0.5) < 1e-12 and 0 < cos.lr(3) < 0.15
    plateau = optim.ReduceLROnPlateau(1.0, factor=0.2, patience=2, min_lr=0.05)
    rates = []
    for metric in [5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]:
        plateau.observe(metric)
        rates.append(plateau.lr(0))
    assert rates[:4] == [1.0, 1.0, 1.0, 1.0] and rates[4] == pytest.approx(0.2)
    assert rates[-1] == pytest.approx(0.05)             # floored at min_lr


def test_early_stopping_counts_epochs_without_improvement():
    es = optim.EarlyStopping(patience=2, monitor="val_loss", min_delta=0.01)
    stops = [es.update(epoch, loss) for epoch, loss in enumerate([1.0, 0.5, 0.495, 0.6])]
    assert stops == [False, False, False, True]
    assert es.best_epoch == 1 and es.best == 0.5             # 0.495 is within min_delta
    acc = optim.EarlyStopping(patience=1, monitor="val_accuracy")
    assert acc.mode == "max" and not acc.update(0, 0.5) and acc.update(1, 0.4)
    with pytest.raises(ValueError, match="monitor"):
        optim.BestTracker("accuracy")
