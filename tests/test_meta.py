"""An edited checkpoint JSON (fastlenet.meta): every field a reader uses is checked
before use -- the model config bounded before anything is built, the normalisation
statistics, the class names, the stored image size -- each a one-line CheckpointError
naming the field, and predict/evaluate/export say it in one line."""
import json
import resource
import time

import numpy as np
import pytest

from fastlenet import checkpoint, export, models, predict
from fastlenet.checkpoint import CheckpointError


def saved(tmp_path, **meta):
    model = models.build("lenet5", backend="numpy", seed=2)
    doc = {"class_names": [str(i) for i in range(10)], "mean": 0.1, "std": 0.3, "image_size": [28, 28], **meta}
    return checkpoint.save(tmp_path / "c.npz", model, doc)


def edited(tmp_path, edit):
    """A checkpoint whose meta JSON ``edit(doc)`` changed (or replaced, when it returns text)."""
    import zipfile
    path = saved(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    doc = json.loads(arrays["meta"].tobytes())
    text = edit(doc)
    blob = text.encode() if isinstance(text, str) else json.dumps(doc).encode()
    arrays["meta"] = np.frombuffer(blob, np.uint8)
    out = tmp_path / "edited.npz"
    np.savez(out, **arrays)
    assert zipfile.is_zipfile(out)
    return out


def set_(*keys_and_value):
    *keys, value = keys_and_value

    def edit(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


def legacy(edit):
    """``edit`` applied to a model config as checkpoints wrote it before model files
    (a preset's name and overrides, no ``spec``)."""
    def apply(doc):
        model = doc["model"]
        del model["spec"]
        model.update(activation="relu", pool="max", dense_activation=None)
        return edit(doc)
    return apply


def layer_(index, key, value):
    def edit(doc):
        doc["model"]["spec"]["layers"][index][key] = value
    return edit


CASES = [
    (legacy(set_("model", "num_classes", float("inf"))), "meta model.num_classes must be an integer in [2, 1000]"),
    (legacy(set_("model", "num_classes", 10 ** 9)), "meta model.num_classes must be an integer in [2, 1000]"),
    (legacy(set_("model", "num_classes", "10")), "meta model.num_classes"),
    (legacy(set_("model", "seed", -1)), "meta model.seed"),
    (legacy(set_("model", "dtype", "object")), "meta model.dtype must be one of"),
    (legacy(set_("model", "activation", ["relu"])), "meta model.activation"),
    (legacy(set_("model", "name", "resnet")), "meta model.name must be one of"),
    (set_("model", [1, 2]), "meta 'model' must be an object"),
    (set_("model", "seed", -1), "meta model.seed"),
    (set_("model", "spec", "num_classes", float("inf")), "meta model.spec: 'num_classes' must be an integer in [2, 1000]"),
    (set_("model", "spec", "dtype", "object"), "meta model.spec: 'dtype' must be one of"),
    (set_("model", "spec", "layers", "conv"), "meta model.spec: 'layers' must be a list"),
    (layer_(0, "type", "conv3d"), "meta model.spec: layer 0: unknown type 'conv3d'"),
    (layer_(0, "filters", 10 ** 9), "meta model.spec: layer 0 (conv2d): field 'filters' must be an integer in [1, 4096]"),
    (layer_(11, "units", 50_000_000), "meta model.spec: layer 11 (dense): field 'units' must be an integer"),
    (layer_(11, "units", 20_000), "meta model.spec: 'num_classes' is 10 but the last layer gives 20000 outputs"),
    (set_("class_names", ["a", "b"]), "meta 'class_names' must name the model's 10 outputs"),
    (set_("class_names", "0123456789"), "meta 'class_names' must be a list of strings"),
    (set_("class_names", list(range(10))), "meta 'class_names' must be a list of strings"),
    (set_("mean", "bright"), "meta 'mean' must be a finite number"),
    (set_("mean", [0.1, 0.2]), "meta 'mean' must be a finite number"),
    (set_("mean", float("nan")), "meta 'mean' must be a finite number"),
    (set_("std", 0), "meta 'std' must be a finite number > 0"),
    (set_("std", float("nan")), "meta 'std' must be a finite number > 0"),
    (set_("std", None), "meta 'mean'/'std' must both be numbers or both be null"),
    (set_("image_size", [28]), "meta 'image_size' must be [H, W]"),
    (set_("image_size", [64, 64]), "meta 'image_size' must be [H, W] with 1 <= H <= 28"),
    (lambda doc: "[" * 200000 + "]" * 200000, "nested too deeply"),
]


@pytest.mark.parametrize("edit,message", CASES)
def test_edited_meta_is_named(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        checkpoint.load_model(edited(tmp_path, edit))


def test_a_huge_class_count_is_refused_before_building(tmp_path):
    path = edited(tmp_path, legacy(set_("model", "num_classes", 50_000_000)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="num_classes"):
        checkpoint.load_model(path)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000     # kB: nothing built


def test_a_huge_model_file_is_refused_before_building(tmp_path):
    def huge(doc):
        doc["model"]["spec"]["layers"][7]["units"] = 4_000_000          # dense 400 -> 4M: 1.6e9 weights
    path = edited(tmp_path, huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="layer 7 \\(dense\\): the model reaches more than"):
        checkpoint.load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000


def test_settings_as_a_list_do_not_break_readers(tmp_path):
    model, ckpt = checkpoint.load_model(edited(tmp_path, set_("settings", [1, 2])))
    assert ckpt.inference.image_size == (28, 28)


def test_older_checkpoints_without_image_size(tmp_path):
    def old(doc):
        del doc["image_size"]
        doc["settings"] = {"pad32": True}
    _, ckpt = checkpoint.load_model(edited(tmp_path, old))
    assert ckpt.inference.image_size == (28, 28)


@pytest.mark.parametrize("tool", ["predict", "export"])
def test_clis_report_an_edited_meta_in_one_line(tmp_path, capsys, tool):
    path = edited(tmp_path, set_("std", 0))
    np.save(tmp_path / "x.npy", np.zeros((28, 28), np.uint8))
    if tool == "predict":
        code = predict.main([str(path), str(tmp_path / "x.npy")])
    else:
        pytest.importorskip("onnx")
        code = export.main([str(path), str(tmp_path / "m.onnx")])
        assert not (tmp_path / "m.onnx").exists()
    err = capsys.readouterr().err
    assert code == 2 and "meta 'std' must be a finite number > 0" in err and err.count("\n") == 1
