"""Named recipes (fastlenet.recipes) and the framework-faithful options: every recipe
file parses and writes out every knob, every value in config.json names its source,
no flag picks up another optimizer's or dataset's value, and each option behaves as
the framework it imitates documents."""
import json

import numpy as np
import pytest

from fastlenet import checkpoint, data, kernels, layers, models, optim, recipes, train
from fastlenet.settings import UsageError, build_parser, resolve_settings

PUBLISHED = ["fashion-sigmoid-maxpool-sgd", "fashion-relu-avgpool-adam", "fashion-sigmoid-avgpool-adam",
             "mnist-bn-plateau", "mnist-1998-c5-sgd"]


def settings(*argv):
    return resolve_settings(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("name", recipes.NAMES)
def test_every_recipe_parses_and_writes_out_every_knob(name):
    from fastlenet.settings import recipe_value_problem
    recipe = recipes.load(name, recipe_value_problem)
    assert recipes.missing_knobs(recipe) == [], "a shipped recipe inherits nothing"
    assert recipe.description and recipe.published
    s, sources = settings("--recipe", name, "--data-dir", "x")
    assert set(sources) == set(recipes.BUILTIN)
    assert all(src == f"recipe {name}" for key, src in sources.items() if key != "pad32"), sources


def test_the_five_published_setups_and_the_two_defaults_are_there():
    assert set(PUBLISHED + ["mnist", "fashion-mnist"]) <= set(recipes.NAMES)
    assert len(recipes.listing().splitlines()) == len(recipes.NAMES)


def test_a_dataset_alone_takes_its_own_recipe():
    s, sources = settings("--dataset", "fashion-mnist")
    assert s["recipe"] == "fashion-mnist" and s["optimizer"] == "adamw" and s["weight_decay"] == 0.03
    assert sources["weight_decay"] == "recipe fashion-mnist"


@pytest.mark.parametrize("argv,key,value,source", [
    # the bug: an explicit SGD setup took the Fashion recipe's AdamW weight decay
    (["--dataset", "fashion-mnist", "--optimizer", "sgd", "--lr", "0.9"], "weight_decay", 0.0, "default for sgd"),
    (["--dataset", "fashion-mnist", "--optimizer", "sgd"], "lr", 0.01, "default for sgd"),
    (["--dataset", "fashion-mnist", "--optimizer", "sgd"], "momentum", 0.0, "default for sgd"),
    (["--dataset", "mnist", "--optimizer", "adam"], "weight_decay", 0.0, "default for adam"),
    (["--dataset", "mnist", "--optimizer", "adam"], "lr", 0.001, "default for adam"),
    (["--recipe", "mnist-1998-c5-sgd", "--optimizer", "adam"], "lr_list", None, "default"),
    (["--recipe", "mnist-1998-c5-sgd", "--optimizer", "adam"], "lr", 0.001, "default for adam"),
    (["--recipe", "mnist-1998-c5-sgd", "--model", "lenet5"], "activation", None, "default"),
    (["--recipe", "mnist-1998-c5-sgd", "--model", "lenet5"], "init", "auto", "default"),
    (["--recipe", "mnist-1998-c5-sgd", "--model", "lenet5"], "pad32", False, "default"),
    (["--recipe", "mnist-bn-plateau", "--schedule", "step"], "plateau_patience", 10, "default"),
    (["--recipe", "mnist-bn-plateau", "--schedule", "plateau"], "plateau_patience", 3, "recipe mnist-bn-plateau"),
    (["--recipe", "fashion-sigmoid-maxpool-sgd", "--lr", "0.5"], "lr", 0.5, "flag"),
    (["--recipe", "fashion-sigmoid-maxpool-sgd", "--optimizer", "sgd"], "lr", 0.9, "recipe fashion-sigmoid-maxpool-sgd"),
    (["--recipe", "mnist-bn-plateau", "--dataset", "fashion-mnist"], "dataset", "fashion-mnist", "flag"),
    (["--dataset", "mnist", "--lr-list", "0.1,0.01"], "lr", 0.1, "lr-list"),
])
def test_no_flag_silently_picks_up_another_setups_value(argv, key, value, source):
    s, sources = settings(*argv)
    assert s[key] == value and sources[key] == source, (s[key], sources[key])


def test_config_json_names_the_source_of_every_value(synthetic_idx, tmp_path):
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "1",
                       "--optimizer", "sgd", "--no-plots", "--quiet"]) == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["recipe"] == "idx" and set(doc["sources"]) == set(recipes.BUILTIN)
    assert doc["sources"]["optimizer"] == "flag" and doc["sources"]["lr"] == "default for sgd"
    assert doc["sources"]["epochs"] == "flag" and doc["sources"]["batch_size"] == "recipe idx"
    assert all(doc["settings"][k] == v for k, v in recipes.OPTIMIZER_DEFAULTS["sgd"].items())


def test_a_users_recipe_file_and_its_refusals(tmp_path):
    mine = {"format": "fastlenet-recipe", "version": 1, "name": "mine",
            "settings": {"dataset": "mnist", "epochs": 3, "optimizer": "sgd"}}
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    s, sources = settings("--recipe", str(tmp_path / "mine.json"))
    assert s["epochs"] == 3 and sources["epochs"] == "recipe mine" and sources["batch_size"] == "default"
    assert s["lr"] == 0.01 and sources["lr"] == "default for sgd"
    for bad, message in [({"epochs": "3"}, "settings 'epochs' must be an integer"),
                         ({"lr": -1.0}, "settings 'lr' must be a number in (0.0, inf)"),
                         ({"optimizer": "rmsprop"}, "settings 'optimizer' must be one of"),
                         ({"colour": 1}, "settings 'colour' is not a knob")]:
        (tmp_path / "bad.json").write_text(json.dumps({**mine, "settings": {**mine["settings"], **bad}}))
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            settings("--recipe", str(tmp_path / "bad.json"))
    with pytest.raises(UsageError, match="no such recipe or file; recipes: cifar10"):
        settings("--recipe", "nonesuch")


