"""``python -m fastlenet.train``: train LeNet-5 (or any model file) on MNIST, Fashion-MNIST,
CIFAR-10 or any IDX dataset.

Writes a run directory (config.json, history.csv, metrics.json, best.npz,
last.npz and, with matplotlib, curves/confusion/samples PNGs), prints a line
per epoch and the final test accuracy.  Ctrl-C / SIGTERM save last.npz and
``--resume RUN_DIR`` continues exactly where the run stopped.

The Python API is :func:`fastlenet.trainer.fit` (re-exported here as ``fit``).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import __version__, checkpoint, data, kernels, models, optim, recipes, resume, tta
from .callbacks import TensorBoard
from .governor import ThreadGovernor
from .kernels import numba_warmup
from .metrics import confusion_matrix, evaluate, per_class_accuracy
from .rundir import RunDirectory, RunDirectoryError
from .settings import UsageError, build_parser, resolve_settings
from .trainer import Trainer, TrainingStopped, fit

__all__ = ["main", "fit", "build_parser", "resolve_settings", "UsageError"]

def check_splits(s: dict, ds: data.Dataset) -> None:
    """The splits the flags asked for are not empty (before a run directory is created)."""
    if len(ds.y_train) == 0:
        raise UsageError(f"--val-split {s['val_split']} leaves no training images of the "
                         f"{len(ds.y_train) + len(ds.y_val if ds.y_val is not None else [])}")
    if s["val_split"] > 0 and (ds.y_val is None or len(ds.y_val) == 0):
        raise UsageError(f"--val-split {s['val_split']} leaves no validation images of {len(ds.y_train)}; "
                         "use a larger --val-split" + (" (--early-stopping needs them)" if s["early_stopping"] else ""))


def prepare_data(s: dict, log) -> data.Dataset:
    ds = data.load(s["dataset"], data_dir=s["data_dir"], limit=s["limit"] or None)
    if s["val_split"] > 0:
        data.split_validation(ds, s["val_split"], seed=s["seed"], how=s["val_from"])
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
        return optim.ReduceLROnPlateau(s["lr"], s["plateau_factor"], s["plateau_patience"], s["min_lr"],
                                       style=s["plateau_style"])
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
    """(settings, sources, run directory, the --epochs asked on --resume or None) of a new
    run or of the one ``--resume`` names (see fastlenet.resume)."""
    if args.resume:
        return _resumed_settings(args, argv)
    s, sources = resolve_settings(args)
    return s, sources, RunDirectory(s["out"] if s["out"] else default_run_dir(s)), None   # created after the data checks


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
    required = ({k for k, v in recipes.BUILTIN.items() if v is not None} | set(recipes.OPTIMIZER_DEFAULTS["sgd"])) \
        - set(recipes.LEGACY)
    stored = {**{k: v for k, v in recipes.LEGACY.items() if k not in stored}, **stored}   # knobs newer than the run
    ns = resume.stored_namespace(build_parser(), stored, config, required)
    if run_dir.file("model.json").is_file():         # the network this run trained, whatever --model named
        ns.model = str(run_dir.file("model.json"))
    for key in ("epochs", "threads", "fixed_threads", "backend"):
        if key in explicit:
            setattr(ns, key, explicit[key])
    ns.recipe = None                                 # the stored settings are complete: no recipe fills in
    try:
        s, sources = resolve_settings(ns)
    except UsageError as exc:
        blamed = any(str(exc).startswith("--" + k) for k in explicit)
        raise UsageError(str(exc) if blamed else f"{config}: settings: {exc}") from None
    s["recipe"] = stored.get("recipe", s["recipe"])
    return s, sources, run_dir, explicit.get("epochs")


def make_model(s: dict, num_classes: int, data_shape) -> models.Sequential:
    """The network of the run: ``--model`` with the activation / pooling overrides, its
    output resized to the data's classes; refused (UsageError) when it does not take
    the data's (C, H, W)."""
    model = settings_model(s, num_classes)
    if tuple(data_shape) != model.input_shape:
        hint = " (--pad32 pads 28x28 images to 32x32)" if tuple(data_shape[1:]) == (28, 28) and \
            model.input_shape[1:] == (32, 32) else ""
        raise UsageError(f"--model {s['model']} takes {model.input_shape} (C, H, W) inputs but the data is "
                         f"{tuple(data_shape)}{hint}")
    return model


