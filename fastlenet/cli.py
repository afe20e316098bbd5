"""``fastlenet``: one console command for everything fastlenet does.

    fastlenet train --dataset mnist        (= python -m fastlenet.train)
    fastlenet evaluate RUN/best.npz        (= python -m fastlenet.evaluate)
    fastlenet predict RUN/best.npz FILE..  (= python -m fastlenet.predict)
    fastlenet export RUN/best.npz m.onnx   (= python -m fastlenet.export)
    fastlenet plot RUN                     draw a run's plots again (or for the first time)
    fastlenet bench [compare.py flags]     the epoch table of benchmarks/compare.py (source tree)
    fastlenet info                         version, backends, threads, CPU, data found
    fastlenet --version

Each subcommand's usage line shows the command as typed (``fastlenet train ...``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from . import __version__

#: subcommand -> (module whose main(argv, prog) runs it, one-line summary)
COMMANDS = {
    "train": ("fastlenet.train", "train a model; writes a run directory"),
    "evaluate": ("fastlenet.evaluate", "accuracy and confusion matrix of a checkpoint on a test set"),
    "predict": ("fastlenet.predict", "classify pictures or .npy arrays with a checkpoint"),
    "export": ("fastlenet.export", "write a checkpoint as an ONNX model"),
    "plot": ("fastlenet.plotrun", "draw curves.png, confusion.png, samples.png for a run directory"),
    "sweep": ("fastlenet.sweep", "a grid of settings x seeds, each a run directory, on Ray (the sweep extra)"),
    "bench": ("fastlenet.cli", "the epoch-time table of benchmarks/compare.py (needs the source tree)"),
    "info": ("fastlenet.cli", "version, backends, threads, CPU and vector width, data found"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fastlenet <command> [options]   (fastlenet <command> --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "  --version   print the version"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"fastlenet {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fastlenet: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if name == "info":
        return info(rest)
    if name == "bench":
        return bench(rest)
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"fastlenet {name}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help: "(default: X)" where X says something -- not after a flag
    whose default is None or off, nor where the help text states the default itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if quiet or "default:" in text or "recipe" in text:
            return text
        return super()._get_help_string(action)


def guarded(run, argv, prog: str, errors) -> int:
    """``run(argv, prog)`` as a command: an error of the kinds ``errors`` is one line on stderr
    (exit 2), a closed stdout ends quietly (:func:`closed_pipe`)."""
    try:
        return run(argv, prog)
    except BrokenPipeError:
        return closed_pipe()
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def closed_pipe() -> int:
    """The reader of stdout went away (``fastlenet evaluate ... | head``): stop quietly,
    as a Unix tool does, with 128 + SIGPIPE."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())           # Python's own flush at exit must not fail again
    return 141


# --------------------------------------------------------------------------- info
def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def info_lines() -> List[str]:
    """What ``fastlenet info`` prints, line by line."""
    import numba
    import numpy as np
    from . import data, kernels, runtime
    lines = [f"fastlenet {__version__} (Python {sys.version.split()[0]}, NumPy {np.__version__}, "
             f"Numba {numba.__version__})", f"CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs, "
             f"{kernels.usable_cpus()} usable by this process"]
    available, broken = kernels.available(), kernels.unavailable()
    for name in ("numpy", "numba", "cython"):
        if name in available:
            b = kernels.backend(name)
            extra = f", {b.lanes}-float register rows" if name != "numpy" and getattr(b, "lanes", None) else ""
            if name == "cython":
                from .kernels import _cy_probe
                extra += f", built for {_cy_probe.isa()}"
            lines.append(f"backend {name}: available{extra}")
        else:
            lines.append(f"backend {name}: NOT available ({broken.get(name, '?')[:120]})")
    try:
        default = kernels.default_backend().name
    except (ValueError, kernels.BackendUnavailable) as exc:
        default = f"none ({exc})"
    lines.append(f"default backend: {default}; default threads: {kernels.default_threads()} "
                 f"(NUMBA_NUM_THREADS {numba.config.NUMBA_NUM_THREADS}); training uses fewer while other "
                 "programs hold the CPUs and that measures faster (--fixed-threads: never)")
    st = runtime.status()
    lines.append(f"OpenMP wait: GOMP_SPINCOUNT={st['GOMP_SPINCOUNT']}, OMP_WAIT_POLICY={st['OMP_WAIT_POLICY']} "
                 f"(set by {st['set_by']})")
    for name in data.DATASETS:
        files = data.locate(name)
        searched = ", ".join(map(str, data.search_dirs(name)))
        where = str(next(iter(files.values())).parent) if files else f"not found (searched {searched}; downloaded on first use)"
        lines.append(f"data {name}: {where}")
    from . import cifar
    found = cifar.locate()
    lines.append(f"data cifar10: {found if found else 'not found (downloaded on first use)'}")
    return lines


def info(argv: List[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: fastlenet info\n\n" + COMMANDS["info"][1])
        return 0
    if argv:
        print(f"fastlenet info: error: takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    print("\n".join(info_lines()))
    return 0


# --------------------------------------------------------------------------- bench
def source_tree() -> Optional[Path]:
    """The repository root when fastlenet runs from a source checkout (benchmarks/ beside it)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "benchmarks" / "compare.py").is_file() else None


def bench(argv: List[str]) -> int:
    root = source_tree()
    if root is None:
        print("fastlenet bench: error: the benchmarks live in the source tree (benchmarks/compare.py), "
              "which this installation does not have; clone the repository and pip install -e . there",
              file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "benchmarks.compare", *argv], cwd=root)


if __name__ == "__main__":
    sys.exit(main())
