"""The everyday experience (issue 20): the fastlenet console command and its
subcommands, plots after the fact, evaluate knowing its checkpoint, predict on
real folders, JSON output, closed pipes, help that helps, TensorBoard scalars."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastlenet import cli, data, evaluate, models, predict, train


def fastlenet(*args, cwd=None, env=None):
    """The installed console script when there is one (CI), else python -m fastlenet."""
    script = shutil.which("fastlenet")
    cmd = [script] if script else [sys.executable, "-m", "fastlenet"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture(scope="module")
def run_dir(synthetic_idx, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "2",
                       "--batch-size", "32", "--no-plots", "--quiet", "--backend", "numpy", "--limit", "300"]) == 0
    return out


def test_console_command_version_usage_and_info():
    assert fastlenet("--version").stdout.strip().startswith("fastlenet 0.")
    usage = fastlenet()
    assert usage.returncode == 2 and all(c in usage.stdout for c in cli.COMMANDS)
    assert "usage: fastlenet train" in fastlenet("train", "--help").stdout       # the command as typed
    info = fastlenet("info")
    assert info.returncode == 0, info.stderr
    for needle in ("backend cython:", "backend numba:", "default threads:", "CPU:", "data mnist:"):
        assert needle in info.stdout, needle
    bad = fastlenet("trian")
    assert bad.returncode == 2 and "unknown command 'trian'" in bad.stderr


def test_python_m_forms_keep_working():
    proc = subprocess.run([sys.executable, "-m", "fastlenet.evaluate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: python -m fastlenet.evaluate" in proc.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "plot"])
def test_help_that_helps(command, capsys):
    module = __import__(cli.COMMANDS[command][0], fromlist=["main"])
    with pytest.raises(SystemExit):
        module.main(["--help"], prog=f"fastlenet {command}")
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "``" not in text and "(default: False)" not in text
    parser = train.build_parser() if command == "train" else None
    for action in (parser._actions if parser else []):
        assert action.help, action.dest


def test_plot_draws_a_run_trained_without_plots(run_dir, capsys):
    pytest.importorskip("matplotlib")
    assert not (run_dir / "curves.png").exists()
    assert cli.main(["plot", str(run_dir)]) == 0
    for name in ("curves.png", "confusion.png", "samples.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_plot_without_the_test_images_draws_what_it_can(synthetic_idx, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "data"
    shutil.copytree(synthetic_idx, folder)
    run = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(folder), "--out", str(run), "--epochs", "1",
                       "--batch-size", "32", "--no-plots", "--quiet", "--backend", "numpy", "--limit", "100"]) == 0
    shutil.rmtree(folder)                                      # the run's test images are gone
    assert cli.main(["plot", str(run)]) == 0
    assert (run / "curves.png").exists() and (run / "confusion.png").exists()
    assert not (run / "samples.png").exists() and "samples.png skipped" in capsys.readouterr().err


def test_evaluate_defaults_to_the_checkpoint_dataset_and_folder(run_dir, capsys):
    assert evaluate.main([str(run_dir / "best.npz"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataset"] == "idx" and doc["images"] == 200 and 0 <= doc["accuracy"] <= 1
    assert len(doc["confusion_matrix"]) == 10 and doc["per_class"][0]["class"] == "0"


def test_evaluate_needs_only_the_test_files(run_dir, synthetic_idx, tmp_path, capsys):
    folder = tmp_path / "t10k-only"
    folder.mkdir()
    for f in synthetic_idx.glob("t10k-*"):
        shutil.copy(f, folder)
    assert evaluate.main([str(run_dir / "best.npz"), "--dataset", "idx", "--data-dir", str(folder)]) == 0
    assert "idx test set: 200 images" in capsys.readouterr().out


def test_evaluate_on_another_class_list_warns(real_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "mnist", "--data-dir", str(real_data), "--out", str(out), "--epochs", "1",
                       "--limit", "500", "--no-plots", "--quiet", "--backend", "numpy", "--tta", "none"]) == 0
    assert evaluate.main([str(out / "best.npz"), "--dataset", "fashion-mnist", "--data-dir", str(real_data)]) == 0
    assert "are not fashion-mnist's" in capsys.readouterr().err


class ClosedPipe:
    """stdout whose reader has gone (``| head`` after its lines): every write fails."""

    def __init__(self):
        read, self.fd = os.pipe()
        os.close(read)

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def fileno(self):
        return self.fd


@pytest.mark.parametrize("tool", ["evaluate", "predict"])
def test_a_closed_pipe_ends_quietly(run_dir, synthetic_idx, tmp_path, monkeypatch, capsys, tool):
    np.save(tmp_path / "x.npy", data.read_idx(synthetic_idx / "t10k-images-idx3-ubyte.gz")[:2])
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    args = [str(run_dir / "best.npz")] + ([str(tmp_path / "x.npy")] if tool == "predict" else [])
    code = (evaluate if tool == "evaluate" else predict).main(args)
    monkeypatch.undo()
    assert code == 141 and capsys.readouterr().err == ""


def test_predict_takes_folders_and_globs_and_goes_on_past_bad_files(run_dir, synthetic_idx, tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image
    x = data.read_idx(synthetic_idx / "t10k-images-idx3-ubyte.gz")[:3]
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img).save(folder / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    Image.fromarray(255 - x[0]).save(tmp_path / "bright.png")
    code = predict.main([str(run_dir / "best.npz"), str(folder), str(tmp_path / "*.png"), str(tmp_path / "none*.npy")])
    captured = capsys.readouterr()
    assert code == 1                                      # some failed, the rest classified
    assert [l.split(":")[0] for l in captured.out.splitlines() if not l.startswith("note")] == \
        ["d0.png", "d1.png", "d2.png", "bright.png"]
    assert "broken.png: not a readable image" in captured.err and "none*.npy: no file matches" in captured.err
    assert "mostly bright" in captured.out and "--invert" in captured.out
    assert predict.main([str(run_dir / "best.npz"), str(folder / "d1.png"), "--json", "--top", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["predictions"]) == 1 and len(doc["predictions"][0]["top"]) == 2 and doc["errors"] == []


def test_tensorboard_scalars_per_epoch(synthetic_idx, tmp_path):
    pytest.importorskip("tensorboardX")
    from fastlenet.callbacks import read_scalars
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out), "--epochs", "2",
                       "--limit", "200", "--no-plots", "--quiet", "--backend", "numpy", "--tensorboard"]) == 0
    scalars = read_scalars(out / "tensorboard")
    history = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [s for s, _ in scalars["loss/train"]] == [1, 2]
    np.testing.assert_allclose([v for _, v in scalars["loss/train"]], [e["train_loss"] for e in history], rtol=1e-6)
    assert {"accuracy/val", "lr", "seconds"} <= set(scalars)


def test_fit_calls_callbacks_and_closes_them():
    from fastlenet import models
    from fastlenet.trainer import fit
    rng = np.random.default_rng(0)
    ds = data.Dataset("toy", rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64),
                      rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16), tuple("0123456789"))
    seen = []

    class Recorder:
        closed = False

        def on_epoch_end(self, record, trainer):
            seen.append((record.epoch, trainer.epoch))

        def close(self):
            Recorder.closed = True
    fit(models.build("lenet5", backend="numpy"), ds, epochs=2, batch_size=32, callbacks=[Recorder()])
    assert seen == [(1, 1), (2, 2)] and Recorder.closed


def test_offline_training_is_one_line_and_leaves_no_run_directory(isolated_cache, monkeypatch, tmp_path, capsys):
    import dataclasses
    info = dataclasses.replace(data.DATASETS["mnist"], mirrors=("http://127.0.0.1:9/", "http://localhost:9/"))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    out = tmp_path / "run"
    assert train.main(["--dataset", "mnist", "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 600 and "--data-dir" in err and "network access" in err, err
    assert not out.exists()
    monkeypatch.setenv("FASTLENET_DATA", str(tmp_path / "nope"))
    assert train.main(["--dataset", "mnist", "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    assert f"FASTLENET_DATA={tmp_path / 'nope'} does not exist" in capsys.readouterr().err and not out.exists()


def _settings(*argv):
    from fastlenet import settings
    return settings.resolve_settings(settings.build_parser().parse_args(list(argv)))[0]


def test_a_cold_numba_cache_is_announced_with_its_helper(monkeypatch):
    from fastlenet.kernels import numba_warmup
    said, started = [], []
    monkeypatch.setattr(numba_warmup, "start_helper", lambda spec: started.append(spec) or "helper")
    monkeypatch.setattr(numba_warmup, "uncompiled", lambda entries: True)
    assert train._start_compiling(_settings("--backend", "numba"), said.append) == "helper"
    assert "compiling the kernels it uses (about 6 s, on two processes" in said[0]
    assert started[0]["layers"] == models.build("lenet5").to_spec()["layers"]
    monkeypatch.setattr(numba_warmup, "start_helper", lambda spec: None)         # e.g. one usable CPU
    said.clear()
    assert train._start_compiling(_settings("--backend", "numba"), said.append) is None
    assert "(5-15 s; once" in said[0]
    monkeypatch.setattr(numba_warmup, "start_helper", lambda spec: started.append(spec) or "helper")
    monkeypatch.setattr(numba_warmup, "uncompiled", lambda entries: False)       # all cached: silent, no helper
    said.clear()
    assert train._start_compiling(_settings("--backend", "numba"), said.append) is None
    assert train._start_compiling(_settings("--backend", "cython"), said.append) is None
    assert said == [] and len(started) == 1


def test_a_network_without_recorded_kernels_goes_by_the_cache_folder(tmp_path, monkeypatch):
    from fastlenet.kernels import numba_backend
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    said = []
    s = _settings("--backend", "numba", "--activation", "tanh")                  # no manifest entry
    assert not numba_backend.cache_is_warm()
    assert train._start_compiling(s, said.append) is None
    assert said and "(5-15 s; once" in said[0]
    (tmp_path / "fastlenet" / "kernels").mkdir(parents=True)
    (tmp_path / "fastlenet" / "kernels" / "numba_conv.forward_direct-1.py311.nbi").write_bytes(b"")
    said.clear()
    assert numba_backend.cache_is_warm()
    assert train._start_compiling(s, said.append) is None
    assert said == []


def test_bench_runs_compare_from_the_source_tree(capsys, monkeypatch):
    assert cli.source_tree() is not None                       # the tests run from a checkout
    proc = fastlenet("bench", "--help")
    assert proc.returncode == 0 and "One real training epoch per backend" in proc.stdout
    monkeypatch.setattr(cli, "source_tree", lambda: None)      # an installed copy without benchmarks/
    assert cli.main(["bench"]) == 2
    assert "the benchmarks live in the source tree" in capsys.readouterr().err
