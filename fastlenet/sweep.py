"""``fastlenet sweep``: many trainings -- a grid of settings x seeds -- on Ray.

    fastlenet sweep --dataset fashion-mnist --seeds 5 --out sweeps/fashion
    fastlenet sweep --dataset mnist --grid lr=0.001,0.002 --grid batch-size=64,128 --seeds 3 --out sweeps/m
    fastlenet sweep ... --address ray://head:10001          # an existing Ray cluster (--out on a shared disk)

Every ``fastlenet train`` flag may be given; ``--grid FLAG=v1,v2,...`` (repeatable)
varies one of them, the cross product of all grids times ``--seeds N`` (seeds
0..N-1) is the set of trials.  Each trial is a normal run directory under
``--out`` (``python -m fastlenet.train`` in its own process), so everything that
works on a run works on a trial.  ``--out/results.csv`` has one row per trial and
``--out/sweep.json`` records the command, the grid, the engine and the cluster.  A
failed trial is reported with its error and the sweep goes on; re-running the same
command skips finished trials and resumes interrupted ones.

Engine: Ray Core tasks (the ``sweep`` extra), not Ray Tune: every trial is an
independent command-line run that writes its own folder, needs no scheduler that
stops trials early, and reports one row at the end -- a remote function per trial
and ``ray.wait`` over them is all that takes, with Ray's resource accounting
(``num_cpus`` = threads per trial) deciding how many run at once on each node.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .cli import HelpFormatter
from .fileio import atomic_write_bytes, write_json

INSTALL_HINT = "pip install 'fastlenet[sweep]'"
#: flags a sweep sets for each trial itself
OWN_FLAGS = ("--seed", "--out", "--resume", "--threads", "--quiet", "--no-plots")
RESULT_FIELDS = ("trial", "status", "seed", "test_accuracy", "test_accuracy_plain", "best_epoch", "epochs", "seconds",
                 "run_dir", "error")


class SweepError(ValueError):
    """A sweep that cannot start; the message names the flag."""


def build_parser(prog: str = "python -m fastlenet.sweep") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=HelpFormatter, allow_abbrev=False,   # --seed is a train flag
                                epilog="Any other option is a fastlenet train flag, given to every trial.")
    p.add_argument("--out", required=True, help="the sweep's folder: one run directory per trial, results.csv, "
                                                  "sweep.json (re-run the same command to finish a sweep)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per setting")
    p.add_argument("--grid", action="append", default=[], metavar="FLAG=V1,V2,...",
                   help="a train flag and its values (repeatable; trials are the cross product); default: none")
    p.add_argument("--address", default=None, help="join this Ray cluster (default: start Ray on this machine)")
    p.add_argument("--threads-per-trial", type=int, default=None,
                   help="threads (Ray CPUs) per trial; default: the usable CPUs shared among the trials")
    return p


# --------------------------------------------------------------------------- planning
def parse_grid(items: List[str]) -> List[Tuple[str, List[str]]]:
    """``["lr=0.001,0.01", ...]`` -> [("--lr", ["0.001", "0.01"]), ...]."""
    out, seen = [], set()
    for item in items:
        name, sep, values = item.partition("=")
        flag = "--" + name.strip().lstrip("-")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not vals or flag == "--":
            raise SweepError(f"--grid {item!r}: expected FLAG=V1,V2,... (e.g. lr=0.001,0.01)")
        if flag in OWN_FLAGS:
            raise SweepError(f"--grid {item!r}: {flag} is set by the sweep itself (use --seeds for seeds)")
        if flag in seen:
            raise SweepError(f"--grid {item!r}: {flag} is in the grid twice")
        seen.add(flag)
        out.append((flag, vals))
    return out


def trial_name(setting: Tuple[Tuple[str, str], ...], seed: int) -> str:
    parts = [f"{flag[2:]}={value}" for flag, value in setting] + [f"seed={seed}"]
    return "".join(ch if ch.isalnum() or ch in "-_.=," else "_" for ch in ",".join(parts))


def plan(train_args: List[str], grid: List[Tuple[str, List[str]]], seeds: int) -> List[dict]:
    """Every trial: {"name", "setting", "seed", "argv"} (argv without --out/--threads)."""
    flags = [flag for flag, _ in grid]
    trials = []
    for values in itertools.product(*[vals for _, vals in grid]):
        setting = tuple(zip(flags, values))
        for seed in range(seeds):
            argv = list(train_args) + [x for pair in setting for x in pair] + ["--seed", str(seed)]
            trials.append({"name": trial_name(setting, seed), "setting": dict(setting), "seed": seed, "argv": argv})
    return trials


def check_trials(trials: List[dict]) -> None:
    """Each trial's flags resolve as ``fastlenet train`` would resolve them (before Ray starts)."""
    from .settings import UsageError, build_parser as train_parser, resolve_settings
    for t in trials:
        try:
            args = train_parser().parse_args(t["argv"] + ["--out", "x"])
        except SystemExit:
            raise SweepError(f"trial {t['name']}: fastlenet train refuses {shlex.join(t['argv'])}") from None
        try:
            resolve_settings(args)
        except (UsageError, ValueError) as exc:
            raise SweepError(f"trial {t['name']}: {exc}") from None


