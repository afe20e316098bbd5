"""One real training epoch per backend and PyTorch, interleaved, median of 3.

    python benchmarks/compare.py                # the table (Fashion-MNIST, batch 256, Adam)
    python benchmarks/compare.py --scaling      # default backend: batch 64..512, 1 vs 2 threads

Each measurement runs in a fresh process (so peak memory is per run) that loads
the data, trains one epoch of LeNet-5 (ReLU, max pool) on all 60,000 training
images and reports the epoch's wall time (data loading excluded).  Runs are
interleaved (numpy, numba, cython, torch, numpy, ...) so that a noisy machine
disturbs every column alike; the table shows medians and ratios to PyTorch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PEAK_GFLOPS = 185.0          # OpenBLAS sgemm on two cores of the 2026-11-23 AMD EPYC (README, Performance)


def epoch_flops(n, batch):
    from benchmarks.workloads import lenet5_step_flops
    full, rest = divmod(n, batch)
    return full * lenet5_step_flops(batch) + (lenet5_step_flops(rest) if rest else 0)


def child(backend, batch, threads, dataset, data_dir):
    """Train one epoch in this process; print a JSON line with the result."""
    import resource

    import numpy as np

    from fastlenet import data, kernels, models, optim
    ds = data.load(dataset, data_dir=data_dir)
    x, y = ds.x_train, ds.y_train
    order = np.random.default_rng(0).permutation(len(x))
    if backend == "torch":
        import torch
        torch.set_num_threads(threads)
        from benchmarks.workloads import torch_lenet5
        net = torch_lenet5(torch)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(xb, yb):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss.backward()
            opt.step()
    else:
        kernels.set_num_threads(threads)
        model = models.build("lenet5", backend=backend, seed=0)
        opt = optim.Adam(model.params, lr=1e-3, backend=backend)

        def step(xb, yb):
            opt.step(model.loss_and_grads(xb, yb)[1])
    warm = np.sort(order[:batch])
    step(x[warm], y[warm])                             # JIT/cache warm-up, not timed
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        idx = np.sort(order[i:i + batch])
        step(x[idx], y[idx])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "n": len(x)}))


def measure(backend, batch, threads, dataset, data_dir):
    cmd = [sys.executable, "-m", "benchmarks.compare", "--child", backend, "--batch-size", str(batch),
           "--threads", str(threads), "--dataset", dataset]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    if out.returncode != 0:
        raise SystemExit(f"{backend} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_backends():
    from fastlenet import kernels
    names = kernels.available()
    try:
        import torch  # noqa: F401
        names.append("torch")
    except ImportError:
        print("note: PyTorch is not installed; its column is left out (pip install torch==2.13.0)")
    return names


def table(args):
    names = args.backends or available_backends()
    runs = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names:
            res = measure(name, args.batch_size, args.threads, args.dataset, args.data_dir)
            runs[name].append(res)
            print(f"  run {r + 1}/{args.repeats} {name:>6}: {res['seconds']:.2f} s", flush=True)
    n = runs[names[0]][0]["n"]
    flops = epoch_flops(n, args.batch_size)
    med = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    base = med.get("torch")
    print(f"\nLeNet-5 (ReLU, max pool), {args.dataset} {n} images, batch {args.batch_size}, Adam, "
          f"{args.threads} threads; median of {args.repeats}; {flops / 1e9:.0f} GFLOP per epoch\n")
    print("| backend | s / epoch (median) | vs PyTorch | GFLOP/s | share of sgemm peak | peak memory |")
    print("|---|---|---|---|---|---|")
    for name in names:
        s = med[name]
        ratio = f"{s / base:.2f}x" if base else "n/a"
        gf = flops / s / 1e9
        peak = max(r["peak_mb"] for r in runs[name])
        print(f"| {name} | {s:.2f} | {ratio} | {gf:.1f} | {100 * gf / PEAK_GFLOPS:.0f}% | {peak:.0f} MB |")


def scaling(args):
    """s / epoch at batch 64..512 with 1 and 2 threads; the two thread counts are
    interleaved run by run, so a noisy stretch of time disturbs both alike."""
    from fastlenet import kernels
    backend = args.backends[0] if args.backends else kernels.default_backend().name
    print(f"\nscaling of the {backend} backend (median of {args.repeats}; s / epoch)\n")
    print("| batch | 1 thread | 2 threads | speed-up |")
    print("|---|---|---|---|")
    for batch in (64, 128, 256, 512):
        times = {1: [], 2: []}
        for _ in range(args.repeats):
            for threads in (1, 2):
                times[threads].append(measure(backend, batch, threads, args.dataset, args.data_dir)["seconds"])
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"| {batch} | {one:.2f} | {two:.2f} | {one / two:.2f}x |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=os.environ.get("FASTLENET_DATA"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", nargs="*", default=None, help="default: every available one and torch")
    p.add_argument("--scaling", action="store_true", help="batch 64..512 x 1/2 threads for one backend")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.batch_size, args.threads, args.dataset, args.data_dir)
    return scaling(args) if args.scaling else table(args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
