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


def first_batch(backend, cache_dir, tmp, helper="1"):
    out = Path(tmp) / f"run-{backend}-{len(os.listdir(tmp))}"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTLENET_NUMBA_HELPER=helper)
    cmd = [sys.executable, "-m", "fastlenet.train", "--dataset", "fashion-mnist", "--limit", "512",
           "--epochs", "1", "--batch-size", "256", "--val-split", "0", "--no-plots", "--quiet",
           "--backend", backend, "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
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