# --------------------------------------------------------------------------- running
def run_trial(argv: List[str], run_dir: str, threads: int) -> dict:
    """One trial as ``python -m fastlenet.train`` in its own process: a finished run is
    read, an interrupted one resumed, else a new one started.  Never raises."""
    import subprocess
    folder = Path(run_dir)
    started = time.time()
    if (folder / "metrics.json").is_file():
        return _trial_result(folder, "finished", "", 0.0)
    if (folder / "last.npz").is_file():
        cmd = ["--resume", str(folder), "--threads", str(threads), "--quiet"]
    else:
        cmd = argv + ["--out", str(folder), "--threads", str(threads), "--quiet", "--no-plots"]
    # trials share the cores: no extra compile process per trial (numba_warmup) on a cold Numba cache
    env = dict(os.environ, FASTLENET_NUMBA_HELPER=os.environ.get("FASTLENET_NUMBA_HELPER", "0"))
    proc = subprocess.run([sys.executable, "-m", "fastlenet.train", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"status": "failed", "error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300],
                "seconds": time.time() - started, "run_dir": str(folder)}
    return _trial_result(folder, "done", "", time.time() - started)


def _trial_result(folder: Path, status: str, error: str, seconds: float) -> dict:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        return {"status": status, "error": error, "run_dir": str(folder), "test_accuracy": metrics["test_accuracy"],
                "test_accuracy_plain": metrics.get("test_accuracy_plain", ""),     # set under --tta
                "best_epoch": metrics["best_epoch"], "epochs": len(metrics["epochs"]),
                "seconds": seconds or metrics.get("wall_seconds", 0.0)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"status": "failed", "error": f"unreadable metrics.json ({exc})", "run_dir": str(folder),
                "seconds": seconds}


def _ray():
    try:
        import ray
    except ImportError:
        raise SweepError(f"fastlenet sweep runs on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def threads_per_trial(asked: Optional[int], trials: int, cpus: int) -> int:
    """Asked, else the usable CPUs shared among the trials (at least 1 each)."""
    if asked is not None:
        return asked
    return max(1, cpus // max(1, trials))


def execute(trials: List[dict], out: Path, threads: int, address: Optional[str], on_result) -> dict:
    """Run every trial on Ray; ``on_result(trial, result)`` as each one ends.  Returns
    the cluster's description for sweep.json."""
    ray = _ray()
    from . import kernels
    import logging
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=kernels.usable_cpus(), include_dashboard=False, **quiet)
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(run_trial)
        pending = {remote.remote(t["argv"], str(out / t["name"]), threads): t for t in trials}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as exc:                 # noqa: BLE001 - a worker that died: the trial failed
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": 0.0,
                          "run_dir": str(out / trial["name"])}
            on_result(trial, result)
        resources = ray.cluster_resources()
        return {"address": address or "local", "nodes": len(ray.nodes()), "cpus": resources.get("CPU"),
                "ray": ray.__version__}
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- reporting
def write_results(out: Path, rows: List[dict], grid_flags: List[str]) -> None:
    buf = io.StringIO()
    fields = [f[2:] for f in grid_flags] + list(RESULT_FIELDS)
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["trial"]):
        writer.writerow(row)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())


def _mean_std(values: List[float]) -> str:
    if not values:
        return "(no finished trial)"
    return f"{statistics.fmean(values):6.2f}% +- {statistics.stdev(values) if len(values) > 1 else 0.0:4.2f}"


