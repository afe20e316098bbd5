"""Every writer replaces only regular files it may replace (fastlenet/fileio.py):
never a symlink (or what it points to), a device, a FIFO, a folder or its own input;
the temporary file is unpredictable, exclusive and removed on failure."""
import os
import stat

import pytest

from fastlenet import fileio


def test_writes_and_replaces_a_regular_file_atomically(tmp_path):
    target = tmp_path / "a.bin"
    fileio.atomic_write_bytes(target, b"one")
    fileio.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()     # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]       # no temporary left


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_symlink_target_is_refused_and_what_it_points_to_is_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / "model.onnx"
    link.symlink_to(victim)
    with pytest.raises(fileio.WriteRefused, match="symbolic link"):
        fileio.atomic_write_bytes(link, b"new")
    assert victim.read_bytes() == b"precious" and link.is_symlink()


def test_a_fifo_and_a_folder_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(fileio.WriteRefused, match="a FIFO"):
        fileio.atomic_write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir").mkdir()
    with pytest.raises(fileio.WriteRefused, match="a folder"):
        fileio.atomic_write_bytes(tmp_path / "dir", b"x")


def test_a_device_is_refused():
    with pytest.raises(fileio.WriteRefused, match="a device"):
        fileio.atomic_write_bytes("/dev/null", b"x")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_the_writes_own_input_is_refused_even_by_another_name(tmp_path):
    source = tmp_path / "best.npz"
    source.write_bytes(b"weights")
    alias = tmp_path / "alias.npz"
    os.link(source, alias)
    for target in (source, alias, tmp_path / "." / "best.npz"):
        with pytest.raises(fileio.WriteRefused, match="input being read"):
            fileio.atomic_write_bytes(target, b"x", sources=[source])
    assert source.read_bytes() == b"weights"


def test_a_planted_temporary_name_cannot_redirect_the_write(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    # the old predictable name (.NAME.PID.tmp) planted as a symlink to a victim
    (tmp_path / f".out.bin.{os.getpid()}.tmp").symlink_to(victim)
    fileio.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert victim.read_bytes() == b"precious" and (tmp_path / "out.bin").read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"old")

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        fileio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


def test_export_refuses_to_overwrite_its_checkpoint(synthetic_idx, tmp_path, capsys):
    pytest.importorskip("onnx")
    from fastlenet import export, train
    out = tmp_path / "run"
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 0
    ckpt = out / "best.npz"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert export.main([str(ckpt), str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert "input being read" in err and len(err.splitlines()) == 1
    assert ckpt.read_bytes() == before
    assert export.main([str(ckpt), "/dev/null"]) == 2
    assert "a device" in capsys.readouterr().err
    assert export.main([str(ckpt), str(tmp_path / "model.onnx")]) == 0     # a regular target still works


def test_a_second_training_into_a_locked_run_directory_is_refused_naming_the_process(tmp_path):
    from fastlenet.rundir import RunDirectory, RunDirectoryError
    first = RunDirectory(tmp_path / "run").create()
    with pytest.raises(RunDirectoryError, match=f"another training \\(pid {os.getpid()}\\)"):
        RunDirectory(tmp_path / "run").lock()
    first.unlock()
    RunDirectory(tmp_path / "run").lock().unlock()          # free again once released


def test_the_lock_is_released_when_the_holder_dies(tmp_path):
    import subprocess
    import sys
    code = ("import sys, time; from fastlenet.rundir import RunDirectory; "
            "RunDirectory(sys.argv[1]).create(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        from fastlenet.rundir import RunDirectory, RunDirectoryError
        with pytest.raises(RunDirectoryError, match=f"pid {holder.pid}"):
            RunDirectory(tmp_path / "run").lock()
    finally:
        holder.kill()
        holder.wait()
    RunDirectory(tmp_path / "run").lock().unlock()          # SIGKILL released it


def test_out_into_a_folder_with_foreign_run_files_is_refused_and_they_are_untouched(synthetic_idx, tmp_path, capsys):
    from fastlenet import train
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "own config"}')
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds config.json" in err and len(err.splitlines()) == 1
    assert (out / "config.json").read_text() == '{"my": "own config"}'


def test_a_run_that_never_finished_an_epoch_can_be_started_over(synthetic_idx, tmp_path):
    from fastlenet import train
    from fastlenet.rundir import RunDirectory
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"settings": {}, "versions": {}}')    # what a killed start leaves
    assert RunDirectory(out).create().unlock() is None
    assert train.main(["--dataset", "idx", "--data-dir", str(synthetic_idx), "--out", str(out),
                       "--epochs", "1", "--no-plots", "--quiet"]) == 0
