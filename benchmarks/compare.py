"""One real training epoch per backend and per installed peer, interleaved, medians.

    python -m benchmarks.compare                  # the table (Fashion-MNIST, batch 256, Adam)
    python -m benchmarks.compare --load 2         # ... and each run again beside 2 CPU-bound processes
    python -m benchmarks.compare --load 1 --load-kind fastlenet   # beside a second fastlenet training
    python -m benchmarks.compare --scaling        # default backend: batch 64..512, 1 vs 2 threads
    python -m benchmarks.compare --model cifar-cnn --batch-size 128   # another network vs PyTorch

Each measurement runs in a fresh process (so peak memory is per run) that loads the
data, warms up (JIT compilation, ``torch.compile``, XLA: the first batch and the
last, shorter one, timed separately as "warm-up"), then trains one epoch of LeNet-5
(ReLU, max pool) on all 60,000 training images, in the same pre-shuffled batches
for everyone, and reports the epoch's wall time.  Runs are interleaved (numba,
cython, torch, ..., numba, ...), and with ``--load`` each quiet run is followed by
the same run under load, so a noisy stretch of time disturbs every column alike.
The machine's FMA and sgemm peaks are measured in the same run (benchmarks/peaks.py).
Peers (benchmarks/peers.py) run with their own default OpenMP settings, as their
users get them; fastlenet runs with its own (fastlenet/runtime.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def epoch_flops(n, batch, model="lenet5"):
    from benchmarks import networks
    net = networks.build(model, "numpy")
    full, rest = divmod(n, batch)
    return full * networks.step_flops(net, batch) + (networks.step_flops(net, rest) if rest else 0)


def fastlenet_epoch(backend, threads, fixed_threads=False, model="lenet5"):
    """The epoch as ``fastlenet train`` runs it: its thread governor on unless ``fixed_threads``."""
    from benchmarks import networks
    from fastlenet import kernels, optim
    from fastlenet.governor import ThreadGovernor
    kernels.set_num_threads(threads)
    model = networks.build(model, backend)
    opt = optim.Adam(model.params, lr=1e-3, backend=backend)
    governor = None if fixed_threads or threads == 1 else ThreadGovernor(threads, kernels.usable_cpus())

    def epoch(x, y, batch):
        for i in range(0, len(x), batch):
            t0 = time.perf_counter()
            opt.step(model.loss_and_grads(x[i:i + batch], y[i:i + batch])[1])
            if governor is not None:
                governor.record(len(x[i:i + batch]), time.perf_counter() - t0)
    return epoch


def epoch_data(args):
    """(x, y): the dataset's training images in one fixed shuffled order, or for a model whose
    input is not 1x28x28 ``args.images`` random images of its shape (speed, not accuracy)."""
    import numpy as np

    from benchmarks import networks
    from fastlenet import data
    shape = networks.build(args.model, "numpy").input_shape
    rng = np.random.default_rng(0)
    if shape != (1, 28, 28):
        return rng.random((args.images,) + shape, dtype=np.float32), rng.integers(0, 10, args.images)
    ds = data.load(args.dataset, data_dir=args.data_dir)
    order = rng.permutation(len(ds.x_train))
    return ds.x_train[order], ds.y_train[order].astype(np.int64)    # the same batches for all


def child(args):
    """Train one epoch of ``args.child`` (a backend or a peer) in this process; print a JSON
    line with the result (``args.loop``: epoch after epoch until killed, as load)."""
    import resource

    from benchmarks import peers
    name, batch = args.child, args.batch_size
    if name in peers.PEERS:
        epoch = peers.make_epoch(name, args.threads, model=args.model)
    else:
        epoch = fastlenet_epoch(name, args.threads, args.fixed_threads, args.model)
    x, y = epoch_data(args)
    loop = args.loop
    t0 = time.perf_counter()
    epoch(x[:batch], y[:batch], batch)                     # compile / JIT / cache warm-up, and
    if len(x) % batch:                                     # the last batch's shorter shape
        epoch(x[:len(x) % batch], y[:len(x) % batch], batch)
    warm = time.perf_counter() - t0
    while True:
        t0 = time.perf_counter()
        epoch(x, y, batch)
        if not loop:
            break
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "warmup": warm, "peak_mb": peak, "n": len(x)}))


def child_environment(name):
    """Peers get the user's OpenMP settings, not the spin count fastlenet sets for itself."""
    from benchmarks import peers
    from fastlenet import runtime
    env = dict(os.environ)
    if name in peers.PEERS and runtime.status()["set_by"] != "user":
        env.pop("GOMP_SPINCOUNT", None)
        env["FASTLENET_SPINCOUNT"] = runtime.LIBGOMP_DEFAULT
    return env


def measure(name, batch, threads, dataset, data_dir, fixed_threads=False, model="lenet5", images=10000):
    cmd = [sys.executable, "-m", "benchmarks.compare", "--child", name, "--batch-size", str(batch),
           "--threads", str(threads), "--dataset", dataset, "--model", model, "--images", str(images)]
    cmd += ["--fixed-threads"] if fixed_threads else []
    if data_dir:
        cmd += ["--data-dir", data_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_environment(name))
    if out.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_names(skip_numpy=True, model="lenet5"):
    from benchmarks import peers
    from fastlenet import kernels
    names = [n for n in kernels.available() if not (skip_numpy and n == "numpy")]
    found = [p for p in peers.available() if model == "lenet5" or p in peers.ANY_MODEL]
    if model != "lenet5":
        print(f"note: {model} runs on fastlenet and {', '.join(peers.ANY_MODEL)} (the other peers know LeNet-5 only)")
    missing = sorted({peers.FRAMEWORK[p] for p in peers.PEERS if p not in found})
    if missing:
        print(f"note: not installed, left out: {', '.join(missing)} (peers are never dependencies)")
    return names + found


