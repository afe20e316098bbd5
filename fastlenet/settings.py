"""``fastlenet train``'s flags and the settings of a run: flags + recipe + built-in
defaults (fastlenet.recipes), every value checked up front and its source recorded.

Knob flags (everything a recipe may set) default to None, so the resolution can tell
a flag the user typed from one left out; run flags (where the data is, threads,
backend, seed, output folder, ...) are never part of a recipe.
"""
from __future__ import annotations

import argparse
import functools
import math
from typing import Dict, Tuple

from . import data, kernels, models, optim, recipes, tta
from .cli import HelpFormatter
from .recipes import BUILTIN


class UsageError(Exception):
    """A bad flag combination: reported as one line, exit code 2."""


def build_parser(prog: str = "python -m fastlenet.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a CNN (LeNet-5 by default) with fastlenet's compiled kernels. A recipe (--recipe; "
                    "default: the dataset's own) gives every setting a flag leaves out; --recipe list shows "
                    "them. config.json records where each value came from.",
        formatter_class=HelpFormatter,
    )
    _data_flags(p.add_argument_group("data"))
    _model_flags(p.add_argument_group("model"))
    _optimisation_flags(p.add_argument_group("optimisation"))
    _schedule_flags(p.add_argument_group("schedule, early stopping and testing"))
    _run_flags(p.add_argument_group("run"))
    return p


def _knob(g, flag: str, help: str, **kw) -> None:
    """A flag a recipe may set: default None; the help names the built-in default."""
    dest = flag[2:].replace("-", "_")
    builtin = BUILTIN[dest]
    shown = "none" if builtin is None else ("on" if builtin is True else "off" if builtin is False else builtin)
    g.add_argument(flag, default=None, help=f"{help} (recipe's value; built-in default: {shown})", **kw)


def _data_flags(g) -> None:
    _knob(g, "--dataset", "registered dataset, or 'idx' for any folder of the four IDX files (needs --data-dir)",
          choices=data.DATASET_NAMES)
    g.add_argument("--data-dir", default=None,
                   help="folder holding the data files (itself or <dir>/<dataset>); default: $FASTLENET_DATA, "
                        "the user cache, /usr/share/datasets, then download")
    g.add_argument("--limit", type=int, default=None, help="use only the first N training images (quick runs)")
    _knob(g, "--val-split", "fraction of the training set held out for validation; 0 = none", type=float)
    _knob(g, "--val-from", "how the validation set is taken: stratified (seeded, per class), random (seeded), "
          "end (the last fraction, unshuffled, as Keras' validation_split)", choices=list(data.VAL_FROM))
    _knob(g, "--augment", "random shifts of up to --max-shift px, plus horizontal flips where the dataset "
          "allows (Fashion-MNIST, CIFAR-10)", action=argparse.BooleanOptionalAction)
    _knob(g, "--max-shift", "largest random shift in pixels used by --augment (0: flips only)", type=int)
    _knob(g, "--rotate", "with --augment: random rotations by up to this many degrees (bilinear)", type=float,
          metavar="DEGREES")
    _knob(g, "--elastic", "with --augment: smooth random warps moving pixels by up to this many pixels "
          "(a 4x4 grid of random displacements, interpolated; elastic distortions)", type=float, metavar="PIXELS")
    _knob(g, "--erase", "with --augment: probability of random erasing (a rectangle of 2-20%% of the image set "
          "to zero)", type=float, metavar="P")
    _knob(g, "--standardize", "subtract the train-set mean and divide by its std, per channel",
          action=argparse.BooleanOptionalAction)
    _knob(g, "--pad32", "zero-pad 28x28 images to 32x32 (the lenet5-1998 preset does it by itself)",
          action=argparse.BooleanOptionalAction)


