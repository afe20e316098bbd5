"""The Numba backend's first run on two processes (fastlenet.kernels.numba_warmup):
the recorded kernel list is current, its file is read strictly, the helper fills
Numba's cache with exactly what the training process then loads, and it stops."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
from numba.core import types  # noqa: E402

from fastlenet import governor, kernels, models  # noqa: E402
from fastlenet.kernels import numba_warmup as w  # noqa: E402

RECORD = "python -m fastlenet.kernels.numba_warmup --record"


def test_the_manifest_was_recorded_from_these_sources():
    doc = w.read_manifest()
    assert doc["sources"] == w.source_fingerprint(), f"kernel sources changed since the last recording: run {RECORD}"
    names = {entry["name"] for entry in doc["networks"].values()}
    assert names == set(models.PRESETS)


def test_a_fresh_recording_of_lenet5_matches_the_manifest():
    doc = w.record_preset("lenet5")                  # on an empty cache, whatever the tests' cache holds
    assert doc["key"] == w.spec_key(models.build("lenet5").to_spec())
    assert w.read_manifest()["networks"][doc["key"]]["kernels"] == doc["kernels"]
    kernels = [name for _, name, _ in doc["kernels"]]
    assert kernels[0] == "forward_direct" and kernels[-1] == "_adam_block"       # call order: forward first


def test_the_key_ignores_name_and_description_only():
    spec = models.build("lenet5").to_spec()
    renamed = dict(spec, name="mine", description="the same layers")
    assert w.spec_key(renamed) == w.spec_key(spec)
    assert w.spec_key(models.build("lenet5", activation="tanh").to_spec()) != w.spec_key(spec)


@pytest.mark.parametrize("t", [types.Array(types.float32, 4, "C"), types.Array(types.int32, 1, "A"),
                               types.Array(types.float64, 2, "F", readonly=True), types.int64, types.float64,
                               types.boolean, types.none])
def test_argument_types_round_trip(t):
    assert w.type_from_json(json.loads(json.dumps(w.type_to_json(t)))) == t


@pytest.mark.parametrize("t", [types.UniTuple(types.int64, 2), types.Array(types.complex64, 1, "C"),
                               types.Array(types.float32, 2, "C", aligned=False), types.unicode_type])
def test_other_argument_types_are_not_recorded(t):
    with pytest.raises(ValueError, match="not recorded"):
        w.type_to_json(t)


@pytest.mark.parametrize("doc", [["array", "object", 1, "C", False], ["array", "float32", 99, "C", False],
                                 ["array", "float32", True, "C", False], ["array", "float32", 1, "X", False],
                                 ["array", "float32", 1, "C", 0], ["array", "none", 1, "C", False], ["complex128"],
                                 "int64", {"array": 1}, [], None])
def test_the_manifest_holds_nothing_but_recorded_types(doc):
    with pytest.raises(w.ManifestError, match="not an argument type"):
        w.type_from_json(doc)


@pytest.mark.parametrize("module,name", [("os", "system"), ("numba_backend", "np"), ("numba_backend", "nope"),
                                         ("../../x", "y"), (3, "forward_direct")])
def test_only_fastlenet_kernels_are_named(module, name):
    with pytest.raises(w.ManifestError):
        w.kernel(module, name)


@pytest.mark.parametrize("text,match", [("{", "not JSON"),
                                        ('{"format": "other", "networks": {}, "sources": "", "numba": ""}',
                                         "not a fastlenet-numba-warmup file"),
                                        ('[1, 2]', "not a fastlenet-numba-warmup"),
                                        ('{"format": "fastlenet-numba-warmup", "sources": "", "numba": "", "networks": '
                                         '{"k": {"kernels": [["a", "b"]]}}}', "no valid kernel list")])
def test_a_damaged_manifest_is_refused(tmp_path, text, match):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(w.ManifestError, match=match):
        w.read_manifest(path)
    assert w.network_kernels(models.build("lenet5").to_spec(), path) is None


def test_a_huge_manifest_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "m.json"
    with open(path, "wb") as f:
        f.truncate(w.MAX_MANIFEST_BYTES + 10)
    with pytest.raises(w.ManifestError, match="larger than"):
        w.read_manifest(path)


def _manifest(tmp_path, kernels, **changes):
    spec = models.build("lenet5").to_spec()
    networks = {w.spec_key(spec): {"name": "lenet5", "kernels": kernels}}
    path = tmp_path / "m.json"
    w.write_manifest(networks, path)
    if changes:
        path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))
    return spec, path


ROUND16 = ["_numba_loops", "round16", [["int64"]]]


def test_a_manifest_from_other_sources_is_not_used(tmp_path):
    spec, path = _manifest(tmp_path, [ROUND16])
    assert [name for _, name in [(d, d.py_func.__name__) for d, _ in w.network_kernels(spec, path)]] == ["round16"]
    spec, path = _manifest(tmp_path, [ROUND16], sources="0" * 20)
    assert w.network_kernels(spec, path) is None
    spec, path = _manifest(tmp_path, [ROUND16], numba="0.1")
    assert w.network_kernels(spec, path) is None
    assert w.network_kernels(models.build("lenet5", pool="avg").to_spec(), w.MANIFEST) is None or \
        "lenet5" not in {e["name"] for e in w.read_manifest()["networks"].values()}


def test_the_helper_fills_the_cache_the_trainer_then_reads(tmp_path):
    _, path = _manifest(tmp_path, [ROUND16, ["_numba_loops", "row_offsets", [["int64"], ["int64"]]]])
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    key = next(iter(json.loads(path.read_text())["networks"]))
    subprocess.run([sys.executable, "-m", "fastlenet.kernels.numba_warmup", "--manifest", str(path), key],
                   check=True, env=env, timeout=600)
    assert sorted(p.name.split("-")[0] for p in cache.rglob("*.nbi")) == ["_numba_loops.round16",
                                                                         "_numba_loops.row_offsets"]
    check = ("from fastlenet.kernels import _numba_loops as k; k.round16(5); k.row_offsets(3, 4); "
             "f = (k.round16, k.row_offsets); "
             "print(sum(sum(d.stats.cache_hits.values()) for d in f), "
             "sum(sum(d.stats.cache_misses.values()) for d in f))")
    out = subprocess.run([sys.executable, "-c", check], check=True, env=env, capture_output=True, text=True,
                         timeout=600).stdout.split()
    assert out == ["2", "0"], out                  # both loaded from the helper's cache, none compiled


def test_the_helper_stops_when_its_parent_is_gone():
    entries = [ROUND16]
    assert w.compile_from_far_end(entries, parent=os.getpid() + 10**6) == 0
    assert w.compile_from_far_end(entries, parent=os.getppid()) == 1


def test_no_helper_on_one_cpu_beside_busy_ones_or_when_switched_off(tmp_path, monkeypatch):
    # (all kernels cached: the caller starts none, tests/test_cli.py)
    spec, path = _manifest(tmp_path, [ROUND16])
    started = []
    monkeypatch.setattr(w.subprocess, "Popen", lambda *a, **k: started.append(a) or "proc")
    monkeypatch.setattr(kernels, "usable_cpus", lambda: 2)
    monkeypatch.setattr(governor, "runnable_tasks", lambda: 1)                 # only the reader runs
    assert w.start_helper(spec, path) == "proc" and started[0][0][-1] == w.spec_key(spec)
    monkeypatch.setenv("FASTLENET_NUMBA_HELPER", "0")
    assert w.start_helper(spec, path) is None
    monkeypatch.delenv("FASTLENET_NUMBA_HELPER")
    monkeypatch.setattr(kernels, "usable_cpus", lambda: 1)
    assert w.start_helper(spec, path) is None
    monkeypatch.setattr(kernels, "usable_cpus", lambda: 2)
    monkeypatch.setattr(governor, "runnable_tasks", lambda: 2)                 # one CPU-bound neighbour
    assert w.free_cpus() == 1 and w.start_helper(spec, path) is None
    monkeypatch.setenv("FASTLENET_NUMBA_HELPER", "1")
    assert w.start_helper(spec, path) == "proc"
    monkeypatch.delenv("FASTLENET_NUMBA_HELPER")
    monkeypatch.setattr(governor, "runnable_tasks", lambda: None)              # no /proc/loadavg
    assert w.free_cpus() == 2
    assert len(started) == 2


def _running_helpers():
    """The command lines of processes running a ``numba_warmup`` helper (none outlive their trainer)."""
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "fastlenet.kernels.numba_warmup" in text and "--parent" in text:
            alive.append(text)
    return alive


def test_a_cold_cli_run_with_its_helper_trains(synthetic_idx, tmp_path):
    if w.read_manifest()["numba"] != w.numba_version():
        pytest.skip(f"the kernels were recorded with numba {w.read_manifest()['numba']}: no helper on this one")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env["FASTLENET_NUMBA_HELPER"] = "1"               # even when the machine running the tests is busy
    proc = subprocess.Popen([sys.executable, "-m", "fastlenet.train", "--dataset", "idx", "--data-dir",
                             str(synthetic_idx), "--backend", "numba", "--epochs", "1", "--no-plots",
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    assert _running_helpers() == []                             # the trainer ended its helper
    assert "test accuracy" in stdout
    assert "compiling the kernels it uses (about 6 s, on two processes" in stdout
    recorded = {name for _, name, _ in w.read_manifest()["networks"][w.spec_key(
        models.build("lenet5").to_spec())]["kernels"]}
    cached = {p.name.split("-")[0].split(".")[-1] for p in (tmp_path / "cache").rglob("*.nbi")}
    assert recorded <= cached
