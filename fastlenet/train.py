"""``python -m fastlenet.train``: train LeNet-5 (or any model file) on MNIST, Fashion-MNIST,
CIFAR-10 or any IDX dataset.

Writes a run directory (config.json, history.csv, metrics.json, best.npz,
last.npz and, with matplotlib, curves/confusion/samples PNGs), prints a line
per epoch and the final test accuracy.  Ctrl-C / SIGTERM save last.npz and
``--resume RUN_DIR`` continues exactly where the run stopped.

The Python API is :func:`fastlenet.trainer.fit` (re-exported here as ``fit``).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import __version__, checkpoint, data, kernels, models, optim, resume
from .callbacks import TensorBoard
from .cli import HelpFormatter
from .metrics import confusion_matrix, evaluate, per_class_accuracy
from .rundir import RunDirectory, RunDirectoryError
from .trainer import Trainer, TrainingStopped, fit

__all__ = ["main", "fit", "build_parser", "RECIPES"]

#: The default recipe per dataset (the best found for LeNet-5 here; see the README's table).
RECIPES = {
    # the README's "Results" table gives what each recipe reaches, measured
    "mnist": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adam", lr=2e-3,
                  weight_decay=0.0, schedule="cosine", augment=True, max_shift=2, val_split=0.05),
    # clothes are centred: smaller shifts, plus flips and decoupled weight decay
    "fashion-mnist": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adamw", lr=3e-3,
                          weight_decay=1e-3, schedule="cosine", augment=True, max_shift=1, val_split=0.05),
    "idx": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adam", lr=2e-3,
                weight_decay=0.0, schedule="cosine", augment=False, max_shift=2, val_split=0.05),
    # a small CIFAR-shaped CNN (fastlenet/presets/cifar-cnn.json); shifts and flips
    "cifar10": dict(model="cifar-cnn", epochs=20, batch_size=128, optimizer="adam", lr=1e-3,
                    weight_decay=0.0, schedule="cosine", augment=True, max_shift=2, val_split=0.05),
}
COMMON_DEFAULTS = dict(momentum=0.9, step_size=5, gamma=0.5, min_lr=0.0,
                       plateau_factor=0.2, max_shift=2, plateau_patience=3, min_delta=0.0,
                       monitor="val_accuracy", label_smoothing=0.0, seed=0)


class UsageError(Exception):
    """A bad flag combination: reported as one line, exit code 2."""


def build_parser(prog: str = "python -m fastlenet.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train LeNet-5 with fastlenet's compiled kernels. Unset options take the "
                    "dataset's default recipe (shown as 'recipe').",
        formatter_class=HelpFormatter,
    )
    _data_flags(p.add_argument_group("data"))
    _model_flags(p.add_argument_group("model"))
    _optimisation_flags(p.add_argument_group("optimisation"))
    _schedule_flags(p.add_argument_group("schedule and early stopping"))
    _run_flags(p.add_argument_group("run"))
    return p


def _recipe_summary() -> str:
    return "recipe: " + "; ".join(f"{d}: {r['model']}, {r['epochs']} epochs, batch {r['batch_size']}, "
                                  f"{r['optimizer']} lr {r['lr']:g} (weight decay {r['weight_decay']:g}), "
                                  f"{r['schedule']} schedule, shifts up to {r['max_shift']} px"
                                  for d, r in RECIPES.items() if d != "idx")


def _data_flags(g) -> None:
    g.add_argument("--dataset", choices=data.DATASET_NAMES, default="mnist",
                   help="registered dataset, or 'idx' for any folder of the four IDX files (needs --data-dir)")
    g.add_argument("--data-dir", default=None,
                   help="folder holding the IDX files (itself or <dir>/<dataset>); default: $FASTLENET_DATA, "
                        "the user cache, /usr/share/datasets, then download")
    g.add_argument("--limit", type=int, default=None, help="use only the first N training images (quick runs)")
    g.add_argument("--val-split", type=float, default=None,
                   help="fraction of the training set held out (stratified, seeded) for validation; 0 = none. "
                        "recipe: 0.05")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts of up to 2 px, plus horizontal flips where the dataset allows (Fashion-MNIST). "
                        "recipe: on for mnist and fashion-mnist")
    g.add_argument("--max-shift", type=int, default=None,
                   help="largest random shift in pixels used by --augment (0: flips only). recipe: 1 for "
                        "fashion-mnist, 2 otherwise")
    g.add_argument("--standardize", action="store_true", help="subtract the train-set mean, divide by its std")
    g.add_argument("--pad32", action="store_true", help="zero-pad 28x28 images to 32x32 (automatic for lenet5-1998)")


def _model_flags(g) -> None:
    g.add_argument("--model", default=None, metavar="NAME|FILE",
                   help=f"a preset ({', '.join(models.PRESETS)}) or a model file (JSON, see docs/models.md; a run's "
                        "own RUN/model.json trains it again). recipe: lenet5, cifar-cnn for cifar10")
    g.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default=None,
                   help="override the preset's activation")
    g.add_argument("--dense-activation", choices=["relu", "sigmoid", "tanh"], default=None,
                   help="a different activation for the dense layers")
    g.add_argument("--pool", choices=["max", "avg"], default=None, help="override the preset's pooling")


def _optimisation_flags(g) -> None:
    g.add_argument("--epochs", type=int, default=None, help="number of epochs. " + _recipe_summary())
    g.add_argument("--batch-size", type=int, default=None, help="mini-batch size. recipe: 128")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None,
                   help="recipe: adamw for fashion-mnist, adam otherwise")
    g.add_argument("--lr", type=float, default=None, help="learning rate. recipe: 0.003 fashion-mnist, 0.002 otherwise")
    g.add_argument("--momentum", type=float, default=COMMON_DEFAULTS["momentum"], help="SGD momentum")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="L2 (sgd, adam) or decoupled (adamw) weight decay on weights. recipe: 0.001 with adamw "
                        "for fashion-mnist, else 0")
    g.add_argument("--label-smoothing", type=float, default=COMMON_DEFAULTS["label_smoothing"],
                   help="target (1 - e) one-hot + e / classes")


def _schedule_flags(g) -> None:
    g.add_argument("--schedule", choices=["none", "step", "cosine", "plateau"], default=None,
                   help="learning-rate schedule. recipe: cosine")
    g.add_argument("--step-size", type=int, default=COMMON_DEFAULTS["step_size"], help="step: epochs per decay")
    g.add_argument("--gamma", type=float, default=COMMON_DEFAULTS["gamma"], help="step: decay factor")
    g.add_argument("--min-lr", type=float, default=COMMON_DEFAULTS["min_lr"], help="cosine/plateau: floor")
    g.add_argument("--plateau-factor", type=float, default=COMMON_DEFAULTS["plateau_factor"],
                   help="plateau: factor applied to the rate")
    g.add_argument("--plateau-patience", type=int, default=COMMON_DEFAULTS["plateau_patience"],
                   help="plateau: epochs without val-loss improvement before decaying")
    g.add_argument("--lr-list", type=str, default=None,
                   help="comma-separated learning rates, one per epoch (the last one repeats); overrides --schedule")
    g.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of --monitor, restoring the best weights")
    g.add_argument("--monitor", choices=sorted(optim.METRICS), default=COMMON_DEFAULTS["monitor"],
                   help="the metric that picks the best epoch: best.npz, early stopping and the test "
                        "accuracy all use it (train_* when there is no validation set)")
    g.add_argument("--min-delta", type=float, default=COMMON_DEFAULTS["min_delta"],
                   help="smallest change of --monitor that counts as an improvement")


def _run_flags(g) -> None:
    g.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None,
                   help="kernel backend; default: $FASTLENET_BACKEND, else the fastest available")
    g.add_argument("--threads", type=int, default=None,
                   help="threads for the kernels; default: the CPUs this process may use (affinity, cgroup quota)")
    g.add_argument("--seed", type=int, default=COMMON_DEFAULTS["seed"],
                   help="seed for the weights, the split, the shuffling and the augmentation")
    g.add_argument("--out", default=None, help="run directory; default runs/<dataset>-<model>-<timestamp>")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.npz with its own settings (only --epochs, --threads, --backend and --quiet may be given with it)")
    g.add_argument("--no-plots", action="store_true", help="do not draw curves.png, confusion.png, samples.png")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars per epoch to RUN/tensorboard (the tensorboard extra)")
    g.add_argument("--quiet", action="store_true", help="print only the final result")


def resolve_settings(args: argparse.Namespace) -> dict:
    """Flags + the dataset's recipe -> the complete, validated settings of a run."""
    s = {k: v for k, v in vars(args).items()}
    for key, value in {**COMMON_DEFAULTS, **RECIPES[args.dataset]}.items():
        if s.get(key) is None:
            s[key] = value
    if s["lr_list"]:
        s["lr_list"] = _lr_list(args.lr_list)
        if s["lr"] is None or args.lr is None:
            s["lr"] = s["lr_list"][0]
    _check_numbers(s)
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
        (not s.get("tensorboard") or _importable("tensorboardX"),
         "--tensorboard needs tensorboardX: pip install 'fastlenet[tensorboard]'"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
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
    s["pad32"] = bool(s["pad32"] or (s["model"] in models.PRESETS and spec["input_shape"][1:] == [32, 32]
                                     and spec["input_shape"][0] == 1))
    return s


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
    ("--plateau-patience", "plateau_patience", "[0, inf)"),
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


def check_splits(s: dict, ds: data.Dataset) -> None:
    """The splits the flags asked for are not empty (before a run directory is created)."""
    if len(ds.y_train) == 0:
        raise UsageError(f"--val-split {s['val_split']} leaves no training images of the "
                         f"{len(ds.y_train) + len(ds.y_val if ds.y_val is not None else [])}")
    if s["val_split"] > 0 and (ds.y_val is None or len(ds.y_val) == 0):
        raise UsageError(f"--val-split {s['val_split']} leaves no validation images of {len(ds.y_train)}; "
                         "use a larger --val-split" + (" (--early-stopping needs them)" if s["early_stopping"] else ""))


def prepare_data(s: dict, log) -> data.Dataset:
    ds = data.load(s["dataset"], data_dir=s["data_dir"])
    if s["limit"]:
        ds.x_train, ds.y_train = ds.x_train[: s["limit"]], ds.y_train[: s["limit"]]
    if s["val_split"] > 0:
        data.split_validation(ds, s["val_split"], seed=s["seed"])
    check_splits(s, ds)                          # before statistics are taken of an empty split
    if s["standardize"]:
        data.standardize(ds)
    if s["pad32"]:
        for name in ("x_train", "x_val", "x_test"):
            if getattr(ds, name) is not None:
                setattr(ds, name, data.pad_to(getattr(ds, name), 32))
    for note in ds.notes:
        print(f"fastlenet.train: warning: {note}", file=sys.stderr, flush=True)
    val = f", {len(ds.y_val)} validation" if ds.y_val is not None else ""
    log(f"data: {ds.name} from {ds.source}: {len(ds.y_train)} training{val}, {len(ds.y_test)} test images "
        f"{tuple(ds.x_train.shape[1:])}")
    return ds


def make_optimizer(s: dict, model):
    if s["optimizer"] == "sgd":
        return optim.SGD(model.params, lr=s["lr"], momentum=s["momentum"], nesterov=s["nesterov"],
                         weight_decay=s["weight_decay"])
    return optim.Adam(model.params, lr=s["lr"], weight_decay=s["weight_decay"],
                      decoupled=s["optimizer"] == "adamw", backend=model.backend)


def make_schedule(s: dict) -> optim.Schedule:
    if s["lr_list"]:
        return optim.ListLR(s["lr_list"])
    kind = s["schedule"]
    if kind == "step":
        return optim.StepLR(s["lr"], s["step_size"], s["gamma"])
    if kind == "cosine":
        return optim.CosineLR(s["lr"], s["epochs"], s["min_lr"])
    if kind == "plateau":
        return optim.ReduceLROnPlateau(s["lr"], s["plateau_factor"], s["plateau_patience"], s["min_lr"])
    return optim.Schedule(s["lr"])


def versions() -> dict:
    import numba
    out = {"fastlenet": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "platform": platform.platform()}
    try:
        import Cython
        out["cython"] = Cython.__version__
    except ImportError:
        pass
    return out


def process_start_time() -> Optional[float]:
    """When this process started (epoch seconds), from /proc; None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def default_run_dir(s: dict) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in models.read_spec(s["model"])["name"])
    return Path("runs") / f"{s['dataset']}-{name}-{stamp}"


def _open_run(args, argv) -> tuple:
    """(settings, run directory, the --epochs asked on --resume or None) of a new run or
    of the one ``--resume`` names (see fastlenet.resume)."""
    if args.resume:
        return _resumed_settings(args, argv)
    s = resolve_settings(args)
    return s, RunDirectory(s["out"] if s["out"] else default_run_dir(s)), None   # created after the data checks


def _resumed_settings(args, argv) -> tuple:
    run_dir = RunDirectory(args.resume)
    stored = run_dir.read_settings()                 # is it a run at all? (locks it)
    try:
        return _checked_resume(args, argv, run_dir, stored)
    except BaseException:
        run_dir.unlock()
        raise


def _checked_resume(args, argv, run_dir: RunDirectory, stored: dict) -> tuple:
    explicit = resume.explicit_flags(build_parser, argv)
    resume.check_flags(explicit)
    config = run_dir.file("config.json")
    required = set(COMMON_DEFAULTS) | {k for recipe in RECIPES.values() for k in recipe}
    ns = resume.stored_namespace(build_parser(), stored, config, required)
    if run_dir.file("model.json").is_file():         # the network this run trained, whatever --model named
        ns.model = str(run_dir.file("model.json"))
    for key in ("epochs", "threads", "backend"):
        if key in explicit:
            setattr(ns, key, explicit[key])
    try:
        s = resolve_settings(ns)
    except UsageError as exc:
        blamed = any(str(exc).startswith("--" + k) for k in explicit)
        raise UsageError(str(exc) if blamed else f"{config}: settings: {exc}") from None
    return s, run_dir, explicit.get("epochs")


def make_model(s: dict, num_classes: int, data_shape) -> models.Sequential:
    """The network of the run: ``--model`` with the activation / pooling overrides, its
    output resized to the data's classes; refused (UsageError) when it does not take
    the data's (C, H, W)."""
    try:
        model = models.build(s["model"], backend=s["backend"], seed=s["seed"], activation=s["activation"],
                             pool=s["pool"], dense_activation=s["dense_activation"], num_classes=num_classes)
    except ValueError as exc:
        raise UsageError(f"--model {exc}") from None
    if tuple(data_shape) != model.input_shape:
        hint = " (--pad32 pads 28x28 images to 32x32)" if tuple(data_shape[1:]) == (28, 28) and \
            model.input_shape[1:] == (32, 32) else ""
        raise UsageError(f"--model {s['model']} takes {model.input_shape} (C, H, W) inputs but the data is "
                         f"{tuple(data_shape)}{hint}")
    return model


def _make_trainer(s: dict, model, ds, run_dir: RunDirectory, log, progress: bool) -> Trainer:
    early = (optim.EarlyStopping(s["early_stopping"], monitor=s["monitor"], min_delta=s["min_delta"])
             if s["early_stopping"] else None)
    monitor = s["monitor"] if ds.x_val is not None or not s["monitor"].startswith("val") else \
        s["monitor"].replace("val_", "train_")
    return Trainer(model, ds, make_optimizer(s, model), make_schedule(s), s["epochs"], s["batch_size"],
                   s["seed"], early, s["augment"], s["label_smoothing"], s["max_shift"], run_dir,
                   meta={"settings": s, "data_source": ds.source}, log=log, progress=progress, monitor=monitor,
                   callbacks=[TensorBoard(run_dir.file("tensorboard"))] if s.get("tensorboard") else [])


def _say_if_compiling(backend: str, log) -> None:
    """The numba backend compiles its kernels on first use: say so, once, when its cache is cold."""
    if backend != "numba":
        return
    from .kernels import numba_backend
    if not numba_backend.cache_is_warm():
        log("note: first run of the numba backend: compiling its kernels (tens of seconds, once; "
            "cached for the next runs)")


def _restore(trainer: Trainer, s: dict, run_dir: RunDirectory, log) -> None:
    """Put the trainer where last.npz stopped; record a changed --epochs in config.json."""
    ckpt = checkpoint.load_into(trainer.model, run_dir.file("last.npz"))
    trainer.restore(ckpt, run_dir.file("last.npz"))
    doc = run_dir.read_config()
    before = doc["settings"]["epochs"]
    if trainer.epoch > s["epochs"]:
        raise UsageError(f"--epochs {s['epochs']} is fewer than the {trainer.epoch} epochs {run_dir.path} "
                         "has already trained")
    if s["epochs"] != before:
        doc["settings"]["epochs"] = s["epochs"]
        doc.setdefault("epochs_changed", []).append({"from": before, "to": s["epochs"], "at_epoch": trainer.epoch})
        run_dir.write_config(doc)
        spans = " (the cosine schedule now spans them all)" if s["schedule"] == "cosine" and not s["lr_list"] else ""
        log(f"epochs: {before} -> {s['epochs']}{spans}")
    log(f"resuming {run_dir.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}")


def _test_metrics(trainer: Trainer, ds, t_start: float) -> tuple:
    """The best epoch's weights (best.npz's) on the test set -> (metrics doc, confusion, predictions)."""
    trainer.restore_best()
    history = trainer.history
    test_loss, test_acc, pred = evaluate(trainer.model, ds.x_test, ds.y_test)
    cm = confusion_matrix(ds.y_test, pred, ds.num_classes)
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "best_epoch": history.best_epoch,
               "monitor": trainer.tracker.monitor, "epochs": history.as_dicts(),
               "stopped_early": trainer.stopped_early,
               "train_seconds": sum(e.seconds for e in history.epochs),
               "wall_seconds": time.perf_counter() - t_start, "confusion_matrix": cm.tolist(),
               "per_class_accuracy": per_class_accuracy(cm).tolist()}
    started = process_start_time()
    if started is not None and trainer.first_batch_done is not None:
        metrics["first_batch_seconds"] = trainer.first_batch_done - started   # start-up latency
    return metrics, cm, pred


