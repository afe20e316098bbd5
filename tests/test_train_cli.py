"""python -m fastlenet.train / evaluate / predict: run directory, outputs,
one-line errors, divergence, and exact resumption after SIGTERM/SIGINT."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastlenet import checkpoint, evaluate, predict, train

QUICK = ["--epochs", "2", "--batch-size", "64", "--no-plots", "--quiet"]


def run_cli(args, cwd=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "fastlenet.train", *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd=cwd)


def test_help_documents_every_flag():
    text = train.build_parser().format_help()
    for flag in ["--dataset", "--data-dir", "--model", "--activation", "--pool", "--epochs", "--batch-size",
                 "--optimizer", "--lr", "--momentum", "--weight-decay", "--schedule", "--lr-list",
                 "--early-stopping", "--min-delta", "--val-split", "--augment", "--standardize", "--pad32",
                 "--backend", "--threads", "--seed", "--limit", "--out", "--resume", "--no-plots", "--quiet"]:
        assert flag in text, flag
    # every flag has help text of its own (argparse prints none for a flag without)
    for action in train.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings[0]} has no help text"
    assert "(recipe's value; built-in default: val_accuracy)" in " ".join(text.split())
    for flag in ["--recipe", "--init", "--val-from", "--test-weights", "--restore-best", "--plateau-style",
                 "--bn-momentum", "--bn-eps"]:
        assert flag in text, flag


def test_short_run_writes_the_whole_run_directory(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "3", "--batch-size", "32", "--val-split", "0.2", "--standardize"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "epoch   3/3" in printed and "test accuracy" in printed and str(out) in printed
    for name in ["config.json", "history.csv", "metrics.json", "best.npz", "last.npz",
                 "curves.png", "confusion.png", "samples.png"]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9, metrics["test_accuracy"]
    assert 1 <= metrics["best_epoch"] <= 3
    assert [set(e) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
            for e in metrics["epochs"]] == [True] * 3
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["batch_size"] == 32 and config["backend"] and config["threads"] >= 1
    assert "numpy" in config["versions"] and "numba" in config["versions"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    model, ckpt = checkpoint.load_model(out / "best.npz")
    assert ckpt.meta["mean"] is not None and ckpt.meta["class_names"] == [str(i) for i in range(10)]
    # evaluate and predict the saved model
    assert evaluate.main([str(out / "best.npz"), "--dataset", "idx", "--data-dir", str(synthetic_idx)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "per-class accuracy" in text and "true \\ predicted" in text
    from fastlenet import data
    imgs = data.read_idx(synthetic_idx / "t10k-images-idx3-ubyte.gz")[:3]
    labels = data.read_idx(synthetic_idx / "t10k-labels-idx1-ubyte.gz")[:3]
    np.save(tmp_path / "three.npy", imgs)
    from PIL import Image
    Image.fromarray(imgs[0]).convert("RGB").resize((56, 56)).save(tmp_path / "one.png")
    assert predict.main([str(out / "best.npz"), str(tmp_path / "three.npy"), str(tmp_path / "one.png")]) == 0
    text = capsys.readouterr().out
    lines = [l for l in text.splitlines() if l.startswith("three.npy[")]
    assert [l.split(": ")[1].split(" ")[0] for l in lines] == [str(v) for v in labels]
    assert "converted RGB to greyscale" in text and "resized 56x56 to 28x28" in text


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "-1"], "--lr must be a number in (0.0, inf)"),
    (["--val-split", "1.5"], "--val-split must be a number in [0.0, 1.0)"),
    (["--dataset", "idx"], "--dataset idx needs --data-dir"),
    (["--early-stopping", "3", "--val-split", "0"], "needs --val-split > 0"),
    (["--lr-list", "0.1,abc"], "--lr-list must be comma-separated positive numbers"),
    (["--resume", "/nonexistent/run"], "no config.json there"),
    (["--threads", "4096"], "--threads 4096 is more than the"),
])
def test_bad_settings_are_one_line_errors(args, message, tmp_path):
    proc = run_cli(QUICK + args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr


def test_missing_dataset_is_a_one_line_error(tmp_path):
    proc = run_cli(["--dataset", "idx", "--data-dir", str(tmp_path)] + QUICK, cwd=tmp_path)
    assert proc.returncode == 2 and "does not hold the IDX files" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_checkpoint(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--optimizer", "sgd", "--lr-list", "0.01,1e30", "--epochs", "3", "--batch-size", "32",
                       "--val-split", "0", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "training diverged" in err and "epoch 2, batch" in err and "lower --lr" in err
    model, ckpt = checkpoint.load_model(out / "last.npz")
    assert ckpt.meta["position"]["epoch"] == 1
    assert all(np.isfinite(p).all() for p in model.params.values())


def _train_then_signal(cmd, sig, out, after_line):
    """Start a training process, send ``sig`` once ``after_line`` shows up, return it finished."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "fastlenet.train", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if after_line in line:
            time.sleep(0.2)
            proc.send_signal(sig)
            break
    stdout, stderr = proc.communicate(timeout=600)
    return proc.returncode, stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_and_resume_ends_with_the_uninterrupted_parameters(synthetic_idx, tmp_path, sig):
    base = ["--dataset", "idx", "--data-dir", str(synthetic_idx), "--epochs", "3", "--batch-size", "16",
            "--val-split", "0.1", "--augment", "--no-plots", "--backend", "numpy", "--threads", "1"]
    ref = run_cli(base + ["--out", str(tmp_path / "ref"), "--quiet"])
    assert ref.returncode == 0, ref.stderr
    code, stderr = _train_then_signal(base + ["--out", str(tmp_path / "cut")], sig, tmp_path / "cut", "epoch   1/3")
    assert code == 128 + sig, stderr
    assert "Resume with: python -m fastlenet.train --resume" in stderr
    resumed = run_cli(["--resume", str(tmp_path / "cut"), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.read(tmp_path / "ref" / "last.npz")
    b = checkpoint.read(tmp_path / "cut" / "last.npz")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert json.loads((tmp_path / "ref" / "metrics.json").read_text())["test_accuracy"] == \
        json.loads((tmp_path / "cut" / "metrics.json").read_text())["test_accuracy"]


def test_refuses_to_overwrite_a_run(synthetic_idx, tmp_path):
    out = tmp_path / "run"
    args = ["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "1", "--no-plots", "--quiet"]
    assert train.main(args) == 0
    proc = run_cli(args)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


def test_real_fashion_mnist_quick_run(real_data, tmp_path, capsys):
    """CI's real training: 5,000 Fashion-MNIST images, one epoch."""
    out = tmp_path / "fm"
    code = train.main(["--dataset", "fashion-mnist", "--data-dir", str(real_data), "--limit", "5000",
                       "--epochs", "1", "--out", str(out), "--no-plots"])
    text = capsys.readouterr().out
    assert code == 0, text
    acc = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert acc > 0.65, acc


def test_sigkill_then_resume_still_matches(synthetic_idx, tmp_path):
    """SIGKILL saves nothing: the run restarts from the last epoch's checkpoint and,
    with (seed, epoch, batch)-derived randomness, replays the same batches."""
    base = ["--dataset", "idx", "--data-dir", str(synthetic_idx), "--epochs", "3", "--batch-size", "16",
            "--val-split", "0.1", "--augment", "--no-plots", "--backend", "numpy", "--threads", "1"]
    ref = run_cli(base + ["--out", str(tmp_path / "ref"), "--quiet"])
    assert ref.returncode == 0, ref.stderr
    code, _ = _train_then_signal(base + ["--out", str(tmp_path / "cut")], signal.SIGKILL, tmp_path / "cut",
                                 "epoch   1/3")
    assert code == -signal.SIGKILL
    checkpoint.read(tmp_path / "cut" / "last.npz")              # intact and loadable
    resumed = run_cli(["--resume", str(tmp_path / "cut"), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.read(tmp_path / "ref" / "last.npz").params
    b = checkpoint.read(tmp_path / "cut" / "last.npz").params
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
