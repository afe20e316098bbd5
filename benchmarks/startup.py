"""Start-up latency of `python -m fastlenet.train`: seconds from process start to
the end of the first training batch, per backend, with a cold Numba cache (compiled
by the training process alone, then with its compile helper, numba_warmup) and a
warm one (the Cython backend has nothing to compile).

    FASTLENET_DATA=../shared/datasets python benchmarks/startup.py
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def first_batch(backend, cache_dir, tmp, helper="1"):
    """Seconds to the first batch's end of fastlenet from this script's own tree (run in
    ``tmp``: ``python -m`` would put the current folder's tree first on the path)."""
    out = Path(tmp) / f"run-{backend}-{len(os.listdir(tmp))}"
    path = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTLENET_NUMBA_HELPER=helper, PYTHONPATH=path)
    if env.get("FASTLENET_DATA"):
        env["FASTLENET_DATA"] = os.path.abspath(env["FASTLENET_DATA"])     # relative to here, not to tmp
    cmd = [sys.executable, "-m", "fastlenet.train", "--dataset", "fashion-mnist", "--limit", "512",
           "--epochs", "1", "--batch-size", "256", "--val-split", "0", "--no-plots", "--quiet",
           "--backend", backend, "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=tmp)
    return json.loads((out / "metrics.json").read_text())["first_batch_seconds"]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba-cache"
        rows = [("numba", "cold cache, one process (FASTLENET_NUMBA_HELPER=0)",
                 first_batch("numba", Path(tmp) / "cold-cache", tmp, helper="0")),
                ("numba", "cold cache, with the compile helper (the default)", first_batch("numba", cache, tmp)),
                ("numba", "warm cache", first_batch("numba", cache, tmp)),
                ("cython", "(AOT)", first_batch("cython", cache, tmp)),
                ("numpy", "(reference)", first_batch("numpy", cache, tmp))]
    print("| backend | numba cache | first batch after (s) |")
    print("|---|---|---|")
    for backend, state, seconds in rows:
        print(f"| {backend} | {state} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
