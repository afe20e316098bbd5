"""Checkpoints: round trip, refusal of pickled content (without running it),
config mismatches named, atomic writes that survive a failing write and a
SIGKILL mid-write."""
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fastlenet import checkpoint, models, optim
from fastlenet.checkpoint import CheckpointError


def saved(tmp_path, name="lenet5-bn"):
    model = models.build(name, backend="numpy", seed=2)
    opt = optim.Adam(model.params, lr=1e-3)
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    opt.step(model.loss_and_grads(x, np.arange(4))[1])
    path = checkpoint.save(tmp_path / "c.npz", model, {"epoch": 3, "class_names": list("abcdefghij")}, opt)
    return model, opt, path


def test_round_trip(tmp_path):
    model, opt, path = saved(tmp_path)
    loaded, ckpt = checkpoint.load_model(path)
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    for k in model.buffers:
        np.testing.assert_array_equal(loaded.buffers[k], model.buffers[k])
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["model"]["name"] == "lenet5-bn"
    opt2 = optim.Adam(loaded.params, lr=0.5)
    checkpoint.load_optimizer_state(path, ckpt, opt2)
    assert opt2.steps == 1 and opt2.lr == 1e-3
    np.testing.assert_array_equal(opt2.v["dense1.w"], opt.v["dense1.w"])


class Trap:
    """Unpickling this would create a file: proof that code ran."""
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_object_is_refused_without_running_it(tmp_path):
    import pickle  # only here, to build the malicious file; fastlenet never imports it
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([Trap(str(target))], dtype=object), allow_pickle=True)
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.npy", buf.getvalue())
        z.writestr("param/conv2d1.w.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_model(path)
    assert not target.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Trap(str(target))))
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        checkpoint.load_model(raw)
    assert not target.exists()


def rewrite(path, out, change):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("param/dense1.w"), "missing parameter 'dense1.w'"),
    (lambda a: a.__setitem__("param/extra.w", np.zeros(3, np.float32)), "unexpected parameter 'extra.w'"),
    (lambda a: a.__setitem__("param/dense1.w", np.zeros((5, 5), np.float32)), r"'dense1.w' has shape \(5, 5\), the model config needs \(576, 120\)"),
    (lambda a: a.__setitem__("param/dense1.b", np.zeros(120, np.float64)), "'dense1.b' has dtype float64"),
    (lambda a: a.__setitem__("param/dense1.b", np.full(120, np.nan, np.float32)), "NaN or infinite"),
    (lambda a: a.pop("buffer/batchnorm1.running_mean"), "missing buffer"),
    (lambda a: a.pop("meta"), "no 'meta' entry"),
    (lambda a: a.__setitem__("meta", np.frombuffer(b"{not json", np.uint8)), "corrupt 'meta' JSON"),
    (lambda a: a.__setitem__("weird", np.zeros(1)), "unexpected entry 'weird'"),
])
def test_mismatches_are_named(tmp_path, change, message):
    _, _, path = saved(tmp_path)
    bad = rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_model(bad)


def test_wrong_model_config_is_named(tmp_path):
    _, _, path = saved(tmp_path)
    import json
    def change(a):
        meta = json.loads(a["meta"].tobytes())
        meta["model"]["spec"] = models.read_spec("lenet5")      # another network's model file
        a["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    bad = rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match="does not match its model config: unexpected parameter 'batchnorm1.beta'.*and [0-9]+ more"):
        checkpoint.load_model(bad)


def test_truncated_and_garbage_files(tmp_path):
    _, _, path = saved(tmp_path)
    blob = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError):
        checkpoint.load_model(tmp_path / "t.npz")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load_model(tmp_path / "missing.npz")


def test_a_failing_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, path = saved(tmp_path)
    before = path.read_bytes()
    import errno
    real_replace = os.replace
    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, model, {}, opt)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]      # no temporary left behind


KILLER = r"""
import sys, numpy as np
from fastlenet import checkpoint, models
model = models.build("lenet5", backend="numpy", seed=9)
model.params["dense1.w"][...] = 7.0
print("ready", flush=True)
while True:                                   # rewrite until killed
    checkpoint.save(sys.argv[1], model, {"epoch": 99})
"""


def test_sigkill_mid_write_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import time
    path = tmp_path / "last.npz"
    model = models.build("lenet5", backend="numpy", seed=1)
    checkpoint.save(path, model, {"epoch": 1})
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * trial)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded, ckpt = checkpoint.load_model(path)           # old or new, never torn
        assert ckpt.meta["epoch"] in (1, 99)


def test_mangled_npy_header_is_refused(tmp_path):
    """Found by the fuzz campaign: a bit flip in an .npy header made NumPy raise
    SyntaxError, and one in the zip directory NotImplementedError."""
    _, _, path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    name = next(n for n in members if n.startswith("param/"))
    members[name] = members[name].replace(b"'descr':", b"'descr'(:", 1)
    bad = tmp_path / "mangled.npz"
    with zipfile.ZipFile(bad, "w") as z:
        for n, blob in members.items():
            z.writestr(n, blob)
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        checkpoint.load_model(bad)
    blob = bytearray(path.read_bytes())
    central = blob.rfind(b"PK\x01\x02")
    blob[central + 6] = 109                                   # "version needed to extract" 10.9
    (tmp_path / "version.npz").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        checkpoint.load_model(tmp_path / "version.npz")


def test_a_small_file_claiming_gigabytes_is_refused_before_inflating(tmp_path):
    import resource
    import zipfile
    _, _, path = saved(tmp_path)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        with dst.open("param/extra.w.npy", "w", force_zip64=True) as f:    # 2 GiB of zeros, ~2 MB deflated
            from numpy.lib import format as npy
            npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 29,)})
            chunk = bytes(1 << 24)
            for _ in range(128):
                f.write(chunk)
    assert bomb.stat().st_size < 5_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="claim more than"):
        checkpoint.load_model(bomb)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb


def test_a_member_holding_more_bytes_than_its_header_says_is_refused(tmp_path):
    import zipfile
    _, _, path = saved(tmp_path)
    bad = tmp_path / "long.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data + bytes(1 << 20) if info.filename == "param/dense1.b.npy" else data)
    with pytest.raises(CheckpointError, match="'param/dense1.b' holds"):
        checkpoint.load_model(bad)
