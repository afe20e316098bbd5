"""Where one training step's time goes, kernel by kernel: every public and fused kernel of a
backend timed inside real training steps of a network (LeNet-5 by default), per call
shape, so a kernel change is seen in the step it is meant to speed up.

    python -m benchmarks.step_kernels cython                     # LeNet-5, batch 256, 2 threads
    python -m benchmarks.step_kernels cython --threads 1         # CPU time of the calling thread
    python -m benchmarks.step_kernels numba --model cifar-cnn --batch 128
    PYTHONPATH=/tmp/old python -m benchmarks.step_kernels cython # another tree, interleaved by hand

Each row: the median time per step of one kernel at one call shape (its first two
arguments' shapes), and its fastest call; last, the kernels' sum beside the whole step's
median and fastest.  With ``--threads 1`` the kernels run on the calling thread and are
timed by its CPU time (``time.thread_time``), which other work on a shared machine moves
less than the wall clock; the step itself is always wall time.  Random inputs: the same
work as real images, without the dataset.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import time

import numpy as np

#: the backend's kernels that the layers call (the rest of ``fast`` is wrapped by name)
PUBLIC = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
          "avgpool2d_forward", "avgpool2d_backward")


def _timed(times: dict, clock, name: str, kernel):
    def call(*args, **kwargs):
        t0 = clock()
        result = kernel(*args, **kwargs)
        elapsed = clock() - t0
        times[(name, " ".join(str(getattr(a, "shape", "")) for a in args[:2]))].append(elapsed)
        return result
    return call


@contextlib.contextmanager
def instrumented(k, clock):
    """Backend ``k``'s kernels wrapped to record their times, {(name, shapes): [s]}, for the
    ``with`` block (the originals are put back after it)."""
    times = collections.defaultdict(list)
    owners = [(k, name) for name in PUBLIC] + \
        ([(k.fast, n) for n in dir(k.fast) if not n.startswith("_")] if k.fast is not None else [])
    originals = [(owner, name, getattr(owner, name)) for owner, name in owners]
    for owner, name, kernel in originals:
        object.__setattr__(owner, name, _timed(times, clock, name, kernel))     # fast is frozen
    try:
        yield times
    finally:
        for owner, name, kernel in originals:
            object.__setattr__(owner, name, kernel)


def run(backend: str, model_name: str, batch: int, steps: int, threads: int):
    """(rows (ms per step, fastest ms, name, shapes), the step's median ms, its fastest ms)."""
    from benchmarks import networks
    from fastlenet import kernels, optim
    kernels.set_num_threads(threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    with instrumented(kernels.backend(backend), clock) as times:
        model = networks.build(model_name, backend)
        opt = optim.Adam(model.params, lr=1e-3, backend=backend)
        rng = np.random.default_rng(0)
        x = rng.random((batch,) + model.input_shape, dtype=np.float32)
        y = rng.integers(0, int(model.output_shape[0]), batch)
        for _ in range(3):                                    # warm-up: workspaces, caches, JIT
            opt.step(model.loss_and_grads(x, y)[1])
        times.clear()
        step = []
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.step(model.loss_and_grads(x, y)[1])
            step.append(time.perf_counter() - t0)
    rows = [(np.median(v) * len(v) / steps * 1e3, min(v) * 1e3, name, shapes)
            for (name, shapes), v in times.items()]
    return sorted(rows, reverse=True), np.median(step) * 1e3, min(step) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("backend", choices=["cython", "numba", "numpy"])
    p.add_argument("--model", default="lenet5", help="a preset, a benchmarks network, or a model file")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    rows, median, fastest = run(args.backend, args.model, args.batch, args.steps, args.threads)
    clock = "CPU time" if args.threads == 1 else "wall time"
    print(f"{args.backend}, {args.model}, batch {args.batch}, {args.threads} thread(s), {args.steps} steps "
          f"(kernels: {clock})")
    print("| ms / step | fastest ms | kernel | shapes |")
    print("|---|---|---|---|")
    for per_step, best, name, shapes in rows:
        print(f"| {per_step:.3f} | {best:.3f} | {name} | {shapes} |")
    print(f"kernels {sum(r[0] for r in rows):.2f} ms of a step of {median:.2f} ms (fastest {fastest:.2f})")


if __name__ == "__main__":
    main()
