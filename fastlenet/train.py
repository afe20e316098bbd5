"""``python -m fastlenet.train``: train LeNet-5 on MNIST, Fashion-MNIST or any IDX dataset.

Writes a run directory (config.json, history.csv, metrics.json, best.npz,
last.npz and, with matplotlib, curves/confusion/samples PNGs), prints a line
per epoch and the final test accuracy.  Ctrl-C / SIGTERM save last.npz and
``--resume RUN_DIR`` continues exactly where the run stopped.

The Python API is :func:`fastlenet.trainer.fit` (re-exported here as ``fit``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import __version__, checkpoint, data, kernels, models, optim
from .trainer import Trainer, TrainingStopped, confusion_matrix, evaluate, fit, write_json

__all__ = ["main", "fit", "build_parser", "RECIPES"]

#: The default recipe per dataset (the best found for LeNet-5 here; see the README's table).
RECIPES = {
    # 99.46% test accuracy in 20 epochs here (README, "Results")
    "mnist": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adam", lr=2e-3,
                  weight_decay=0.0, schedule="cosine", augment=True, max_shift=2, val_split=0.05),
    # clothes are centred: smaller shifts, plus flips and decoupled weight decay
    "fashion-mnist": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adamw", lr=3e-3,
                          weight_decay=1e-3, schedule="cosine", augment=True, max_shift=1, val_split=0.05),
    "idx": dict(model="lenet5", epochs=20, batch_size=128, optimizer="adam", lr=2e-3,
                weight_decay=0.0, schedule="cosine", augment=False, max_shift=2, val_split=0.05),
}
COMMON_DEFAULTS = dict(momentum=0.9, step_size=5, gamma=0.5, min_lr=0.0,
                       plateau_factor=0.2, max_shift=2, plateau_patience=3, min_delta=0.0,
                       monitor="val_loss", label_smoothing=0.0, seed=0)


class UsageError(Exception):
    """A bad flag combination: reported as one line, exit code 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: ...)" except where the dataset's recipe supplies the value."""

    def _get_help_string(self, action):
        if action.default is None and "recipe" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastlenet.train",
        description="Train LeNet-5 with fastlenet's compiled kernels. Unset options take the "
                    "dataset's default recipe (shown as 'recipe').",
        formatter_class=_HelpFormatter,
    )
    recipe = "recipe: " + "; ".join(f"{d}: {r['model']}, {r['epochs']} epochs, batch {r['batch_size']}, "
                                     f"{r['optimizer']} lr {r['lr']:g} (weight decay {r['weight_decay']:g}), "
                                     f"{r['schedule']} schedule, shifts up to {r['max_shift']} px"
                                     for d, r in RECIPES.items() if d != "idx")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist", "idx"], default="mnist",
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
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=sorted(models.PRESETS), default=None, help="LeNet-5 preset. recipe: lenet5")
    g.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default=None,
                   help="override the preset's activation")
    g.add_argument("--dense-activation", choices=["relu", "sigmoid", "tanh"], default=None,
                   help="a different activation for the dense layers")
    g.add_argument("--pool", choices=["max", "avg"], default=None, help="override the preset's pooling")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="number of epochs. " + recipe)
    g.add_argument("--batch-size", type=int, default=None, help="mini-batch size. recipe: 128")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None,
                   help="recipe: adamw for fashion-mnist, adam otherwise")
    g.add_argument("--lr", type=float, default=None, help="learning rate. recipe: 0.003 fashion-mnist, 0.002 otherwise")
    g.add_argument("--momentum", type=float, default=COMMON_DEFAULTS["momentum"], help="SGD momentum")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="L2 (sgd, adam) or decoupled (adamw) weight decay on weights. recipe: 0.001 with adamw "
                        "for fashion-mnist, else 0")
    g.add_argument("--label-smoothing", type=float, default=COMMON_DEFAULTS["label_smoothing"])
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
    g.add_argument("--monitor", choices=["val_loss", "val_accuracy", "train_loss", "train_accuracy"],
                   default=COMMON_DEFAULTS["monitor"], help="metric watched by early stopping")
    g.add_argument("--min-delta", type=float, default=COMMON_DEFAULTS["min_delta"],
                   help="smallest change that counts as an improvement (early stopping)")
    g = p.add_argument_group("run")
    g.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None,
                   help="kernel backend; default: $FASTLENET_BACKEND, else the fastest available")
    g.add_argument("--threads", type=int, default=None, help="threads for the kernels; default: all cores")
    g.add_argument("--seed", type=int, default=COMMON_DEFAULTS["seed"],
                   help="seed for the weights, the split, the shuffling and the augmentation")
    g.add_argument("--out", default=None, help="run directory; default runs/<dataset>-<model>-<timestamp>")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.npz with its own settings")
    g.add_argument("--no-plots", action="store_true", help="do not draw curves.png, confusion.png, samples.png")
    g.add_argument("--quiet", action="store_true", help="print only the final result")
    return p


