"""A network that is not a preset, through the whole toolchain: fit, checkpoint,
reload, ONNX, predict, and the command line on a 3-channel IDX folder using the
model file its own run directory holds."""
import json

import numpy as np
import pytest

from fastlenet import checkpoint, data, models, predict, train
from fastlenet.trainer import fit
from test_spec import CUSTOM

NET = CUSTOM       # the example: conv+BN+ReLU+max pool, conv+ReLU+avg pool, dropout, dense+tanh, dense


def coloured_squares(n, seed=0):
    """Ten classes: a square of a class-specific colour and place on noise, (N, 3, 32, 32) uint8."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 3, 32, 32))
    for i, c in enumerate(y):
        r, q = divmod(int(c), 5)
        x[i, c % 3, 4 + 14 * r: 14 + 14 * r, 1 + 6 * q: 7 + 6 * q] = 250
    return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("fit") / "run"
    x, y = coloured_squares(300)
    model = models.from_spec(NET, backend="cython" if _has_cython() else "numpy", seed=1)
    history = fit(model, x, y, epochs=3, batch_size=50, validation_data=coloured_squares(100, seed=1),
                  run_dir=run)
    return model, run, history


def _has_cython():
    try:
        import fastlenet.kernels._cy_conv  # noqa: F401
        return True
    except ImportError:
        return False


def test_it_trains_with_fit(trained):
    model, run, history = trained
    assert len(history) == 3 and history["train_loss"][-1] < history["train_loss"][0]
    assert (run / "last.npz").is_file() and (run / "best.npz").is_file()


def test_it_reloads_from_its_checkpoint_with_identical_logits(trained):
    model, run, _ = trained
    again, ckpt = checkpoint.load_model(run / "last.npz", backend=model.backend.name)
    assert again.to_spec() == model.to_spec() == models.from_spec(NET).to_spec()
    x = coloured_squares(16, seed=3)[0].astype(np.float32) / 255
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    assert ckpt.inference.image_size == (32, 32)


def test_it_exports_to_onnx_and_onnxruntime_agrees(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from fastlenet import export
    model, run, _ = trained
    export.export_checkpoint(run / "last.npz", tmp_path / "net.onnx")
    x = coloured_squares(16, seed=4)[0].astype(np.float32) / 255
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x})[0]
    np.testing.assert_allclose(got, model.forward(x), atol=1e-4, rtol=0)


def test_it_predicts_a_colour_array(trained, tmp_path, capsys):
    _, run, _ = trained
    x, y = coloured_squares(1, seed=5)
    np.save(tmp_path / "one.npy", x[0])                          # (3, 32, 32) uint8
    assert predict.main([str(run / "last.npz"), str(tmp_path / "one.npy"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["predictions"]
    assert len(rows) == 1 and rows[0]["images"] == 1 and len(rows[0]["top"]) == 3 and not doc["notes"]
    assert rows[0]["top"][0]["class"] == str(y[0])          # the squares are easy: it learned them


def write_rgb_idx(folder, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 200), ("t10k", 60)):
        x, y = coloured_squares(n, seed=seed + (split == "t10k"))
        data.write_idx(folder / f"{split}-images-idx3-ubyte", x)
        data.write_idx(folder / f"{split}-labels-idx1-ubyte", y.astype(np.uint8))
    return folder


def test_the_cli_trains_it_on_a_3_channel_idx_folder_and_again_from_its_run(tmp_path, capsys):
    folder = write_rgb_idx(tmp_path / "rgb")
    ds = data.load("idx", data_dir=folder)
    assert ds.x_train.shape == (200, 3, 32, 32) and ds.stored_image_size() == (32, 32)
    (tmp_path / "net.json").write_text(json.dumps(NET))
    common = ["--dataset", "idx", "--data-dir", str(folder), "--epochs", "1", "--batch-size", "50",
              "--no-plots", "--quiet", "--standardize"]
    assert train.main(common + ["--model", str(tmp_path / "net.json"), "--out", str(tmp_path / "a")]) == 0
    stored = json.loads((tmp_path / "a" / "model.json").read_text())
    assert stored == models.from_spec(NET).to_spec()
    meta = checkpoint.read(tmp_path / "a" / "best.npz").meta
    assert len(meta["mean"]) == 3 and meta["image_size"] == [32, 32]          # per channel, never padded
    assert train.main(common + ["--model", str(tmp_path / "a" / "model.json"), "--out", str(tmp_path / "b")]) == 0
    first = checkpoint.read(tmp_path / "a" / "best.npz").params
    second = checkpoint.read(tmp_path / "b" / "best.npz").params
    for k in first:                                  # same file, same seed: the same run
        np.testing.assert_array_equal(first[k], second[k])


def test_a_model_that_does_not_take_the_data_is_refused_before_the_run_exists(tmp_path, capsys):
    folder = write_rgb_idx(tmp_path / "rgb")
    code = train.main(["--dataset", "idx", "--data-dir", str(folder), "--model", "lenet5",
                       "--out", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--model lenet5 takes (1, 28, 28) (C, H, W) inputs but the data is (3, 32, 32)" in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_bad_model_file_is_one_line_naming_layer_and_field(tmp_path, capsys):
    bad = json.loads(json.dumps(NET))
    bad["layers"][4]["kernel_size"] = 20
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code = train.main(["--dataset", "idx", "--data-dir", str(tmp_path), "--model", str(tmp_path / "bad.json"),
                       "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "layer 4 (conv2d): field 'kernel_size' 20x20 is larger than its padded input 18x18" in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_run_resumes_from_its_own_model_file(tmp_path, capsys):
    folder = write_rgb_idx(tmp_path / "rgb")
    net = tmp_path / "net.json"
    net.write_text(json.dumps(NET))
    common = ["--dataset", "idx", "--data-dir", str(folder), "--batch-size", "50", "--no-plots", "--quiet"]
    assert train.main(common + ["--model", str(net), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    net.unlink()                                              # the run needs only its own folder
    assert train.main(["--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 2


def test_it_predicts_pictures_in_the_models_colours(trained, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    _, run, _ = trained
    x, y = coloured_squares(1, seed=6)
    Image.fromarray(np.moveaxis(x[0], 0, 2)).save(tmp_path / "rgb.png")              # (32, 32, 3) RGB
    Image.fromarray(x[0].mean(axis=0).astype(np.uint8)).save(tmp_path / "grey.png")    # grey: repeated to RGB
    assert predict.main([str(run / "last.npz"), str(tmp_path / "rgb.png"), str(tmp_path / "grey.png"),
                         "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_file = {row["file"]: row for row in doc["predictions"]}
    assert by_file[str(tmp_path / "rgb.png")]["top"][0]["class"] == str(y[0])
    assert any("repeated to the model's 3 colour channels" in note for note in doc["notes"])