def run(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.train") -> int:
    args = build_parser(prog).parse_args(argv)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    t_start = time.perf_counter()
    s, run_dir, asked_epochs = _open_run(args, argv)
    try:
        done = resume.finished(run_dir) if args.resume else None
        if done is not None and (asked_epochs is None or asked_epochs <= len(done["epochs"])):
            print(resume.finished_message(run_dir, done, asked_epochs), flush=True)
            return 0
        if done is not None:
            resume.finished_message(run_dir, done, asked_epochs)      # refuses an early-stopped run
        return _train(args, s, run_dir, log, t_start)
    finally:
        run_dir.unlock()                   # another training may use the folder now


def _train(args, s: dict, run_dir: RunDirectory, log, t_start: float) -> int:
    """Train the run ``_open_run`` opened (and locked): data, model, epochs, test metrics."""
    kernels.set_num_threads(s["threads"])
    ds = prepare_data(s, log)
    model = make_model(s, ds.num_classes, ds.x_train.shape[1:])
    if not args.resume:
        run_dir.create()                   # only now: nothing is made for a run that cannot start
    trainer = _make_trainer(s, model, ds, run_dir, log, progress=sys.stderr.isatty() and not args.quiet)
    if args.resume:
        _restore(trainer, s, run_dir, log)
    else:
        run_dir.write_config({"settings": s, "versions": versions(), "backend": s["backend"],
                              "threads": s["threads"], "data_source": ds.source})
        run_dir.write_model(trainer.model.to_spec())
        log(f"model: {trainer.model.name} ({trainer.model.num_params():,} parameters), backend {s['backend']}, "
            f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}, run directory {run_dir.path}")
    _say_if_compiling(s["backend"], log)
    history = trainer.run()
    metrics, cm, pred = _test_metrics(trainer, ds, t_start)
    run_dir.write_metrics(metrics)
    if not s["no_plots"]:
        run_dir.write_plots(history, cm, ds, pred, log)
    print(f"test accuracy {100 * metrics['test_accuracy']:.2f}%  test loss {metrics['test_loss']:.4f}  "
          f"best epoch {history.best_epoch}  total {metrics['wall_seconds']:.1f}s  run written to {run_dir.path}",
          flush=True)
    return 0


def main(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.train") -> int:
    """The command line: one-line errors on stderr, exit codes 2 (usage/data), 3 (diverged),
    4 (could not save), 128+signal (interrupted)."""
    try:
        return run(argv, prog)
    except TrainingStopped as exc:
        print(f"fastlenet.train: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (UsageError, RunDirectoryError, data.DatasetError, checkpoint.CheckpointError, ValueError) as exc:
        print(f"fastlenet.train: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("fastlenet.train: interrupted; the last checkpoint on disk is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