def _model_flags(g) -> None:
    _knob(g, "--model", f"a preset ({', '.join(models.PRESETS)}) or a model file (JSON, see docs/models.md; a "
          "run's own RUN/model.json trains it again)", metavar="NAME|FILE")
    _knob(g, "--activation", "override the model's activations", choices=["relu", "sigmoid", "tanh"])
    _knob(g, "--dense-activation", "a different activation for the layers after the flatten",
          choices=["relu", "sigmoid", "tanh"])
    _knob(g, "--pool", "override the model's pooling", choices=["max", "avg"])
    _knob(g, "--init", "weight initialisation: auto (He before ReLU, else Glorot), keras (Glorot uniform, zero "
          "bias), torch (uniform +-1/sqrt(fan_in) for weights and biases), he, glorot, lecun",
          choices=["auto", "keras", "torch", "he", "glorot", "lecun"])
    _knob(g, "--bn-momentum", "batch-norm running-statistics momentum, PyTorch's convention (its 0.1; Keras' "
          "momentum=0.99 is 0.01 here); none: the model file's", type=float)
    _knob(g, "--bn-eps", "batch-norm epsilon (PyTorch 1e-5, Keras 1e-3); none: the model file's", type=float)


def _optimisation_flags(g) -> None:
    _knob(g, "--epochs", "number of epochs", type=int)
    _knob(g, "--batch-size", "mini-batch size", type=int)
    _knob(g, "--optimizer", "optimizer; naming one that is not the recipe's gives it its own defaults "
          "(lr 0.01 for sgd, 0.001 for adam/adamw; momentum 0; weight decay 0, 0.01 for adamw)",
          choices=["sgd", "adam", "adamw"])
    _knob(g, "--lr", "learning rate (none: the optimizer's default)", type=float)
    _knob(g, "--momentum", "SGD momentum (none: the optimizer's default, 0)", type=float)
    _knob(g, "--nesterov", "Nesterov momentum (SGD)", action=argparse.BooleanOptionalAction)
    _knob(g, "--weight-decay", "L2 (sgd, adam) or decoupled (adamw) weight decay on weights (none: the "
          "optimizer's default)", type=float)
    _knob(g, "--label-smoothing", "target (1 - e) one-hot + e / classes", type=float)


def _schedule_flags(g) -> None:
    _knob(g, "--schedule", "learning-rate schedule", choices=["none", "step", "cosine", "plateau"])
    _knob(g, "--step-size", "step: epochs per decay", type=int)
    _knob(g, "--gamma", "step: decay factor", type=float)
    _knob(g, "--min-lr", "cosine/plateau: floor", type=float)
    _knob(g, "--plateau-factor", "plateau: factor applied to the rate", type=float)
    _knob(g, "--plateau-patience", "plateau: epochs without val-loss improvement before decaying", type=int)
    _knob(g, "--plateau-style", "plateau: count and threshold as torch (rate cut after patience+1 bad epochs, "
          "relative 1e-4) or keras (after patience bad epochs, absolute 1e-4), or exact (any decrease counts)",
          choices=list(optim.PLATEAU_STYLES))
    _knob(g, "--lr-list", "comma-separated learning rates, one per epoch (the last one repeats); overrides "
          "--schedule", type=str)
    _knob(g, "--early-stopping", "stop after PATIENCE epochs without improvement of --monitor", type=int,
          metavar="PATIENCE")
    _knob(g, "--restore-best", "early stopping puts the best epoch's weights back when it stops (Keras' "
          "restore_best_weights; its default is off)", action=argparse.BooleanOptionalAction)
    _knob(g, "--monitor", "the metric that picks the best epoch: best.npz and early stopping use it "
          "(train_* when there is no validation set)", choices=sorted(optim.METRICS))
    _knob(g, "--min-delta", "smallest change of --monitor that counts as an improvement", type=float)
    _knob(g, "--test-weights", "the weights tested at the end: best (best.npz's) or last (the final weights, "
          "as most published code tests)", choices=["best", "last"])
    _knob(g, "--tta", "test-time augmentation of the final test: class probabilities averaged over the image "
          "moved by every offset of up to 1 px (shifts, 3x3 = 9 views) or 2 px (shifts2, 25 views), its mirror "
          "(flips, 2 views; datasets whose labels survive a mirror) or both (flips-shifts, 18 views); the plain "
          "images' accuracy is reported beside it, validation stays plain", choices=list(tta.KINDS))


