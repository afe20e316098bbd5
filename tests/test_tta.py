"""Test-time augmentation (fastlenet.tta): the views are what they say, the averaged
probabilities do not depend on the batch size, ``none`` is the plain evaluation, and
train / evaluate / predict apply the kind a run recorded (mirrors refused where they
change a label)."""
import json

import numpy as np
import pytest

from fastlenet import checkpoint, data, evaluate as evaluate_cli, models, predict, train, tta
from fastlenet.losses import softmax
from fastlenet.metrics import evaluate as plain_evaluate
from fastlenet.settings import UsageError, build_parser, resolve_settings


def _model_and_images(n=37, seed=0):
    model = models.build("lenet5", backend="numpy", seed=seed)
    x = np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)
    return model, x


@pytest.mark.parametrize("kind,count", [("none", 1), ("shifts", 9), ("shifts2", 25), ("flips", 2),
                                        ("flips-shifts", 18)])
def test_each_kind_has_its_views_the_image_first(kind, count):
    chosen = tta.views(kind)
    assert len(chosen) == count == len(set(chosen)) and chosen[0] == (False, 0, 0)
    radius = {1: 0, 2: 0, 9: 1, 18: 1, 25: 2}[count]
    assert max(max(abs(dy), abs(dx)) for _, dy, dx in chosen) == radius


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="one of none, shifts, shifts2, flips, flips-shifts, got 'rotate'"):
        tta.views("rotate")


@pytest.mark.parametrize("mirrored,dy,dx", [(False, 1, 0), (False, -1, 0), (False, 0, 1), (False, 0, -1),
                                            (True, 0, 0), (True, 1, -1)])
def test_a_view_is_a_mirror_then_a_zero_filled_shift(mirrored, dy, dx):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) + 1
    src = x[:, :, :, ::-1] if mirrored else x
    expected = np.zeros_like(x)
    for i in range(4):
        for j in range(5):
            if 0 <= i - dy < 4 and 0 <= j - dx < 5:
                expected[:, :, i, j] = src[:, :, i - dy, j - dx]
    got = tta.view_of(x, mirrored, dy, dx)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.c_contiguous


def test_none_is_the_plain_evaluation():
    model, x = _model_and_images()
    y = np.arange(len(x)) % 10
    loss, acc, pred = tta.evaluate(model, x, y, "none")
    ref = plain_evaluate(model, x, y)
    assert (loss, acc) == ref[:2] and np.array_equal(pred, ref[2])
    np.testing.assert_allclose(tta.predict_proba(model, x, "none"),
                               softmax(model.forward(x).astype(np.float64)), rtol=1e-12)


@pytest.mark.parametrize("kind", ["shifts", "shifts2", "flips-shifts"])
def test_probabilities_are_the_mean_over_views_and_independent_of_the_batch(kind):
    model, x = _model_and_images()
    expected = np.mean([softmax(model.forward(tta.view_of(x, *v)).astype(np.float64)) for v in tta.views(kind)],
                       axis=0)
    for batch_size in (1, 8, 1000):
        got = tta.predict_proba(model, x, kind, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_the_loss_is_the_cross_entropy_of_the_averaged_probabilities():
    model, x = _model_and_images()
    y = np.arange(len(x)) % 10
    p = tta.predict_proba(model, x, "shifts")
    loss, acc, pred = tta.evaluate(model, x, y, "shifts")
    assert loss == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean())
    assert np.array_equal(pred, p.argmax(1)) and acc == pytest.approx((pred == y).mean())


def settings(*argv):
    return resolve_settings(build_parser().parse_args(list(argv)))