def resolve_settings(args: argparse.Namespace) -> dict:
    """Flags + the dataset's recipe -> the complete, validated settings of a run."""
    s = {k: v for k, v in vars(args).items()}
    for key, value in {**COMMON_DEFAULTS, **RECIPES[args.dataset]}.items():
        if s.get(key) is None:
            s[key] = value
    if s["lr_list"]:
        try:
            s["lr_list"] = [float(v) for v in str(s["lr_list"]).split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--lr-list must be comma-separated numbers, got {args.lr_list!r}") from None
        if s["lr"] is None or args.lr is None:
            s["lr"] = s["lr_list"][0]
    checks = [
        (s["epochs"] >= 1, f"--epochs must be >= 1, got {s['epochs']}"),
        (s["batch_size"] >= 1, f"--batch-size must be >= 1, got {s['batch_size']}"),
        (s["lr"] > 0, f"--lr must be > 0, got {s['lr']}"),
        (0 <= s["val_split"] < 1, f"--val-split must be in [0, 1), got {s['val_split']}"),
        (s["limit"] is None or s["limit"] >= 10, f"--limit must be >= 10, got {s['limit']}"),
        (s["threads"] is None or s["threads"] >= 1, f"--threads must be >= 1, got {s['threads']}"),
        (s["early_stopping"] is None or s["early_stopping"] >= 1,
         f"--early-stopping must be >= 1, got {s['early_stopping']}"),
        (not (s["early_stopping"] and s["monitor"].startswith("val") and s["val_split"] == 0),
         f"--early-stopping monitors {s['monitor']}, which needs --val-split > 0"),
        (not (s["dataset"] == "idx" and not s["data_dir"]), "--dataset idx needs --data-dir"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    s["backend"] = s["backend"] or kernels.default_backend().name
    s["threads"] = s["threads"] or os.cpu_count() or 1
    s["pad32"] = bool(s["pad32"] or models.preset_input_shape(s["model"])[1] == 32)
    return s


def prepare_data(s: dict, log) -> data.Dataset:
    ds = data.load(s["dataset"], data_dir=s["data_dir"])
    if s["limit"]:
        ds.x_train, ds.y_train = ds.x_train[: s["limit"]], ds.y_train[: s["limit"]]
    if s["val_split"] > 0:
        data.split_validation(ds, s["val_split"], seed=s["seed"])
    if s["standardize"]:
        data.standardize(ds)
    if s["pad32"]:
        for name in ("x_train", "x_val", "x_test"):
            if getattr(ds, name) is not None:
                setattr(ds, name, data.pad_to(getattr(ds, name), 32))
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
    return Path("runs") / f"{s['dataset']}-{s['model']}-{stamp}"


def _writable_run_dir(path: Path, resuming: bool) -> Path:
    if not resuming and (path / "last.npz").exists():
        raise UsageError(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to run directory {path}: {exc.strerror or exc}") from None
    return path


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    progress_ok = sys.stderr.isatty() and not args.quiet
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    t_start = time.perf_counter()
    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise UsageError(f"--resume {run_dir}: no config.json there (not a fastlenet run directory)")
        import json
        s = json.loads(cfg_path.read_text())["settings"]
        if not (run_dir / "last.npz").is_file():
            raise UsageError(f"--resume {run_dir}: no last.npz to resume from")
    else:
        s = resolve_settings(args)
        run_dir = Path(s["out"]) if s["out"] else default_run_dir(s)
    run_dir = _writable_run_dir(run_dir, resuming=bool(args.resume))
    kernels.set_num_threads(s["threads"])
    ds = prepare_data(s, log)
    model = models.build(s["model"], backend=s["backend"], seed=s["seed"], activation=s["activation"],
                         pool=s["pool"], dense_activation=s["dense_activation"], num_classes=ds.num_classes)
    if tuple(ds.x_train.shape[1:]) != model.input_shape:
        raise UsageError(f"{s['model']} takes {model.input_shape} inputs but the data is {ds.x_train.shape[1:]}")
    opt = make_optimizer(s, model)
    early = (optim.EarlyStopping(s["early_stopping"], monitor=s["monitor"], min_delta=s["min_delta"])
             if s["early_stopping"] else None)
    trainer = Trainer(model, ds, opt, make_schedule(s), s["epochs"], s["batch_size"], s["seed"], early,
                      s["augment"], s["label_smoothing"], s["max_shift"], run_dir, meta={"settings": s}, log=log,
                      progress=progress_ok)
    if args.resume:
        ckpt = checkpoint.load_into(model, run_dir / "last.npz")
        trainer.restore(ckpt, run_dir / "last.npz")
        log(f"resuming {run_dir} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
    else:
        write_json(run_dir / "config.json", {"settings": s, "versions": versions(),
                                             "backend": s["backend"], "threads": s["threads"]})
        log(f"model: {s['model']} ({model.num_params():,} parameters), backend {s['backend']}, "
            f"{s['threads']} threads, run directory {run_dir}")
    history = trainer.run()
    best_path = run_dir / "best.npz"
    if best_path.is_file() and not (early and early.restore_best):
        best_model, _ = checkpoint.load_model(best_path, backend=s["backend"])
    else:
        best_model = model
    test_loss, test_acc, pred = evaluate(best_model, ds.x_test, ds.y_test)
    total = time.perf_counter() - t_start
    cm = confusion_matrix(ds.y_test, pred, ds.num_classes)
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "best_epoch": history.best_epoch,
               "epochs": history.as_dicts(), "train_seconds": sum(e.seconds for e in history.epochs),
               "wall_seconds": total, "confusion_matrix": cm.tolist(),
               "per_class_accuracy": (np.diag(cm) / np.maximum(cm.sum(axis=1), 1)).tolist()}
    started = process_start_time()
    if started is not None and trainer.first_batch_done is not None:
        metrics["first_batch_seconds"] = trainer.first_batch_done - started   # start-up latency
    write_json(run_dir / "metrics.json", metrics)
    if not s["no_plots"]:
        _plots(run_dir, history, cm, ds, best_model, pred, log)
    print(f"test accuracy {100 * test_acc:.2f}%  test loss {test_loss:.4f}  best epoch {history.best_epoch}  "
          f"total {total:.1f}s  run written to {run_dir}", flush=True)
    return 0


def _plots(run_dir, history, cm, ds, model, pred, log):
    try:
        from . import plots
        plots.curves(run_dir / "curves.png", history)
        plots.confusion(run_dir / "confusion.png", cm, ds.class_names)
        plots.samples(run_dir / "samples.png", ds.x_test, ds.y_test, pred, ds.class_names)
    except ImportError as exc:
        log(f"note: plots skipped ({exc}); install them with pip install 'fastlenet[plot]'")
    except OSError as exc:
        log(f"note: plots skipped: could not write them ({exc})")


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: one-line errors on stderr, exit codes 2 (usage/data), 3 (diverged),
    4 (could not save), 128+signal (interrupted)."""
    try:
        return run(argv)
    except TrainingStopped as exc:
        print(f"fastlenet.train: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (UsageError, data.DatasetError, checkpoint.CheckpointError, ValueError) as exc:
        print(f"fastlenet.train: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("fastlenet.train: interrupted; the last checkpoint on disk is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