def _run_flags(g) -> None:
    g.add_argument("--recipe", default=None, metavar="NAME|FILE",
                   help=f"a named setup ({', '.join(recipes.NAMES)}) or a recipe file; 'list' describes them. "
                        "Flags beside it override single values. Default: the dataset's recipe")
    g.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None,
                   help="kernel backend; default: $FASTLENET_BACKEND, else the fastest available")
    g.add_argument("--threads", type=int, default=None,
                   help="threads for the kernels; default: the CPUs this process may use (affinity, cgroup quota)")
    g.add_argument("--fixed-threads", action="store_true",
                   help="always use --threads threads (default: while other programs hold the CPUs, use fewer "
                        "when that measures faster; the results are the same either way)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed for the weights, the split, the shuffling and the augmentation")
    g.add_argument("--out", default=None, help="run directory; default runs/<dataset>-<model>-<timestamp>")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.npz with its own settings (only --epochs, "
                        "--threads, --fixed-threads, --backend and --quiet may be given with it)")
    g.add_argument("--no-plots", action="store_true", help="do not draw curves.png, confusion.png, samples.png")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars per epoch to RUN/tensorboard (the tensorboard extra)")
    g.add_argument("--quiet", action="store_true", help="print only the final result")


# --------------------------------------------------------------------------- resolution
@functools.lru_cache(maxsize=1)
def _actions() -> Dict[str, argparse.Action]:
    """The train flags by dest (built once: a recipe checks ~40 values against them)."""
    return {a.dest: a for a in build_parser()._actions}


def recipe_value_problem(key: str, value):
    """What is wrong with a recipe's ``value`` for knob ``key`` (type, choices, range), or None."""
    from .resume import type_problem
    action = _actions()[key]
    if key == "lr_list":
        ok = value is None or (isinstance(value, list) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value))
        return None if ok else "must be null or a list of positive numbers"
    if key in ("model", "dataset") and not isinstance(value, str):
        return "must be a string"
    problem = type_problem(action, value)
    if problem is None and value is not None:
        try:
            _check_numbers({key: value})
        except UsageError as exc:
            return str(exc).split(" ", 1)[1]          # "must be a number in ..."
    return problem


def _load_recipe(name) -> recipes.Recipe:
    try:
        return recipes.load(name, recipe_value_problem)
    except recipes.RecipeError as exc:
        raise UsageError(str(exc)) from None


def resolve_settings(args: argparse.Namespace) -> Tuple[dict, Dict[str, str]]:
    """Flags + the recipe -> (the complete, validated settings of a run, each knob's source)."""
    flags = vars(args)
    recipe = _load_recipe(flags.get("recipe") or flags.get("dataset") or BUILTIN["dataset"])
    if flags.get("lr_list") is not None and isinstance(flags["lr_list"], str):
        flags = {**flags, "lr_list": _lr_list(flags["lr_list"])}
    knobs, sources = recipes.resolve(flags, recipe)
    s = {**flags, **knobs, "recipe": recipe.name}
    if s["lr_list"] and sources["lr"] != "flag" and (sources["lr_list"] == "flag" or sources["lr"].startswith("default")):
        # the list's first rate, unless --lr was given (or the recipe wrote both)
        s["lr"], sources["lr"] = s["lr_list"][0], "lr-list"
    _check_numbers(s)
    _check_combinations(s)
    s["backend"] = s["backend"] or kernels.default_backend().name
    s["threads"] = s["threads"] or kernels.default_threads()
    import numba
    if s["threads"] > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"--threads {s['threads']} is more than the {numba.config.NUMBA_NUM_THREADS} "
                         "threads the kernels' pool holds (NUMBA_NUM_THREADS, set before start-up)")
    try:
        spec = models.read_spec(s["model"])
    except ValueError as exc:                        # SpecError: names the file, layer and field
        raise UsageError(f"--model {exc}") from None
    # the 1998 preset is LeNet-5 on 28x28 digits padded to 32x32; other models pad only when asked
    if not s["pad32"] and s["model"] in models.PRESETS and spec["input_shape"] == [1, 32, 32]:
        s["pad32"], sources["pad32"] = True, f"model {s['model']}"
    return s, sources


