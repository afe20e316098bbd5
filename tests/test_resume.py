"""--resume: more epochs when asked, every other flag refused by name, a finished run
reported and left untouched, an edited config.json named field by field."""
import json

import numpy as np
import pytest

from fastlenet import train

BASE = ["--dataset", "idx", "--batch-size", "64", "--no-plots", "--quiet", "--limit", "200",
        "--backend", "numpy", "--seed", "3"]


def start(synthetic_idx, out, *extra):
    return train.main(BASE + ["--data-dir", str(synthetic_idx), "--out", str(out), *extra])


def snapshot(folder):
    """Every file of a run but its lock (which any opening holds)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".fastlenet.lock"}


@pytest.fixture(scope="module")
def finished_run(synthetic_idx, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    assert start(synthetic_idx, out, "--epochs", "2") == 0
    return out


def copy_run(src, dst):
    dst.mkdir()
    for name, blob in snapshot(src).items():
        (dst / name).write_bytes(blob)
    return dst


def test_resuming_a_finished_run_says_so_and_changes_nothing(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "is finished (2 epochs, test accuracy" in out and "nothing changed" in out
    assert snapshot(run) == before


def test_more_epochs_continue_a_finished_run(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["settings"]["epochs"] == 3 and config["epochs_changed"] == [{"from": 2, "to": 3, "at_epoch": 2}]
    assert len(metrics["epochs"]) == 3 and (run / "history.csv").read_text().count("\n") == 4
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 0            # finished again, at 3
    assert "is finished (3 epochs" in capsys.readouterr().out


def test_fewer_epochs_than_done_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()                            # an unfinished run at epoch 2
    before = snapshot(run)
    assert train.main(["--resume", str(run), "--epochs", "1"]) == 2
    assert "--epochs 1 is fewer than the 2 epochs" in capsys.readouterr().err
    assert snapshot(run) == before and metrics


@pytest.mark.parametrize("flags,named", [
    (["--lr", "0.1"], "--lr"),
    (["--batch-size", "8", "--seed", "1"], "--batch-size, --seed"),
    (["--dataset", "mnist"], "--dataset"),
    (["--no-plots"], "--no-plots"),
])
def test_other_flags_are_refused_by_name(finished_run, tmp_path, capsys, flags, named):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    assert train.main(["--resume", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert f"{named} cannot change" in err and err.count("\n") == 1
    assert snapshot(run) == before


def test_an_early_stopped_run_is_finished_and_not_extended(synthetic_idx, tmp_path, capsys):
    run = tmp_path / "run"
    assert start(synthetic_idx, run, "--epochs", "30", "--early-stopping", "1", "--val-split", "0.2",
                 "--monitor", "train_loss", "--lr", "1e-9") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_early"] and len(metrics["epochs"]) < 30
    before = snapshot(run)
    assert train.main(["--resume", str(run)]) == 0
    assert "is finished" in capsys.readouterr().out
    assert train.main(["--resume", str(run), "--epochs", "40"]) == 2
    assert "stopped early after epoch" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.parametrize("field,value,message", [
    ("epochs", "ten", "settings 'epochs' must be an integer"),
    ("epochs", 1.5, "settings 'epochs' must be an integer"),
    ("lr", None, "settings 'lr' is null"),
    ("lr", float("inf"), "--lr must be a number in (0.0, inf), got inf"),
    ("optimizer", "rmsprop", "settings 'optimizer' must be one of"),
    ("augment", "yes", "settings 'augment' must be true or false"),
    ("lr_list", [0.1, "x"], "settings 'lr_list' must be a list of numbers"),
    ("batch_size", None, "settings 'batch_size' is null"),
    ("batch_size", 0, "settings: --batch-size must be >= 1"),
    ("momentum", float("nan"), "--momentum must be a number in [0.0, 1.0)"),
    ("seed", -4, "--seed must be a number in"),
])
def test_an_edited_config_is_named_field_by_field(finished_run, tmp_path, capsys, field, value, message):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    doc = json.loads((run / "config.json").read_text())
    doc["settings"][field] = value
    (run / "config.json").write_text(json.dumps(doc))
    before = snapshot(run)
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert snapshot(run) == before


@pytest.mark.parametrize("text,message", [
    ('{"versions": {}}', "has no 'settings' object"),
    ('{"settings": [1, 2]}', "has no 'settings' object"),
    ("[" * 100000, "unreadable"),
    ('{"settings": {"epochs": 2}}', "settings have no"),
])
def test_a_broken_config_is_one_line(finished_run, tmp_path, capsys, text, message):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "config.json").write_text(text)
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_threads_may_change_on_resume(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    assert train.main(["--resume", str(run), "--threads", "1", "--quiet"]) == 0
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["test_loss"])