def settings_model(s: dict, num_classes: int = 10) -> models.Sequential:
    """``--model`` with the run's overrides (activation, pooling, init, batch norm) and
    ``num_classes`` outputs; UsageError when it cannot be built."""
    try:
        return models.build(s["model"], backend=s["backend"], seed=s["seed"], activation=s["activation"],
                            pool=s["pool"], dense_activation=s["dense_activation"], num_classes=num_classes,
                            init=None if s["init"] == "auto" else s["init"], bn_momentum=s["bn_momentum"],
                            bn_eps=s["bn_eps"])
    except ValueError as exc:
        raise UsageError(f"--model {exc}") from None


def _make_trainer(s: dict, model, ds, run_dir: RunDirectory, log, progress: bool) -> Trainer:
    early = (optim.EarlyStopping(s["early_stopping"], monitor=s["monitor"], min_delta=s["min_delta"],
                                 restore_best=s["restore_best"]) if s["early_stopping"] else None)
    monitor = s["monitor"] if ds.x_val is not None or not s["monitor"].startswith("val") else \
        s["monitor"].replace("val_", "train_")
    return Trainer(model, ds, make_optimizer(s, model), make_schedule(s), s["epochs"], s["batch_size"],
                   s["seed"], early, s["augment"], s["label_smoothing"], s["max_shift"], run_dir,
                   meta={"settings": s, "data_source": ds.source}, log=log, progress=progress, monitor=monitor,
                   callbacks=[TensorBoard(run_dir.file("tensorboard"))] if s.get("tensorboard") else [],
                   rotate=s["rotate"], erase=s["erase"], elastic=s["elastic"], governor=make_governor(s))


def make_governor(s: dict):
    """The thread governor for a run (None: --fixed-threads, one thread, or the numpy
    backend, whose BLAS threads are not the kernels' pool)."""
    return ThreadGovernor.for_training(s["backend"], s["threads"], bool(s.get("fixed_threads")))


def _start_compiling(s: dict, log):
    """The numba backend compiles its kernels on first use: when the network's kernels are not
    in Numba's cache yet, say so and start the helper that compiles them from the far end
    (numba_warmup; returns it, or None)."""
    if s["backend"] != "numba":
        return None
    from .kernels import numba_backend
    spec = settings_model(s).to_spec()
    entries = numba_warmup.network_kernels(spec)
    if not (numba_warmup.uncompiled(entries) if entries is not None else not numba_backend.cache_is_warm()):
        return None
    helper = numba_warmup.start_helper(spec) if entries is not None else None
    log("note: first run of the numba backend on this network: compiling the kernels it uses "
        f"({'about 6 s, on two processes' if helper else '5-15 s'}; once, cached for the next runs)")
    return helper


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


