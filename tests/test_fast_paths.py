"""The declared fast paths (kernels._fast.FastPaths) of both compiled backends against
the reference formulas, and the debug mode that checks every call against the contract."""
import subprocess
import sys

import numpy as np
import pytest

from checks import assert_close
from fastlenet import kernels
from fastlenet.kernels._fast import FastPathError, checked_fast_paths
from fastlenet.losses import softmax_cross_entropy

FAST = [name for name in kernels.available() if kernels.backend(name).fast is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FAST)
def test_adam_update_equals_the_formula(name, dtype):
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal(1000).astype(dtype) for _ in range(4))
    v = np.abs(v)
    want_m = 0.9 * m + 0.1 * g
    want_v = 0.999 * v + 0.001 * g * g
    want_p = p - 0.01 * want_m / (np.sqrt(want_v) / 0.5 + 1e-8)
    kernels.backend(name).fast.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 0.5, 1e-8)
    assert_close("m", m, want_m)
    assert_close("v", v, want_v)
    assert_close("p", p, want_p)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("name", FAST)
def test_softmax_cross_entropy_equals_the_reference(name, smoothing):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((33, 10)) * 5).astype(np.float32)
    labels = rng.integers(0, 10, 33)
    want_loss, want_grad = softmax_cross_entropy(logits, labels, smoothing)
    out = np.full_like(logits, np.nan)
    loss, grad = kernels.backend(name).fast.softmax_cross_entropy(logits, labels.astype(np.int64), smoothing,
                                                                  out=out)
    assert grad is out
    assert abs(loss - want_loss) < 1e-6
    assert_close("dlogits", grad, want_grad)
    bad = labels.astype(np.int64).copy()
    bad[3] = 10
    assert kernels.backend(name).fast.softmax_cross_entropy(logits, bad, smoothing) == (None, None)


@pytest.mark.parametrize("name", FAST)
def test_checked_fast_paths_refuse_calls_outside_the_contract(name):
    fast = checked_fast_paths(kernels.backend(name).fast)
    x, w, b = np.zeros((4, 3), np.float32), np.zeros((3, 2), np.float32), np.zeros(2, np.float32)
    assert fast.linear_forward(x, w, b, False).shape == (4, 2)
    with pytest.raises(FastPathError, match="w has dtype float64"):
        fast.linear_forward(x, w.astype(np.float64), b, False)
    with pytest.raises(FastPathError, match="C-contiguous"):
        fast.linear_forward(np.zeros((3, 4), np.float32).T, w, b, False)
    with pytest.raises(FastPathError, match="out has shape"):
        fast.linear_forward(x, w, b, False, out=np.zeros((4, 3), np.float32))
    with pytest.raises(FastPathError, match="labels must be int64"):
        fast.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.zeros(2, np.int32), 0.0)


def test_a_network_trains_with_every_fast_path_call_checked():
    """FASTLENET_CHECK_FAST_PATHS=1: the layers' calls all satisfy the contract."""
    code = ("import numpy as np; from fastlenet import kernels, models, optim\n"
            "for name in [n for n in kernels.available() if n != 'numpy']:\n"
            "    k = kernels.backend(name)\n"
            "    assert k.fast.linear_forward.__wrapped__ is not None\n"
            "    stage = {'format': 'fastlenet-model', 'version': 1, 'name': 'stage', 'input_shape': [1, 28, 28],\n"
            "             'num_classes': 10, 'layers': [{'type': 'conv2d', 'filters': 4, 'kernel_size': 3},\n"
            "             {'type': 'relu'}, {'type': 'flatten'}, {'type': 'dense', 'units': 10}]}\n"
            "    bn_stage = dict(stage, layers=stage['layers'][:1] + [{'type': 'batchnorm'}] + stage['layers'][1:])\n"
            "    for preset in ('lenet5', 'lenet5-bn', stage, bn_stage):\n"
            "        m = (models.from_spec(preset, backend=name) if isinstance(preset, dict) else\n"
            "             models.build(preset, backend=name))\n"
            "        o = optim.Adam(m.params, backend=name)\n"
            "        x = np.random.default_rng(0).random((20, 1, 28, 28)).astype(np.float32)\n"
            "        o.step(m.loss_and_grads(x, np.arange(20) % 10)[1])\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "FASTLENET_CHECK_FAST_PATHS": "1"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