def test_mirrors_are_refused_where_they_change_the_label():
    assert data.mirror_keeps_label("fashion-mnist") and data.mirror_keeps_label("cifar10")
    assert not data.mirror_keeps_label("mnist") and not data.mirror_keeps_label("idx")
    with pytest.raises(UsageError, match="--tta flips mirrors the images, which changes what mnist images show"):
        settings("--dataset", "mnist", "--tta", "flips")
    s, sources = settings("--dataset", "fashion-mnist", "--tta", "flips-shifts")
    assert s["tta"] == "flips-shifts" and sources["tta"] == "flag"


def test_a_reader_takes_the_flag_else_the_recorded_kind_checked():
    fashion = {"settings": {"dataset": "fashion-mnist", "tta": "flips-shifts"}}
    assert tta.chosen(None, fashion, "fashion-mnist") == "flips-shifts"
    assert tta.chosen("none", fashion, "fashion-mnist") == "none"
    assert tta.chosen(None, {}, "mnist") == "none"                       # written before --tta
    with pytest.raises(ValueError, match="settings.tta must be one of"):
        tta.chosen(None, {"settings": {"tta": ["shifts"]}}, "mnist")
    with pytest.raises(ValueError, match="changes what mnist images show"):
        tta.chosen(None, fashion, "mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        tta.chosen("flips", {}, None)
    assert tta.chosen("flips", fashion) == "flips"                      # the recorded dataset by default
    with pytest.raises(ValueError, match="changes what mnist images show"):
        tta.chosen("flips", {"settings": {"dataset": "mnist"}})
    assert tta.describe("shifts2") == "shifts2: 25 views averaged"


def test_train_evaluate_and_predict_apply_the_recorded_kind(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--epochs", "2", "--tta", "shifts",
                       "--out", str(out), "--no-plots", "--quiet", "--backend", "numpy"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "shifts" and "shifts: 9 views averaged; plain images" in printed
    model, ckpt = checkpoint.load_model(out / "best.npz", backend="numpy")
    ds = data.load("idx", data_dir=synthetic_idx)
    x = data.prepare_inputs(ds.x_test, ckpt.inference, model.input_shape)
    assert metrics["test_accuracy"] == pytest.approx(tta.evaluate(model, x, ds.y_test, "shifts")[1])
    assert metrics["test_accuracy_plain"] == pytest.approx(plain_evaluate(model, x, ds.y_test)[1])
    assert evaluate_cli.main([str(out / "best.npz"), "--data-dir", str(synthetic_idx), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tta"] == "shifts" and doc["accuracy"] == pytest.approx(metrics["test_accuracy"])
    np.save(tmp_path / "few.npy", (ds.x_test[:3, 0] * 255).astype(np.uint8))
    assert predict.main([str(out / "best.npz"), str(tmp_path / "few.npy"), "--json", "--top", "10"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    expected = tta.predict_proba(model, x[:3], "shifts")
    for row, p in zip(rows, expected):
        top = row["top"][0]
        assert top["probability"] == pytest.approx(p.max(), rel=1e-5)
    assert evaluate_cli.main([str(out / "best.npz"), "--data-dir", str(synthetic_idx), "--tta", "flips"]) == 2
    assert "changes what idx images show" in capsys.readouterr().err


def test_the_tta_table_scores_every_kind_on_a_sweeps_runs(synthetic_idx, tmp_path, capsys):
    from benchmarks import tta_table
    for seed in (0, 1):
        assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--epochs", "1", "--seed", str(seed),
                           "--out", str(tmp_path / "sweep" / f"seed={seed}"), "--no-plots", "--quiet",
                           "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert tta_table.main([str(tmp_path / "sweep"), "--kinds", "none", "shifts", "flips"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "views" not in line}
    assert set(rows) == {"none", "shifts"}                    # idx: no mirrors
    plain = [json.loads((tmp_path / "sweep" / f"seed={s}" / "metrics.json").read_text())["test_accuracy"] for s in (0, 1)]
    assert f"{100 * plain[0]:.2f}, {100 * plain[1]:.2f} |" in rows["none"]
    assert tta_table.main([str(tmp_path / "nothing")]) == 2
