"""ONNX export: every preset, run by onnxruntime and by onnx's reference
evaluator, gives fastlenet's logits (within 1e-4) on random and real inputs;
preprocessing (standardisation, 28->32 padding) is folded into the graph."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from fastlenet import data, export, models, optim, train  # noqa: E402


def trained(name, steps=3):
    """A preset after a few Adam steps (so batch-norm statistics are not the defaults)."""
    model = models.build(name, backend="numpy", seed=3)
    rng = np.random.default_rng(0)
    x = rng.random((32,) + model.input_shape).astype(np.float32)
    opt = optim.Adam(model.params, lr=1e-2)
    for _ in range(steps):
        opt.step(model.loss_and_grads(x, rng.integers(0, 10, 32))[1])
    return model


def run_both(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = sess.run(["logits"], {"images": x})[0]
    b = ReferenceEvaluator(str(path)).run(None, {"images": x})[0]
    return a, b


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_every_preset_round_trips(name, tmp_path):
    model = trained(name)
    path = tmp_path / f"{name}.onnx"
    export.to_onnx(model, path)
    for batch in (1, 7):                                  # the batch axis is dynamic
        x = np.random.default_rng(batch).random((batch,) + model.input_shape).astype(np.float32)
        want = model.forward(x)
        got_rt, got_ref = run_both(path, x)
        assert np.abs(got_rt - want).max() < 1e-4, np.abs(got_rt - want).max()
        assert np.abs(got_ref - want).max() < 1e-4, np.abs(got_ref - want).max()
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == export.OPSET and proto.ir_version == export.IR_VERSION


def test_checkpoint_export_folds_standardisation_and_padding(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--model", "lenet5-1998", "--standardize", "--epochs", "1", "--no-plots", "--quiet"]) == 0
    onnx_path = tmp_path / "m.onnx"
    assert export.main([str(out / "best.npz"), str(onnx_path)]) == 0
    assert "opset 17" in capsys.readouterr().out
    raw = data.read_idx(synthetic_idx / "t10k-images-idx3-ubyte.gz")[:20]
    images = data.to_float(raw)                           # (20, 1, 28, 28) in [0, 1], as stored
    from fastlenet import checkpoint
    from fastlenet.evaluate import prepare_inputs
    model, ckpt = checkpoint.load_model(out / "best.npz", backend="numpy")
    want = model.forward(prepare_inputs(images, ckpt.inference, model.input_shape))
    got_rt, got_ref = run_both(onnx_path, images)
    assert np.abs(got_rt - want).max() < 1e-4
    assert np.abs(got_ref - want).max() < 1e-4


def test_real_mnist_images(real_data, tmp_path):
    ds = data.load("mnist", data_dir=real_data, download_missing=False)
    model = trained("lenet5")
    path = tmp_path / "m.onnx"
    export.to_onnx(model, path)
    x = ds.x_test[:500]
    got_rt, got_ref = run_both(path, x)
    want = model.forward(x)
    assert np.abs(got_rt - want).max() < 1e-4 and np.abs(got_ref - want).max() < 1e-4


def test_bad_checkpoint_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    assert export.main([str(tmp_path / "x.npz"), str(tmp_path / "o.onnx")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_every_layer_type_exports_and_onnxruntime_agrees(tmp_path):
    """conv (uneven 'same' padding, stride 2), every pool, global average pooling,
    batch norm after a conv and after a dense layer, every activation, dropout."""
    ort = pytest.importorskip("onnxruntime")
    spec = {"input_shape": [3, 17, 16], "layers": [
        {"type": "conv2d", "filters": 8, "kernel_size": 4, "padding": "same"}, {"type": "batchnorm"},
        {"type": "leaky_relu", "alpha": 0.2}, {"type": "maxpool2d", "size": 3, "stride": 2},
        {"type": "conv2d", "filters": 12, "kernel_size": 3, "stride": 2, "padding": "same"}, {"type": "sigmoid"},
        {"type": "avgpool2d", "size": 2, "stride": 1}, {"type": "dropout", "rate": 0.2},
        {"type": "conv2d", "filters": 16, "kernel_size": [1, 2], "padding": [0, 1]}, {"type": "tanh"},
        {"type": "global_avgpool2d"}, {"type": "dense", "units": 20}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "dense", "units": 5}]}
    model = models.from_spec(spec, backend="numpy", seed=3)
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 17, 16), dtype=np.float32)
    model.forward_backward(x, np.arange(6) % 5)                 # batch-norm statistics move
    for name in model.buffers:
        model.buffers[name][...] = rng.random(model.buffers[name].shape) + 0.5
    export.to_onnx(model, tmp_path / "all.onnx", mean=[0.2, 0.3, 0.4], std=[0.5, 0.6, 0.7])
    session = ort.InferenceSession(str(tmp_path / "all.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x})[0]
    standardized = (x - np.array([0.2, 0.3, 0.4], np.float32)[:, None, None]) / np.array([0.5, 0.6, 0.7], np.float32)[:, None, None]
    np.testing.assert_allclose(got, model.forward(standardized), atol=1e-4, rtol=0)
