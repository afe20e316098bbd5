"""The OpenMP wait policy fastlenet sets at import (fastlenet/runtime.py), the machine
probes the benchmarks use (csrc/peak.h, benchmarks/peaks.py) and the competing load
of `compare.py --load` (benchmarks/load.py).  Each import check runs in a fresh
interpreter: libgomp reads its environment once per process."""
import json
import os
import subprocess
import sys
import time

import pytest

from checks import COMPILED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import json, os, fastlenet.kernels, fastlenet.runtime as r; "
         "print(json.dumps(dict(r.status(), env=os.environ.get('GOMP_SPINCOUNT'))))")


def fresh_status(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTLENET_SPINCOUNT")}
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=clean, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_import_sets_a_short_spin_for_this_process_and_its_children():
    from fastlenet import runtime
    got = fresh_status()
    assert got["env"] == str(runtime.SPIN_COUNT) and got["set_by"] == "fastlenet" and got["effective"] == "yes"


@pytest.mark.parametrize("key,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "123")])
def test_the_users_own_setting_wins(key, value):
    got = fresh_status(**{key: value})
    assert got["set_by"] == "user" and got[key] == value
    if key == "OMP_WAIT_POLICY":
        assert got["env"] is None                    # nothing added beside the user's policy


def test_fastlenet_spincount_replaces_or_keeps_the_default():
    assert fresh_status(FASTLENET_SPINCOUNT="2500")["env"] == "2500"
    kept = fresh_status(FASTLENET_SPINCOUNT="libgomp")
    assert kept["env"] is None and kept["set_by"] == "FASTLENET_SPINCOUNT"


def test_a_bad_fastlenet_spincount_names_the_variable():
    env = dict(os.environ, FASTLENET_SPINCOUNT="fast")
    env.pop("GOMP_SPINCOUNT", None)
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", "import fastlenet"], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "FASTLENET_SPINCOUNT must be a whole number" in out.stderr


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_the_fma_probe_counts_its_flops():
    from fastlenet.kernels import _cy_probe
    flops, checksum = _cy_probe.fma_flops(1000, 2)
    assert flops == 2.0 * 12 * _cy_probe.LANES * 1000 * 2
    assert checksum == checksum and checksum > 0       # finite, the loop really ran
    assert _cy_probe.isa() in ("avx512f", "avx2+fma", "avx", "sse2", "generic")


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_the_peaks_are_measured_and_described():
    sys.path.insert(0, ROOT)
    from benchmarks import peaks
    peaks.FMA_SECONDS, peaks.TRIES = 0.02, 1
    got = peaks.measure(1)
    assert got["fma_gflops"] > 0 and got["sgemm_gflops"] > 0
    assert "FMA peak" in peaks.describe(got) and got["cpu"]


def test_competing_load_runs_for_the_block_and_is_killed_after():
    sys.path.insert(0, ROOT)
    from benchmarks.load import competing_load
    with competing_load(2, settle=0.1) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    deadline = time.time() + 5
    while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(ValueError, match="unknown load kind"):
        with competing_load(1, "gpu"):
            pass
