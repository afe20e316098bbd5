"""The README's published-setups table: each named recipe trained with seeds 0..N-1,
test accuracy per seed and the mean, as a Markdown table.

    FASTLENET_DATA=../shared/datasets python benchmarks/recipe_table.py --seeds 2

Each run is ``python -m fastlenet.train --recipe NAME --seed S`` in a fresh process
(``fastlenet.sweep.run_trial``), one after another (2 threads each by default); run
directories go under --out.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from fastlenet.sweep import run_trial

PUBLISHED = ["fashion-sigmoid-maxpool-sgd", "fashion-relu-avgpool-adam", "fashion-sigmoid-avgpool-adam",
             "mnist-bn-plateau", "mnist-1998-c5-sgd"]


def run(recipe: str, seed: int, out: Path, threads: int) -> dict:
    """One recipe and seed, as a sweep trial (a finished run directory is read, not retrained)."""
    result = run_trial(["--recipe", recipe, "--seed", str(seed)], str(out / f"{recipe}-seed{seed}"), threads)
    if result["status"] == "failed":
        raise SystemExit(f"{recipe} seed {seed}: {result['error']}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--recipes", nargs="*", default=PUBLISHED)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/recipes", help="run directories (finished runs are reused)")
    args = p.parse_args()
    out = Path(args.out)
    started = time.time()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {args.threads} threads")
    print("| recipe | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean | epochs run |")
    print("|---" * (args.seeds + 3) + "|")
    for recipe in args.recipes:
        results = [run(recipe, seed, out, args.threads) for seed in range(args.seeds)]
        accs = [100 * r["test_accuracy"] for r in results]
        epochs = "/".join(str(r["epochs"]) for r in results)
        print(f"| `{recipe}` | " + " | ".join(f"{a:.2f}%" for a in accs) +
              f" | **{sum(accs) / len(accs):.2f}%** | {epochs} |", flush=True)
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
