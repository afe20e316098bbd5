"""Environment faults: an unusable Numba cache, a run directory that cannot be
written, a full disk while saving, missing optional extras.  Each gives a clear
message; the run continues without the feature or stops without losing the
last checkpoint."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from fastlenet import checkpoint, kernels, predict, train


def test_unwritable_numba_cache_directory_still_trains(synthetic_idx, tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR="/proc/fastlenet-cannot-write-here")
    proc = subprocess.run([sys.executable, "-m", "fastlenet.train", "--dataset", "idx", "--data-dir",
                           str(synthetic_idx), "--backend", "numba", "--epochs", "1", "--no-plots", "--quiet",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout


def test_backend_failing_with_any_error_is_reported(monkeypatch, tmp_path, swap_backend_module):
    bad = tmp_path / "broken_backend.py"
    bad.write_text("raise RuntimeError('cannot cache function: no locator available')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    swap_backend_module("numba", "broken_backend")
    assert "numba" not in kernels.available()
    assert "RuntimeError: cannot cache function" in kernels.unavailable()["numba"]
    with pytest.raises(kernels.BackendUnavailable, match="no locator available"):
        kernels.backend("numba")


def test_unwritable_run_directory_is_a_clear_error(synthetic_idx, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(blocker / "run"),
                       "--epochs", "1", "--no-plots"])
    assert code == 2
    assert "cannot write to run directory" in capsys.readouterr().err


def test_full_disk_while_saving_stops_and_keeps_the_last_checkpoint(synthetic_idx, tmp_path, monkeypatch, capsys):
    real = checkpoint.atomic_write_bytes
    calls = {"n": 0}

    def fills_up(path, blob):
        calls["n"] += 1
        if calls["n"] > 2:                     # epoch 1 writes best.npz and last.npz; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, blob)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", fills_up)
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "3", "--batch-size", "64", "--no-plots", "--quiet"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "No space left on device" in err and "previous checkpoint is intact" in err
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    _, ckpt = checkpoint.load_model(out / "last.npz")
    assert ckpt.meta["position"]["epoch"] == 1


def test_missing_matplotlib_skips_plots_with_a_note(synthetic_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib -> ImportError
    monkeypatch.delitem(sys.modules, "fastlenet.plots", raising=False)
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "plots skipped" in text and "fastlenet[plot]" in text
    assert (out / "metrics.json").is_file() and not (out / "curves.png").exists()


def test_missing_pillow_is_a_clear_error_for_pictures(synthetic_idx, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 0
    picture = tmp_path / "digit.png"
    picture.write_bytes(b"\x89PNG not really")
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert predict.main([str(out / "best.npz"), str(picture)]) == 2
    assert "needs Pillow" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", np.zeros((28, 28), np.uint8))   # .npy still works without Pillow
    assert predict.main([str(out / "best.npz"), str(tmp_path / "ok.npy")]) == 0