def _test_metrics(trainer: Trainer, ds, t_start: float, test_weights: str = "best",
                  tta_kind: str = "none") -> tuple:
    """The best epoch's weights (best.npz's), or with ``test_weights="last"`` the final ones,
    on the test set, under test-time augmentation ``tta_kind`` (fastlenet.tta; then the
    plain images' figures too) -> (metrics doc, confusion, predictions)."""
    if test_weights == "best":
        trainer.restore_best()
    history = trainer.history
    test_loss, test_acc, pred = tta.evaluate(trainer.model, ds.x_test, ds.y_test, tta_kind)
    cm = confusion_matrix(ds.y_test, pred, ds.num_classes)
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "test_weights": test_weights, "tta": tta_kind,
               "best_epoch": history.best_epoch,
               "monitor": trainer.tracker.monitor, "epochs": history.as_dicts(),
               "stopped_early": trainer.stopped_early,
               "train_seconds": sum(e.seconds for e in history.epochs),
               "wall_seconds": time.perf_counter() - t_start, "confusion_matrix": cm.tolist(),
               "per_class_accuracy": per_class_accuracy(cm).tolist()}
    if tta_kind != "none":
        metrics["test_loss_plain"], metrics["test_accuracy_plain"], _ = evaluate(trainer.model, ds.x_test, ds.y_test)
    if trainer.governor is not None:
        metrics["threads_used"] = {str(n): k for n, k in sorted(trainer.governor.steps_at.items())}
    started = process_start_time()
    if started is not None and trainer.first_batch_done is not None:
        metrics["first_batch_seconds"] = trainer.first_batch_done - started   # start-up latency
    return metrics, cm, pred


def run(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.train") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.recipe == "list":
        print(recipes.listing())
        return 0
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    t_start = time.perf_counter()
    s, sources, run_dir, asked_epochs = _open_run(args, argv)
    try:
        done = resume.finished(run_dir) if args.resume else None
        if done is not None and (asked_epochs is None or asked_epochs <= len(done["epochs"])):
            print(resume.finished_message(run_dir, done, asked_epochs), flush=True)
            return 0
        if done is not None:
            resume.finished_message(run_dir, done, asked_epochs)      # refuses an early-stopped run
        return _train(args, s, sources, run_dir, log, t_start)
    finally:
        run_dir.unlock()                   # another training may use the folder now


def _train(args, s: dict, sources: dict, run_dir: RunDirectory, log, t_start: float) -> int:
    """Train the run ``_open_run`` opened (and locked): data, model, epochs, test metrics."""
    kernels.set_num_threads(s["threads"])
    helper = _start_compiling(s, log)
    try:
        return _train_with_data(args, s, sources, run_dir, log, t_start)
    finally:
        numba_warmup.stop_helper(helper)


def _train_with_data(args, s: dict, sources: dict, run_dir: RunDirectory, log, t_start: float) -> int:
    ds = prepare_data(s, log)
    model = make_model(s, ds.num_classes, ds.x_train.shape[1:])
    if not args.resume:
        run_dir.create()                   # only now: nothing is made for a run that cannot start
    trainer = _make_trainer(s, model, ds, run_dir, log, progress=sys.stderr.isatty() and not args.quiet)
    if args.resume:
        _restore(trainer, s, run_dir, log)
    else:
        run_dir.write_config({"settings": s, "sources": sources, "recipe": s["recipe"], "versions": versions(),
                              "backend": s["backend"], "threads": s["threads"], "data_source": ds.source})
        run_dir.write_model(trainer.model.to_spec())
        log(f"model: {trainer.model.name} ({trainer.model.num_params():,} parameters), backend {s['backend']}, "
            f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}, run directory {run_dir.path}")
    history = trainer.run()
    if trainer.governor is not None and trainer.governor.switches:
        log(trainer.governor.summary())
    metrics, cm, pred = _test_metrics(trainer, ds, t_start, s["test_weights"], s["tta"])
    run_dir.write_metrics(metrics)
    if not s["no_plots"]:
        run_dir.write_plots(history, cm, ds, pred, log)
    tested = "best epoch" if s["test_weights"] == "best" else "final weights; best epoch"
    augmented = (f" ({tta.describe(s['tta'])}; plain images "
                 f"{100 * metrics['test_accuracy_plain']:.2f}%)" if s["tta"] != "none" else "")
    print(f"test accuracy {100 * metrics['test_accuracy']:.2f}%{augmented}  test loss {metrics['test_loss']:.4f}  "
          f"{tested} {history.best_epoch}  total {metrics['wall_seconds']:.1f}s  run written to {run_dir.path}",
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
