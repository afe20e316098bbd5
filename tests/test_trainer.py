"""The trainer in-process: exact interrupt/resume on every backend, and one notion of
"best" (best.npz, early stopping's restore and metrics.json's test accuracy agree)."""
import json
import signal

import numpy as np
import pytest

from fastlenet import checkpoint, data, kernels, models, optim, train
from fastlenet.metrics import evaluate
from fastlenet.rundir import RunDirectory
from fastlenet.trainer import Trainer, TrainingStopped


def _dataset(folder):
    ds = data.load("idx", data_dir=folder)
    return data.split_validation(ds, 0.1, seed=0)


def _trainer(ds, backend, run_dir, epochs=2):
    model = models.build("lenet5", backend=backend, seed=1)
    opt = optim.Adam(model.params, lr=2e-3, backend=backend)
    return Trainer(model, ds, opt, optim.CosineLR(2e-3, epochs), epochs=epochs, batch_size=64, seed=3,
                   augment=True, run_dir=RunDirectory(run_dir), meta={"settings": {}})


def _interrupt_after(trainer, batches):
    """SIGTERM this process once ``batches`` batches have run (the trainer's handler takes it)."""
    real, count = trainer._train_batch, [0]

    def step(xb, yb):
        real(xb, yb)
        count[0] += 1
        if count[0] == batches:
            signal.raise_signal(signal.SIGTERM)
    trainer._train_batch = step


@pytest.mark.parametrize("backend", kernels.available())
def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_parameters(backend, synthetic_idx, tmp_path):
    kernels.set_num_threads(2)
    ds = _dataset(synthetic_idx)
    whole = _trainer(ds, backend, tmp_path / "whole")
    (tmp_path / "whole").mkdir()
    whole.run()
    (tmp_path / "cut").mkdir()
    first = _trainer(ds, backend, tmp_path / "cut")
    _interrupt_after(first, 11)                     # mid-way through epoch 2 (9 batches an epoch)
    with pytest.raises(TrainingStopped) as stopped:
        first.run()
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    resumed = _trainer(ds, backend, tmp_path / "cut")
    last = tmp_path / "cut" / "last.npz"
    resumed.restore(checkpoint.load_into(resumed.model, last), last)
    assert (resumed.epoch, resumed.batch) == (1, 2)
    resumed.run()
    np.testing.assert_array_equal(resumed.model.flat_params, whole.model.flat_params)
    assert [e.val_accuracy for e in resumed.history.epochs] == [e.val_accuracy for e in whole.history.epochs]
    assert resumed.history.best_epoch == whole.history.best_epoch


@pytest.fixture(scope="module")
def noisy_idx(tmp_path_factory):
    """The synthetic classes with 40% of the labels replaced at random: accuracy moves from
    epoch to epoch, so the best epoch is not simply the last one."""
    from conftest import write_synthetic_idx
    folder = write_synthetic_idx(tmp_path_factory.mktemp("noisy"), n_train=1000, n_test=400, seed=4)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        path = folder / f"{split}-labels-idx1-ubyte.gz"
        y = data.read_idx(path)
        swap = rng.random(len(y)) < 0.4
        y[swap] = rng.integers(0, 10, swap.sum())
        data.write_idx(path, y.astype(np.uint8))
    return folder


def test_early_stopping_tests_best_npz_and_names_its_epoch(noisy_idx, tmp_path, capsys):
    run = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(noisy_idx), "--epochs", "12", "--batch-size", "32",
                       "--lr", "0.01", "--val-split", "0.3", "--early-stopping", "2", "--no-plots", "--quiet",
                       "--out", str(run), "--backend", "numpy", "--schedule", "none"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    val = [e["val_accuracy"] for e in metrics["epochs"]]
    assert len(val) < 12 and metrics["best_epoch"] < len(val)          # it stopped, after a worse epoch
    assert metrics["monitor"] == "val_accuracy"
    assert metrics["best_epoch"] == 1 + int(np.argmax(val))          # the first epoch of the best value
    model, ckpt = checkpoint.load_model(run / "best.npz", backend="numpy")
    ds = data.load("idx", data_dir=noisy_idx)
    _, acc, _ = evaluate(model, data.prepare_inputs(ds.x_test, ckpt.inference, model.input_shape), ds.y_test)
    assert acc == metrics["test_accuracy"]
    capsys.readouterr()
    from fastlenet import evaluate as evaluate_cli
    assert evaluate_cli.main([str(run / "best.npz"), "--dataset", "idx", "--data-dir", str(noisy_idx)]) == 0
    assert f"accuracy {100 * metrics['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_the_best_epoch_without_validation_is_the_best_training_accuracy(synthetic_idx):
    ds = data.load("idx", data_dir=synthetic_idx)
    model = models.build("lenet5", backend="numpy", seed=0)
    t = Trainer(model, ds, optim.Adam(model.params, lr=1e-3, backend="numpy"), epochs=2, batch_size=128)
    assert t.tracker.monitor == "train_accuracy"
    history = t.run()
    train_acc = [e.train_accuracy for e in history.epochs]
    assert history.best_epoch == 1 + int(np.argmax(train_acc))
    with pytest.raises(ValueError, match="val_accuracy"):
        Trainer(model, ds, t.opt, monitor="val_accuracy")