def test_recipe_list_prints_one_line_each(capsys):
    assert train.main(["--recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipes.NAMES) and lines[0].startswith(recipes.NAMES[0])


# ---------------------------------------------------------------- framework semantics
def test_val_from_end_is_keras_validation_split():
    train_idx, val = data.validation_indices(np.arange(10) % 3, 0.25, how="end")
    # keras: split_at = int(10 * (1 - 0.25)) = 7 -> the last 3 validate
    np.testing.assert_array_equal(train_idx, np.arange(7))
    np.testing.assert_array_equal(val, [7, 8, 9])
    tr, va = data.validation_indices(np.zeros(100), 0.2, seed=1, how="random")
    assert len(va) == 20 and len(np.intersect1d(tr, va)) == 0 and not np.array_equal(va, np.arange(80, 100))


@pytest.mark.parametrize("style,cut_at", [("keras", 3), ("torch", 4), ("exact", 4)])
def test_plateau_patience_counts_as_each_framework(style, cut_at):
    """patience 3 after an improvement at epoch 0: Keras cuts at the 3rd bad epoch, PyTorch at the 4th."""
    plateau = optim.ReduceLROnPlateau(1.0, factor=0.5, patience=3, style=style)
    rates = []
    for metric in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        plateau.observe(metric)
        rates.append(plateau.lr(0))
    assert rates.index(0.5) == cut_at


@pytest.mark.parametrize("style,improves", [("keras", False), ("torch", False), ("exact", True)])
def test_plateau_thresholds(style, improves):
    """A decrease of 0.00005 from 1.0: below both frameworks' 1e-4 thresholds."""
    plateau = optim.ReduceLROnPlateau(1.0, factor=0.5, patience=0, style=style)
    plateau.observe(1.0)
    plateau.observe(0.99995)
    assert (plateau.lr(0) == 1.0) is improves


def test_inits_follow_the_frameworks():
    rng = np.random.default_rng(0)
    conv = layers.Conv2D(64, 3, init="torch")
    conv.build((16, 8, 8), rng, np.float64, None)
    bound = 1 / np.sqrt(16 * 9)                         # PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias too
    assert np.abs(conv.params["w"]).max() <= bound and np.abs(conv.params["w"]).max() > 0.95 * bound
    assert np.abs(conv.params["b"]).max() <= bound and np.count_nonzero(conv.params["b"]) == 64
    dense = layers.Dense(300, init="keras")
    dense.build((200,), rng, np.float64, kernels.backend("numpy"))
    limit = np.sqrt(6 / 500)                            # Keras glorot_uniform, zero bias
    assert np.abs(dense.params["w"]).max() <= limit and not dense.params["b"].any()
    lecun = layers.Dense(400, init="lecun")
    lecun.build((900,), rng, np.float64, kernels.backend("numpy"))
    assert abs(lecun.params["w"].std() - np.sqrt(1 / 900)) < 0.02 * np.sqrt(1 / 900)


def test_init_and_batch_norm_flags_reach_the_layers():
    s, _ = settings("--recipe", "mnist-bn-plateau")
    model = train.make_model(s, 10, (1, 28, 28))
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNorm)]
    assert len(bns) == 2 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)   # after the convs only
    assert all(layer.init == "keras" for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.Dense)))


def test_the_published_lenet5_bn_and_the_old_variant():
    kinds = [layer["type"] for layer in models.read_spec("lenet5-bn")["layers"]]
    assert kinds.count("batchnorm") == 2 and kinds.index("flatten") > max(i for i, k in enumerate(kinds) if k == "batchnorm")
    assert [layer["type"] for layer in models.read_spec("lenet5-bn-all")["layers"]].count("batchnorm") == 4


def test_an_older_lenet5_bn_checkpoint_loads_as_the_variant_it_was(tmp_path):
    model = models.build("lenet5-bn-all", backend="numpy", seed=1)
    path = checkpoint.save(tmp_path / "old.npz", model)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["model"] = {"name": "lenet5-bn", "activation": "relu", "pool": "max", "dense_activation": None,
                     "num_classes": 10, "seed": 1, "dtype": "float32"}           # as written before model files
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "legacy.npz", **arrays)
    loaded, _ = checkpoint.load_model(tmp_path / "legacy.npz", backend="numpy")
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)


def _early_stopped_run(synthetic_idx, out, *extra):
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "30",
                       "--val-split", "0.2", "--early-stopping", "1", "--monitor", "val_loss", "--lr", "0.05",
                       "--optimizer", "sgd", "--momentum", "0.9", "--no-plots", "--quiet", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_test_weights_and_restore_best(synthetic_idx, tmp_path):
    from fastlenet.metrics import evaluate
    last = _early_stopped_run(synthetic_idx, tmp_path / "last", "--test-weights", "last", "--no-restore-best")
    best = _early_stopped_run(synthetic_idx, tmp_path / "best", "--test-weights", "best")
    assert last["test_weights"] == "last" and best["test_weights"] == "best"
    ds = data.load("idx", data_dir=synthetic_idx)
    for run, which in ((tmp_path / "last", "last.npz"), (tmp_path / "best", "best.npz")):
        model, _ = checkpoint.load_model(run / which)
        _, accuracy, _ = evaluate(model, ds.x_test, ds.y_test)
        assert accuracy == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"])
