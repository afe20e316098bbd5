"""Long fuzzing campaign of the IDX reader and the checkpoint loader.

    python tests/fuzz_campaign.py --cases 100000 [--seed 0]

Each case mutates a valid file (random bytes, bit flips, truncation, a crafted
header with huge or zero dimensions or a wrong type code) and loads it.  The
outcome must be a successful load or the project's own error (IDXError /
CheckpointError); anything else is printed and counted as a failure.  Exit
status 1 if any case failed.
"""
import argparse
import gzip
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from fastlenet import checkpoint, data, models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import print_outcomes  # noqa: E402


def mutate(rng, blob):
    kind = rng.integers(0, 4)
    b = bytearray(blob)
    if kind == 0:                                           # bit flips
        for _ in range(rng.integers(1, 5)):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
        return "flip", bytes(b)
    if kind == 1:                                           # truncation
        return "truncate", bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 2:                                           # random bytes
        return "random", rng.bytes(int(rng.integers(0, 400)))
    # crafted header: any type code, rank 0..5, huge or zero dimensions
    rank = int(rng.integers(0, 6))
    dims = rng.choice([0, 1, 28, 60000, 10**9, 2**32 - 1], size=rank).astype(">u4")
    head = bytes([0, 0, int(rng.integers(0, 256)), rank]) + dims.tobytes() + rng.bytes(int(rng.integers(0, 64)))
    return "header", head if rng.random() < 0.5 else gzip.compress(head)


def run(cases, seed):
    rng = np.random.default_rng(seed)
    idx_raw = data.encode_idx(np.arange(3 * 6 * 5, dtype=np.uint8).reshape(3, 6, 5))
    seeds = {"idx": idx_raw, "idx.gz": gzip.compress(idx_raw, mtime=0)}
    outcomes, failures = Counter(), 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ck = tmp / "good.npz"
        checkpoint.save(ck, models.build("lenet5", backend="numpy"), {"epoch": 1})
        seeds["checkpoint"] = ck.read_bytes()
        path = tmp / "case"
        t0 = time.perf_counter()
        for i in range(cases):
            target = ("idx", "idx.gz", "checkpoint")[i % 3]
            kind, blob = mutate(rng, seeds[target])
            path.write_bytes(blob)
            try:
                if target == "checkpoint":
                    checkpoint.load_model(path, backend="numpy")
                else:
                    data.read_idx(path)
                outcomes[(target, "loaded")] += 1
            except (data.IDXError, checkpoint.CheckpointError):
                outcomes[(target, "refused")] += 1
            except Exception:                              # noqa: BLE001 - that is what we look for
                failures += 1
                outcomes[(target, "OTHER")] += 1
                print(f"case {i} ({target}, {kind}): unexpected exception", file=sys.stderr)
                traceback.print_exc()
        seconds = time.perf_counter() - t0
    print(f"{cases} cases in {seconds:.0f} s (seed {seed})")
    return print_outcomes(outcomes, failures, seed)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=100000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    sys.exit(run(a.cases, a.seed))
