"""Every numeric flag is checked before anything is created: a bad value is a one-line
error that names the flag, exit code 2, and no run directory is left behind."""
import pytest

from fastlenet import train

BAD = [
    (["--lr-list", ","], "--lr-list"), (["--lr-list", "0.001,nan"], "--lr-list"),
    (["--lr-list", "0.01,-1"], "--lr-list"), (["--max-shift", "-1"], "--max-shift"),
    (["--max-shift", "100"], "--max-shift"), (["--seed", "-1"], "--seed"),
    (["--momentum", "nan"], "--momentum"), (["--momentum", "1"], "--momentum"),
    (["--lr", "inf"], "--lr"), (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--label-smoothing", "1"], "--label-smoothing"), (["--gamma", "0"], "--gamma"),
    (["--plateau-factor", "1.5"], "--plateau-factor"), (["--min-delta", "nan"], "--min-delta"),
    (["--val-split", "nan"], "--val-split"), (["--step-size", "0"], "--step-size"),
]


@pytest.mark.parametrize("flags,name", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_a_bad_number_is_refused_up_front_naming_its_flag(synthetic_idx, tmp_path, capsys, flags, name):
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"] + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name in err, err
    assert not out.exists()


@pytest.mark.parametrize("flags,what", [
    (["--limit", "10", "--val-split", "0.95"], "no training images"),
    (["--val-split", "0.0001", "--early-stopping", "1"], "no validation images"),
    (["--limit", "10", "--val-split", "0.95", "--standardize"], "no training images"),   # no NumPy warning first
])
@pytest.mark.filterwarnings("error")
def test_an_empty_split_is_refused_before_the_run_directory_exists(synthetic_idx, tmp_path, capsys, flags, what):
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"] + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and what in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_a_data_error_leaves_no_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(["--dataset", "idx", "--data-dir", str(tmp_path / "nothing-here"), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"])
    assert code == 2 and not out.exists()


def test_messages_blame_the_right_thing(tmp_path, monkeypatch, capsys):
    from fastlenet import evaluate
    (tmp_path / "best.npz").mkdir()
    assert evaluate.main([str(tmp_path / "best.npz"), "--dataset", "mnist"]) == 2
    assert "is a folder, not a checkpoint file" in capsys.readouterr().err
    monkeypatch.setenv("FASTLENET_BACKEND", "nonsense")
    assert evaluate.main([str(tmp_path / "best.npz"), "--dataset", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "FASTLENET_BACKEND='nonsense' is not a kernel backend" in err and "model config" not in err
