"""fastlenet sweep on a local Ray instance: a tiny grid x seeds on synthetic IDX data,
results.csv / sweep.json, the table, failed trials, re-runs that skip finished trials."""
import csv
import json
import sys

import pytest

from fastlenet import sweep

ray = pytest.importorskip("ray")


def run(capsys, *argv):
    code = sweep.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base(data):
    return ["--dataset", "idx", "--data-dir", str(data), "--epochs", "1", "--batch-size", "32", "--val-split", "0.1",
            "--limit", "200"]


def test_a_tiny_sweep_and_its_rerun(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "sweep"
    code, printed, _ = run(capsys, *base(synthetic_idx), "--grid", "lr=0.001,0.003", "--seeds", "2", "--out", str(out))
    assert code == 0, printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {r["lr"] for r in rows} == {"0.001", "0.003"} and {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["status"] == "done" and 0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    for r in rows:                                  # each trial is a normal run directory
        config = json.loads((out / r["trial"] / "config.json").read_text())
        assert config["settings"]["lr"] == float(r["lr"]) and config["settings"]["seed"] == int(r["seed"])
        assert config["sources"]["lr"] == "flag"
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["engine"]["name"] == "ray" and doc["engine"]["version"] == ray.__version__
    assert doc["grid"] == {"lr": ["0.001", "0.003"]} and doc["seeds"] == 2 and doc["cluster"]["address"] == "local"
    assert "test accuracy (mean +- std)" in printed and "+-" in printed and "best: lr=" in printed
    code, printed, _ = run(capsys, *base(synthetic_idx), "--grid", "lr=0.001,0.003", "--seeds", "2", "--out", str(out))
    assert code == 0 and printed.count("(finished before)") == 4


def test_a_failed_trial_is_reported_and_the_rest_finish(synthetic_idx, tmp_path, capsys):
    out = tmp_path / "sweep"
    code, printed, _ = run(capsys, *base(synthetic_idx), "--optimizer", "sgd", "--grid", "lr=0.01,1e8", "--out", str(out))
    assert code == 1
    assert "lr=1e8,seed=0: FAILED: fastlenet.train: training diverged" in printed
    rows = {r["lr"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["1e8"]["status"] == "failed" and "diverged" in rows["1e8"]["error"]
    assert rows["0.01"]["status"] == "done"


@pytest.mark.parametrize("argv,message", [
    (["--grid", "lr=0.001,-1"], "trial lr=-1,seed=0: --lr must be a number in (0.0, inf)"),
    (["--grid", "lr"], "expected FLAG=V1,V2"),
    (["--grid", "seed=1,2"], "--seed is set by the sweep itself"),
    (["--seed", "3"], "--seed is set by the sweep for each trial"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--grid", "optimizer=sgd,rmsprop"], "fastlenet train refuses"),
])
def test_bad_sweeps_are_refused_before_anything_is_written(synthetic_idx, tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    code, _, err = run(capsys, *base(synthetic_idx), *argv, "--out", str(out))
    assert code == 2 and message in err and not out.exists()


def test_without_ray_it_says_how_to_install(synthetic_idx, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run(capsys, *base(synthetic_idx), "--out", str(tmp_path / "sweep"))
    assert code == 2 and "pip install 'fastlenet[sweep]'" in err and err.count("\n") == 1
    assert not (tmp_path / "sweep").exists()


def test_plan_and_threads():
    trials = sweep.plan(["--epochs", "1"], sweep.parse_grid(["lr=0.1,0.2", "batch-size=32,64,128"]), 2)
    assert len(trials) == 12 and len({t["name"] for t in trials}) == 12
    assert trials[0]["argv"] == ["--epochs", "1", "--lr", "0.1", "--batch-size", "32", "--seed", "0"]
    assert sweep.threads_per_trial(None, 12, 2) == 1 and sweep.threads_per_trial(None, 1, 8) == 8
    assert sweep.threads_per_trial(3, 12, 2) == 3


def test_the_summary_shows_the_plain_images_under_tta_and_aligns_long_settings():
    from fastlenet.sweep import summary
    rows = [{"status": "done", "test_accuracy": 0.995, "test_accuracy_plain": 0.994, "trial": "seed=0"},
            {"status": "done", "test_accuracy": 0.997, "test_accuracy_plain": "0.992", "trial": "seed=1"}]
    table, best = summary(rows, [])
    head, row = table.splitlines()
    assert "plain images, no tta" in head and "99.60% +- 0.14" in row and "99.30% +- 0.14" in row
    assert abs(head.index("test accuracy") - row.index("99.60%")) <= 1 and best.endswith("(99.60%)")
    grid = [{"status": "done", "test_accuracy": 0.99, "test_accuracy_plain": "", "model": "lenet5-bn-all"},
            {"status": "failed", "model": "lenet5"}]
    lines = summary(grid, ["--model"])[0].splitlines()
    assert "plain images" not in lines[0]
    done, failed = (next(line for line in lines if text in line) for text in ("99.00%", "(no finished"))
    assert done.index("99.00%") - 1 == failed.index("(no finished") == lines[0].index("test accuracy")
