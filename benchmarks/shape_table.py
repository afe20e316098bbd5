"""The shape suite as one table: median ms per backend and its ratio to PyTorch's,
from a pytest-benchmark JSON file.

    pytest --benchmark-only benchmarks/test_bench_shapes.py -k b128_f32 --benchmark-json=shapes.json
    python -m benchmarks.shape_table shapes.json
    python -m benchmarks.shape_table shapes.json --stat min     # each cell's fastest round

The fastest round is the steadier figure where other work shares the machine (a noisy
neighbour moves medians by 1.5x and more; the same run's minima much less).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict

BACKENDS = ("cython", "numba", "numpy")


def rows(doc: dict, stat: str = "median"):
    """group -> {backend: seconds (the rounds' median, or ``stat``)}."""
    table = defaultdict(dict)
    for bench in doc["benchmarks"]:
        backend = re.search(r"\[(\w+)-", bench["name"]).group(1)
        table[bench["group"]][backend] = bench["stats"][stat]
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="a pytest-benchmark JSON file (--benchmark-json)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="each cell's rounds' median, or its fastest round")
    args = p.parse_args(argv)
    stat = args.stat
    try:
        with open(args.json) as f:
            table = rows(json.load(f), stat)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        p.exit(2, f"shape_table: {args.json} is not a pytest-benchmark JSON file of the shape suite: {exc}\n")
    print(f"({stat} of each cell's rounds)")
    print("| case | torch ms | " + " | ".join(f"{b} ms (x torch)" for b in BACKENDS) + " |")
    print("|---|---|" + "---|" * len(BACKENDS))
    ratios = defaultdict(list)
    for group in sorted(table):
        t = table[group]
        torch = t.get("torch")
        cells = []
        for b in BACKENDS:
            if b not in t:
                cells.append("")
                continue
            ratio = t[b] / torch if torch else None
            if ratio:
                ratios[b].append(ratio)
            cells.append(f"{1e3 * t[b]:.2f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        torch_ms = f"{1e3 * torch:.2f}" if torch else "-"
        print(f"| {group.removeprefix('shape ')} | {torch_ms} | " + " | ".join(cells) + " |")
    for b, r in ratios.items():
        gmean = math.exp(sum(map(math.log, r)) / len(r))
        print(f"{b}: geometric mean {gmean:.2f}x PyTorch's time over {len(r)} cases; "
              f"worst {max(r):.2f}x, best {min(r):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