def _check_combinations(s: dict) -> None:
    mirrors = tta.mirror_problem(s["tta"], s["dataset"])
    checks = [
        (s["epochs"] >= 1, f"--epochs must be >= 1, got {s['epochs']}"),
        (s["batch_size"] >= 1, f"--batch-size must be >= 1, got {s['batch_size']}"),
        (s["limit"] is None or s["limit"] >= 10, f"--limit must be >= 10, got {s['limit']}"),
        (s["threads"] is None or s["threads"] >= 1, f"--threads must be >= 1, got {s['threads']}"),
        (s["early_stopping"] is None or s["early_stopping"] >= 1,
         f"--early-stopping must be >= 1, got {s['early_stopping']}"),
        (not (s["early_stopping"] and s["monitor"].startswith("val") and s["val_split"] == 0),
         f"--early-stopping monitors {s['monitor']}, which needs --val-split > 0"),
        (not (s["dataset"] == "idx" and not s["data_dir"]), "--dataset idx needs --data-dir"),
        (mirrors is None, mirrors),
        (not s.get("tensorboard") or _importable("tensorboardX"),
         "--tensorboard needs tensorboardX: pip install 'fastlenet[tensorboard]'"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _lr_list(text: str) -> list:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(f"--lr-list must be comma-separated positive numbers, got {text!r}")
    return values


#: (flag, settings key, interval): "[a, b)" includes a and excludes b
_NUMBER_RANGES = [
    ("--lr", "lr", "(0.0, inf)"), ("--momentum", "momentum", "[0.0, 1.0)"),
    ("--weight-decay", "weight_decay", "[0.0, inf)"), ("--label-smoothing", "label_smoothing", "[0.0, 1.0)"),
    ("--gamma", "gamma", "(0.0, inf)"), ("--min-lr", "min_lr", "[0.0, inf)"),
    ("--plateau-factor", "plateau_factor", "(0.0, 1.0)"), ("--min-delta", "min_delta", "[0.0, inf)"),
    ("--val-split", "val_split", "[0.0, 1.0)"), ("--max-shift", "max_shift", "[0, 14]"),
    ("--seed", "seed", f"[0, {2 ** 32 - 1}]"), ("--step-size", "step_size", "[1, inf)"),
    ("--plateau-patience", "plateau_patience", "[0, inf)"), ("--bn-momentum", "bn_momentum", "[0.0, 1.0]"),
    ("--bn-eps", "bn_eps", "(0.0, 1.0)"), ("--rotate", "rotate", "[0.0, 180.0]"), ("--erase", "erase", "[0.0, 1.0]"),
    ("--elastic", "elastic", "[0.0, 8.0]"),
]


def _check_numbers(s: dict) -> None:
    """Every numeric flag finite and in its range, named in the message (checked up front)."""
    for flag, key, interval in _NUMBER_RANGES:
        v = s.get(key)
        if v is None:
            continue
        lo_ok, hi_ok = interval[0] == "[", interval[-1] == "]"
        lo, hi = (float(t) for t in interval[1:-1].split(","))
        ok = math.isfinite(v) and (v >= lo if lo_ok else v > lo) and (v <= hi if hi_ok else v < hi)
        if not ok:
            raise UsageError(f"{flag} must be a number in {interval}, got {v}")
