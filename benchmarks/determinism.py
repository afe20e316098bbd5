"""What is reproducible, measured: the same recipe trained by several builds and thread
counts, each in its own process, compared by test accuracy and by a hash of the final
weights (bit-identical or not).

    FASTLENET_DATA=../shared/datasets python -m benchmarks.determinism --dataset mnist \\
        --tree native=. --tree portable=/tmp/portable --threads 2 1 [--epochs 20]

``--tree NAME=DIR``: a source tree whose extensions are built in place (for example a
copy built with ``FASTLENET_PORTABLE=1 python setup.py build_ext --inplace``).  Each
(tree, threads) pair runs twice, so a run-to-run difference would show as well.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WEIGHTS_HASH = ("import hashlib, sys, numpy as np; from fastlenet import checkpoint; "
                "m, _ = checkpoint.load_model(sys.argv[1], backend='numpy'); "
                "print(hashlib.sha256(np.ascontiguousarray(m.flat_params).tobytes()).hexdigest()[:16])")


def train(tree: Path, threads: int, args, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(out.parent / "numba-cache"))
    cmd = [sys.executable, "-m", "fastlenet.train", "--dataset", args.dataset, "--threads", str(threads),
           "--backend", args.backend, "--no-plots", "--quiet", "--out", str(out)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=tree)
    metrics = json.loads((out / "metrics.json").read_text())
    digest = subprocess.run([sys.executable, "-c", WEIGHTS_HASH, str(out / "best.npz")], env=env,
                            capture_output=True, text=True, check=True, cwd=tree).stdout.strip()
    return {"accuracy": metrics["test_accuracy"], "hash": digest, "seconds": metrics["train_seconds"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--backend", default="cython")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree) or {"native": "."}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                for threads in args.threads:
                    out = Path(tmp) / f"{name}-{threads}-{repeat}"
                    r = train(Path(tree).resolve(), threads, args, out)
                    rows.append((name, threads, repeat, r))
                    print(f"{name:<10} threads {threads}  run {repeat + 1}  test accuracy {100 * r['accuracy']:.2f}%  "
                          f"weights {r['hash']}  {r['seconds']:.0f} s", flush=True)
    accs = np.array([r["accuracy"] for *_, r in rows])
    print(f"distinct weight hashes: {len({r['hash'] for *_, r in rows})} of {len(rows)} runs; "
          f"test accuracy {100 * accs.min():.2f}..{100 * accs.max():.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