def summary(rows: List[dict], grid_flags: List[str]) -> Tuple[str, Optional[str]]:
    """The table per setting (mean +- std of test accuracy over seeds; under --tta also
    that of the plain test images) and the best setting."""
    groups: Dict[Tuple[str, ...], List[float]] = {}
    plain: Dict[Tuple[str, ...], List[float]] = {}
    failed: Dict[Tuple[str, ...], int] = {}
    for r in rows:
        key = tuple(str(r.get(f[2:])) for f in grid_flags)
        if r["status"] in ("done", "finished"):
            groups.setdefault(key, []).append(100 * r["test_accuracy"])
            if r.get("test_accuracy_plain") not in (None, ""):
                plain.setdefault(key, []).append(100 * float(r["test_accuracy_plain"]))
        else:
            failed[key] = failed.get(key, 0) + 1
    names = [f[2:] for f in grid_flags] or ["setting"]
    keys = sorted(set(groups) | set(failed))
    shown_keys = [key or ("(flags as given)",) for key in keys]
    widths = [max([12, len(n)] + [len(k[i]) for k in shown_keys]) for i, n in enumerate(names)]
    plain_head = f"{'plain images, no tta':<28}" if plain else ""
    lines = ["  ".join(f"{n:>{w}}" for n, w in zip(names, widths)) +
             f"   {'test accuracy (mean +- std)':<28}{plain_head}{'seeds':>5}  failed"]
    best, best_mean = None, -math.inf
    for key, shown in zip(keys, shown_keys):
        accs = groups.get(key, [])
        plain_cell = f"{_mean_std(plain.get(key, [])):<28}" if plain else ""
        lines.append("  ".join(f"{v:>{w}}" for v, w in zip(shown, widths)) +
                     f"   {_mean_std(accs):<28}{plain_cell}{len(accs):>5}  {failed.get(key, 0):>6}")
        if accs and statistics.fmean(accs) > best_mean:
            best = ", ".join(f"{n}={v}" for n, v in zip(names, shown)) if key else "(flags as given)"
            best_mean = statistics.fmean(accs)
    best_line = f"best: {best} ({best_mean:.2f}%)" if best is not None else None
    return "\n".join(lines), best_line


def main(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.sweep") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, train_args = build_parser(prog).parse_known_args(argv)
    try:
        return _sweep(args, train_args, argv)
    except SweepError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished trials are kept, re-run the same command to go on", file=sys.stderr)
        return 130


def _sweep(args, train_args: List[str], argv: List[str]) -> int:
    for flag in OWN_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in train_args):
            raise SweepError(f"{flag} is set by the sweep for each trial; leave it out")
    if args.seeds < 1:
        raise SweepError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads_per_trial is not None and args.threads_per_trial < 1:
        raise SweepError(f"--threads-per-trial must be >= 1, got {args.threads_per_trial}")
    grid = parse_grid(args.grid)
    trials = plan(train_args, grid, args.seeds)
    check_trials(trials)
    _ray()                                          # installed? (before anything is written)
    from . import kernels
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads_per_trial(args.threads_per_trial, len(trials), kernels.usable_cpus())
    print(f"sweep: {len(trials)} trials ({len(trials) // args.seeds} settings x {args.seeds} seeds), "
          f"{threads} thread{'s' if threads != 1 else ''} each, on Ray ({args.address or 'local'}), into {out}",
          flush=True)
    rows: List[dict] = []
    grid_flags = [flag for flag, _ in grid]
    started = time.time()

    def on_result(trial: dict, result: dict) -> None:
        row = {**{f[2:]: trial["setting"][f] for f in grid_flags}, "trial": trial["name"], "seed": trial["seed"],
               **result}
        rows.append(row)
        shown = (f"{100 * result['test_accuracy']:.2f}%" if result["status"] in ("done", "finished")
                 else f"FAILED: {result.get('error', '')}")
        print(f"[{len(rows)}/{len(trials)}] {trial['name']}: {shown}"
              f"{' (finished before)' if result['status'] == 'finished' else ''}", flush=True)
        write_results(out, rows, grid_flags)

    cluster = execute(trials, out, threads, args.address, on_result)
    table, best = summary(rows, grid_flags)
    write_json(out / "sweep.json", {"command": ["fastlenet", "sweep", *argv], "train_flags": train_args,
                                    "grid": {f[2:]: v for f, v in grid}, "seeds": args.seeds,
                                    "threads_per_trial": threads, "trials": len(trials),
                                    "failed": sum(r["status"] == "failed" for r in rows),
                                    "engine": {"name": "ray", "version": cluster["ray"], "api": "Ray Core tasks"},
                                    "cluster": cluster, "wall_seconds": time.time() - started})
    print(table)
    if best:
        print(best)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} trials finished in {time.time() - started:.0f} s; "
          f"results in {out / 'results.csv'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