def run_all(args, names):
    """{'quiet': {name: [result, ...]}, 'load': {...}}: quiet and loaded runs interleaved."""
    from benchmarks.load import competing_load
    runs = {"quiet": {n: [] for n in names}, "load": {n: [] for n in names}}
    for r in range(args.repeats):
        for name in names:
            res = measure(name, args.batch_size, args.threads, args.dataset, args.data_dir, args.fixed_threads,
                          args.model, args.images)
            runs["quiet"][name].append(res)
            line = f"  run {r + 1}/{args.repeats} {name:>13}: {res['seconds']:.2f} s"
            if args.load:
                with competing_load(args.load, args.load_kind, args.data_dir, session=args.load_session):
                    res = measure(name, args.batch_size, args.threads, args.dataset, args.data_dir,
                                  args.fixed_threads, args.model, args.images)
                runs["load"][name].append(res)
                line += f", under load {res['seconds']:.2f} s"
            print(line, flush=True)
    return runs


def table(args):
    from benchmarks import peaks
    names = args.backends or available_names(model=args.model)
    machine = peaks.measure(args.threads)
    print(peaks.describe(machine))
    runs = run_all(args, names)
    n = runs["quiet"][names[0]][0]["n"]
    flops = epoch_flops(n, args.batch_size, args.model)
    med = {k: {name: statistics.median(r["seconds"] for r in rs) for name, rs in v.items() if rs}
           for k, v in runs.items()}
    base, base_load = med["quiet"].get("torch"), med["load"].get("torch")
    what = (f"LeNet-5 (ReLU, max pool), {args.dataset} {n} images" if args.model == "lenet5"
            else f"{args.model}, {n} random images of its input shape")
    print(f"\n{what}, batch {args.batch_size}, Adam, "
          f"{args.threads} threads; median of {args.repeats}; {flops / 1e9:.0f} GFLOP per epoch; "
          f"{datetime.date.today()}, {machine['cpu']} ({machine['isa']})")
    if args.load:
        print(f"under load: {args.load} competing {args.load_kind} process(es) during the run, "
              f"{'each in a session of its own' if args.load_session == 'own' else 'in the same session'}; "
              f"fastlenet's threads {'fixed' if args.fixed_threads else 'governed (fastlenet.governor)'}")
    head = "| backend | s / epoch | vs PyTorch | GFLOP/s | share of FMA peak | warm-up s | peak memory |"
    if args.load:
        head += " s / epoch under load | load / quiet | vs PyTorch under load |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in names:
        s = med["quiet"][name]
        gf = flops / s / 1e9
        warm = statistics.median(r["warmup"] for r in runs["quiet"][name])
        peak = max(r["peak_mb"] for r in runs["quiet"][name])
        row = (f"| {name} | {s:.2f} | {_ratio(s, base)} | {gf:.1f} | {100 * gf / machine['fma_gflops']:.0f}% "
               f"| {warm:.1f} | {peak:.0f} MB |")
        if args.load:
            sl = med["load"][name]
            row += f" {sl:.2f} | {sl / s:.2f}x | {_ratio(sl, base_load)} |"
        print(row)


def _ratio(s, base):
    return f"{s / base:.2f}x" if base else "n/a"


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


def parser():
    from benchmarks.load import KINDS, SESSIONS
    from fastlenet.kernels import usable_cpus
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=os.environ.get("FASTLENET_DATA"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=usable_cpus(), help="default: the usable CPUs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", nargs="*", default=None,
                   help="backends and peers to run (default: numba, cython and every installed peer)")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="also run each measurement beside N competing processes (default 0: quiet only)")
    p.add_argument("--load-kind", choices=KINDS, default="cpu",
                   help="cpu: pure-Python spinners; fastlenet / torch: trainings in a loop")
    p.add_argument("--model", default="lenet5",
                   help="a preset, cifar-cnn / vgg-small (benchmarks/networks.py) or a model file; a model whose "
                        "input is not 1x28x28 trains on --images random images; peers: PyTorch only")
    p.add_argument("--images", type=int, default=10000, help="images per epoch for such a model (default 10000)")
    p.add_argument("--fixed-threads", action="store_true",
                   help="fastlenet keeps --threads threads under load (default: its thread governor adapts)")
    p.add_argument("--load-session", choices=SESSIONS, default="own",
                   help="own: each competing process in a session of its own (another terminal); same: in "
                        "this session (jobs of the same shell) -- see benchmarks/load.py")
    p.add_argument("--scaling", action="store_true", help="batch 64..512 x 1/2 threads for one backend")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.load < 0:
        raise SystemExit("compare: --load must be >= 0")
    if args.child:
        return child(args)
    return scaling(args) if args.scaling else table(args)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
