"""Where the Numba backend's first run spends its time: one training step on a fresh
compile, then each compiled kernel's compile time from Numba's own timers
(``compiler_lock`` includes the kernels it calls; ``llvm_lock`` is LLVM's part).

    NUMBA_CACHE_DIR=$(mktemp -d) python -m benchmarks.numba_compile [MODEL]
    NUMBA_OPT=1 NUMBA_CACHE_DIR=$(mktemp -d) python -m benchmarks.numba_compile   # less LLVM work

Run it with an empty cache folder, or it measures loading from the cache.
"""
from __future__ import annotations

import sys
import time


def compile_timers(modules):
    """[(compiler seconds, LLVM seconds, kernel name)] for every compiled overload, largest first."""
    from numba.core.registry import CPUDispatcher
    rows, seen = [], set()
    for mod in modules:
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and id(obj) not in seen:
                seen.add(id(obj))
                for sig in obj.overloads:
                    timers = (obj.overloads[sig].metadata or {}).get("timers", {})
                    rows.append((timers.get("compiler_lock", 0.0), timers.get("llvm_lock", 0.0), name))
    return sorted(rows, reverse=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import numpy as np

    from benchmarks import networks
    from fastlenet import optim
    from fastlenet.kernels import _numba_loops, _numba_options, numba_backend, numba_conv, numba_norm
    model = networks.build(argv[0] if argv else "lenet5", "numba")
    opt = optim.Adam(model.params, lr=1e-3, backend="numba")
    rng = np.random.default_rng(0)
    x = rng.random((256,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, 256)
    steps = []
    for _ in range(2):
        t0 = time.perf_counter()
        opt.step(model.loss_and_grads(x, y)[1])
        steps.append(time.perf_counter() - t0)
    print(f"first step {steps[0]:.2f} s (compiling or loading), second {1000 * steps[1]:.1f} ms")
    rows = compile_timers((numba_backend, numba_conv, _numba_loops, numba_norm, _numba_options))
    print(f"{len(rows)} kernels compiled; the largest (compiler s, of which LLVM s):")
    for compiler, llvm, name in rows[:16]:
        print(f"{compiler:7.2f} {llvm:7.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
