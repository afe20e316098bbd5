"""Tier 2 and 3 for whole networks: finite differences through every preset,
every compiled backend equal to the NumPy-reference network (logits, loss,
gradients, and 30-step SGD/Adam loss trajectories), a training smoke test and
determinism."""
import numpy as np
import pytest

from checks import COMPILED, assert_close, numerical_grad
from fastlenet import models, optim

PRESETS = sorted(models.PRESETS)


def batch(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + model.input_shape).astype(model.dtype)
    return x, rng.integers(0, 10, n)


def test_lenet5_summary_counts_61706_parameters():
    model = models.build("lenet5", backend="numpy")
    text = model.summary()
    assert model.num_params() == 61706
    assert "61,706" in text
    sizes = [p.size for k, p in model.params.items() if k.endswith(".w") or k.endswith(".b")]
    assert sizes == [150, 6, 2400, 16, 48000, 120, 10080, 84, 840, 10]


@pytest.mark.parametrize("name", PRESETS)
def test_whole_network_gradient_by_finite_differences(name):
    model = models.build(name, backend="numpy", dtype=np.float64, seed=1)
    x, y = batch(model, n=4)
    loss = lambda: model.loss_and_grads(x, y)[0]
    _, grads = model.loss_and_grads(x, y)
    grads = {k: g.copy() for k, g in grads.items()}
    rng = np.random.default_rng(2)
    for key, p in model.params.items():
        idx = rng.choice(p.size, size=min(6, p.size), replace=False)
        fd = numerical_grad(loss, p, eps=1e-6, indices=idx).reshape(-1)[idx]
        assert_close(f"{name} {key}", grads[key].reshape(-1)[idx], fd, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_network_equals_reference_network(name, backend):
    ref = models.build(name, backend="numpy", seed=3)
    net = models.build(name, backend=backend, seed=3)
    for k in ref.params:
        np.testing.assert_array_equal(net.params[k], ref.params[k], err_msg=f"init {k}")
    x, y = batch(ref, n=8)
    assert_close("logits", net.forward(x), ref.forward(x))
    loss_ref, g_ref = ref.loss_and_grads(x, y)
    loss_net, g_net = net.loss_and_grads(x, y)
    assert abs(loss_net - loss_ref) <= 1e-5 * max(1.0, abs(loss_ref)), (loss_net, loss_ref)
    # absolute tolerance from the largest gradient of the network: some gradients
    # (a conv bias before batch norm) are exactly zero in theory and pure rounding here
    scale = max(float(np.abs(g).max()) for g in g_ref.values())
    for k in g_ref:
        assert_close(f"grad {k}", g_net[k], g_ref[k], rtol=1e-3, atol=1e-5 * scale)


def trajectory(name, backend, opt, steps=30):
    model = models.build(name, backend=backend, seed=4)
    x, y = synthetic(64, seed=5)             # learnable data: a smooth, non-chaotic descent
    x = shaped_for(model, x)
    o = optim.SGD(model.params, lr=0.01, momentum=0.9) if opt == "sgd" else optim.Adam(model.params, lr=1e-3,
                                                                                         backend=backend)
    losses = []
    for _ in range(steps):
        loss, grads = model.loss_and_grads(x, y)
        o.step(grads)
        losses.append(loss)
    return np.array(losses)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("backend", COMPILED)
def test_loss_trajectory_tracks_reference(backend, name, opt):
    ref = trajectory(name, "numpy", opt)
    got = trajectory(name, backend, opt)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)
    assert rel.max() < 1e-3, f"step {rel.argmax()}: {got[rel.argmax()]} vs {ref[rel.argmax()]} (rel {rel.max():.2e})"


def shaped_for(model, x):
    """28x28 grey images as the model's input: zero-padded to 32x32, the grey copied to
    every channel."""
    c, h, _ = model.input_shape
    if h == 32:
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, c, axis=1))


def synthetic(n=400, seed=0):
    """Ten classes: a bright 6x6 square at a class-specific spot on a noisy 28x28 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 1, 28, 28)).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        r, q = divmod(int(c), 5)
        x[i, 0, 4 + 12 * r : 10 + 12 * r, 1 + 5 * q : 7 + 5 * q] += 1.0
    return x, y


@pytest.mark.parametrize("name", PRESETS)
def test_training_on_synthetic_data_learns(name):
    model = models.build(name, seed=0)
    x, y = synthetic()
    x = shaped_for(model, x)
    o = optim.Adam(model.params, lr=1e-2 if name == "lenet5-classic" else 3e-3)  # sigmoid learns slowly
    before = (model.predict(x) == y).mean()
    first = None
    for epoch in range(16 if name == "lenet5-classic" else 6):  # sigmoid starts on a plateau
        for i in range(0, len(x), 50):
            loss, grads = model.loss_and_grads(x[i:i + 50], y[i:i + 50])
            first = loss if first is None else first
            o.step(grads)
    acc = (model.predict(x) == y).mean()
    assert loss < first and acc > 0.8, (name, before, acc, first, loss)


@pytest.mark.parametrize("backend", ["numpy", *COMPILED])
def test_same_seed_same_backend_gives_identical_parameters(backend):
    def run():
        model = models.build("lenet5-bn", backend=backend, seed=7)
        x, y = batch(model, n=32)
        o = optim.Adam(model.params, lr=1e-3)
        for _ in range(5):
            o.step(model.loss_and_grads(x, y)[1])
        return model.params
    a, b = run(), run()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name", PRESETS)
def test_parameters_and_gradients_live_in_one_flat_buffer_each(name):
    model = models.build(name, backend="numpy", seed=1)
    fresh = models.build(name, backend="numpy", seed=1, fused=False)
    assert model.params.buffer is model.flat_params and model.grads.buffer is model.flat_grads
    offset = 0
    for name, p in model.params.items():            # views end to end, in key order
        assert p.base is model.flat_params and np.shares_memory(p, model.flat_params[offset:offset + p.size])
        offset += p.size
    assert offset == model.flat_params.size
    assert model.flat_params.size == model.num_params()
    for k in model.params:                      # packing kept the seeded values
        np.testing.assert_array_equal(model.params[k], fresh.params[k], err_msg=k)
    x, y = batch(model, n=8)
    model.loss_and_grads(x, y)
    assert np.count_nonzero(model.flat_grads) > model.flat_grads.size // 2   # layers wrote into it
    layer_grads = [a for layer in model.layers for a in layer.grads.values()]
    assert all(a.base is model.flat_grads for a in layer_grads)


def test_build_rejects_unknown_names_and_overrides():
    with pytest.raises(ValueError, match="unknown model 'lenet6'"):
        models.build("lenet6")
    with pytest.raises(ValueError, match="activation must be one of"):
        models.build("lenet5", activation="gelu")
    with pytest.raises(ValueError, match="pool must be one of"):
        models.build("lenet5", pool="min")


def test_forward_rejects_wrong_input_shape():
    model = models.build("lenet5", backend="numpy")
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 1, 28, 28\)"):
        model.forward(np.zeros((2, 1, 32, 32), np.float32))


def test_overrides_change_layers():
    m = models.build("lenet5", activation="tanh", pool="avg", backend="numpy")
    kinds = [type(l).__name__ for l in m.layers]
    assert "Tanh" in kinds and "AvgPool2D" in kinds and "ReLU" not in kinds
