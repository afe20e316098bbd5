"""Labels and geometry read as what they are: float labels only when whole, labels
that are not 0..K-1 remapped with the original values kept as class names (and said),
the stored image size recorded in every checkpoint and used by predict, evaluate and
export, and a --data-dir that does not hold the dataset named instead of skipped."""
import json

import numpy as np
import pytest

from fastlenet import checkpoint, data, evaluate, predict, train


def write_idx_set(folder, y_train, y_test, side=28, label_dtype=np.uint8, seed=0):
    """Images with a class-dependent bright square; labels as given."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    values = sorted(set(np.unique(y_train)) | set(np.unique(y_test)))
    for split, y in (("train", y_train), ("t10k", y_test)):
        x = rng.integers(0, 60, (len(y), side, side)).astype(np.uint8)
        for i, v in enumerate(y):
            k = values.index(v) if v in values else 0
            r, q = divmod(k, 4)
            x[i, 2 + 6 * r: 7 + 6 * r, 2 + 6 * q: 7 + 6 * q] = 250
        data.write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        data.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.asarray(y).astype(label_dtype))
    return folder


@pytest.mark.parametrize("bad,shown", [(0.7, "0.7"), (np.nan, "nan")])
def test_non_whole_float_labels_are_refused(tmp_path, bad, shown):
    y = np.arange(40) % 4
    folder = write_idx_set(tmp_path / "d", y.astype(np.float32), y.astype(np.float32), label_dtype=np.float32)
    labels = y.astype(np.float32)
    labels[5] = bad
    data.write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(data.IDXError, match=f"train labels must be whole numbers: 1 of 40 are not .e.g. {shown}"):
        data.load("idx", data_dir=folder)


def test_whole_float_labels_are_accepted(tmp_path):
    y = (np.arange(40) % 4).astype(np.float64)
    ds = data.load("idx", data_dir=write_idx_set(tmp_path / "d", y, y, label_dtype=np.float64))
    assert ds.y_train.dtype == np.int64 and ds.class_names == ("0", "1", "2", "3")


def test_labels_that_are_not_0_to_k_minus_1_are_remapped_and_named(tmp_path):
    y = np.array(list(range(10)) + [200] * 2, np.uint8).repeat(8)
    ds = data.load("idx", data_dir=write_idx_set(tmp_path / "d", y, y[::2]))
    assert ds.num_classes == 11 and ds.class_names[-1] == "200"
    assert ds.y_train.max() == 10 and set(np.unique(ds.y_train)) == set(range(11))
    assert "not 0..10 but {0, 1, 2" in ds.notes[0] and "200}" in ds.notes[0]


def test_a_remapped_run_predicts_the_original_label_values(tmp_path, capsys):
    y = np.array([3, 7, 200], np.uint8).repeat(60)
    folder = write_idx_set(tmp_path / "d", y, y[::3])
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(folder), "--out", str(out), "--epochs", "3",
                       "--batch-size", "32", "--no-plots", "--quiet", "--backend", "numpy"]) == 0
    captured = capsys.readouterr()
    assert "warning: the labels are not 0..2 but {3, 7, 200}" in captured.err
    model, ckpt = checkpoint.load_model(out / "best.npz")
    assert model.output_shape == (3,) and ckpt.inference.class_names == ("3", "7", "200")
    x = data.read_idx(folder / "t10k-images-idx3-ubyte.gz")
    np.save(tmp_path / "x.npy", x[[0, 20, 40]])              # one of each class
    assert predict.main([str(out / "best.npz"), str(tmp_path / "x.npy"), "--top", "1"]) == 0
    tops = [line.split(": ")[1].split(" ")[0] for line in capsys.readouterr().out.splitlines()]
    assert tops == ["3", "7", "200"]
    assert evaluate.main([str(out / "best.npz"), "--dataset", "idx", "--data-dir", str(folder)]) == 0
    # a test set with a class the model never saw is named, not scored against the wrong output
    write_idx_set(tmp_path / "other", y, np.array([3, 7, 9], np.uint8).repeat(4))
    assert evaluate.main([str(out / "best.npz"), "--dataset", "idx", "--data-dir", str(tmp_path / "other")]) == 2
    assert "include class 9, which the model was not trained on" in capsys.readouterr().err


def test_too_many_classes_are_refused(tmp_path):
    y = np.arange(1200, dtype=np.int32)
    with pytest.raises(data.IDXError, match="1200 distinct values, more than the 1000"):
        data.load("idx", data_dir=write_idx_set(tmp_path / "d", y, y[:10], label_dtype=np.int32))


@pytest.fixture(scope="module")
def native32_run(tmp_path_factory):
    """lenet5-1998 trained on native 32x32 images (no padding)."""
    root = tmp_path_factory.mktemp("native32")
    folder = write_idx_set(root / "d", np.arange(160) % 4, np.arange(40) % 4, side=32)
    out = root / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(folder), "--model", "lenet5-1998", "--out", str(out),
                       "--epochs", "1", "--batch-size", "32", "--no-plots", "--quiet", "--backend", "numpy"]) == 0
    return folder, out


def test_the_stored_image_size_is_recorded_and_used(native32_run, tmp_path, capsys):
    folder, out = native32_run
    model, ckpt = checkpoint.load_model(out / "best.npz")
    assert ckpt.meta["image_size"] == [32, 32] and ckpt.inference.image_size == (32, 32)
    x = data.read_idx(folder / "t10k-images-idx3-ubyte.gz")[:2]
    np.save(tmp_path / "x.npy", x)
    assert predict.main([str(out / "best.npz"), str(tmp_path / "x.npy")]) == 0
    assert "resized" not in capsys.readouterr().out               # 32x32 taken as it is, not as 28 + padding
    np.save(tmp_path / "small.npy", x[:, 2:30, 2:30])
    assert predict.main([str(out / "best.npz"), str(tmp_path / "small.npy")]) == 0
    assert "resized 28x28 to 32x32" in capsys.readouterr().out


def test_evaluate_refuses_images_of_another_size(native32_run, synthetic_idx, capsys):
    _, out = native32_run
    assert evaluate.main([str(out / "best.npz"), "--dataset", "idx", "--data-dir", str(synthetic_idx)]) == 2
    err = capsys.readouterr().err
    assert "trained on 32x32 images; these are 28x28" in err or "not trained on" in err


def test_export_of_a_native_32_model_does_not_pad(native32_run, tmp_path):
    pytest.importorskip("onnx")
    from fastlenet import export
    _, out = native32_run
    _, proto = export.export_checkpoint(out / "best.npz", tmp_path / "m.onnx")
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [1, 32, 32]
    assert not any(n.op_type == "Pad" for n in proto.graph.node)


def test_a_data_dir_without_the_dataset_is_named_not_skipped(real_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTLENET_DATA", str(real_data))         # would have held mnist
    with pytest.raises(data.DatasetNotFound, match=f"--data-dir {tmp_path} does not hold mnist"):
        data.load("mnist", data_dir=tmp_path)
    out = tmp_path / "run"
    assert train.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out), "--quiet"]) == 2
    assert "does not hold mnist" in capsys.readouterr().err and not out.exists()


def test_config_records_where_the_data_came_from(synthetic_idx, tmp_path):
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "1",
                       "--limit", "100", "--no-plots", "--quiet", "--backend", "numpy"]) == 0
    assert json.loads((out / "config.json").read_text())["data_source"] == str(synthetic_idx)
