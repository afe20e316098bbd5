"""Why fastlenet's thread governor, measured: the cython epoch with 2 threads fixed, 1 thread,
and governed (fastlenet.governor), quiet and beside 2 CPU-bound processes started in
sessions of their own and in this session (benchmarks/load.py), interleaved, medians.

    FASTLENET_DATA=../shared/datasets python -m benchmarks.governor_table [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.compare import measure
from benchmarks.load import competing_load

CASES = (("2 threads fixed", 2, True), ("1 thread", 1, True), ("governed", 2, False))
LOADS = (("quiet", 0, "own"), ("2 CPU hogs, other sessions", 2, "own"), ("2 CPU hogs, same session", 2, "same"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=os.environ.get("FASTLENET_DATA"))
    args = p.parse_args(argv)
    times = {(load, case): [] for load, _, _ in LOADS for case, _, _ in CASES}
    for r in range(args.repeats):
        for load, n, session in LOADS:
            for case, threads, fixed in CASES:
                with competing_load(n, "cpu", args.data_dir, session=session):
                    s = measure("cython", 256, threads, args.dataset, args.data_dir, fixed)["seconds"]
                times[(load, case)].append(s)
                print(f"  run {r + 1}/{args.repeats} {load} / {case}: {s:.2f} s", flush=True)
    print("\n| | " + " | ".join(c for c, _, _ in CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    for load, _, _ in LOADS:
        cells = [f"{statistics.median(times[(load, c)]):.2f} s" for c, _, _ in CASES]
        print(f"| {load} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
