"""Before and after a change: the CLI's training epoch per source tree and model,
each run a fresh `python -m fastlenet.train` process, interleaved, medians.

    FASTLENET_DATA=../shared/datasets python -m benchmarks.tree_epochs \\
        --tree before=/tmp/old --tree after=. --models lenet5 lenet5-bn [--repeats 3]

``--tree NAME=DIR``: a source tree whose extensions are built in place (e.g. a
``git worktree`` of an older commit after ``python setup.py build_ext --inplace``).
The time is the second epoch's (the first includes loading and any compiling), from
the run's metrics.json, on Fashion-MNIST with the dataset's recipe and the model
swapped in.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def epoch_seconds(tree: Path, model: str, args, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "fastlenet.train", "--dataset", "fashion-mnist", "--model", model,
           "--epochs", "2", "--threads", str(args.threads), "--backend", args.backend, "--no-plots",
           "--quiet", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=tree)
    return json.loads((out / "metrics.json").read_text())["epochs"][1]["seconds"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--models", nargs="+", default=["lenet5", "lenet5-bn"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="cython")
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    times = {(t, m): [] for t in trees for m in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for model in args.models:
                for name, tree in trees.items():
                    out = Path(tmp) / f"{name}-{model}-{r}"
                    s = epoch_seconds(Path(tree).resolve(), model, args, out)
                    times[(name, model)].append(s)
                    print(f"  run {r + 1}/{args.repeats} {name} {model}: {s:.2f} s", flush=True)
    first = args.models[0]
    print("\n| tree | " + " | ".join(f"{m} s / epoch" for m in args.models)
          + " | " + " | ".join(f"{m} / {first}" for m in args.models[1:]) + " |")
    print("|---|" + "---|" * (2 * len(args.models) - 1))
    for name in trees:
        med = {m: statistics.median(times[(name, m)]) for m in args.models}
        ratios = [f"{med[m] / med[first]:.2f}x" for m in args.models[1:]]
        print(f"| {name} | " + " | ".join(f"{med[m]:.2f}" for m in args.models) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
