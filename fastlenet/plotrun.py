"""``fastlenet plot RUN``: draw a run directory's figures after the fact.

curves.png comes from history.csv; confusion.png and samples.png from best.npz
evaluated on the run's test set (found as ``fastlenet evaluate`` finds it: the
folder recorded in the checkpoint while it exists, then the usual places).  Without the test images, confusion.png
is drawn from metrics.json and samples.png is skipped, with a note.  Needs the
``plot`` extra (matplotlib).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import checkpoint, data
from .metrics import confusion_matrix, evaluate
from .trainer import EpochRecord, History

PLOT_HINT = "pip install 'fastlenet[plot]'"


def read_history(run: Path) -> History:
    """history.csv (+ the best epoch from metrics.json or best.npz) as a History."""
    path = run / "history.csv"
    try:
        rows = list(csv.DictReader(path.open()))
        num = lambda v: float(v) if v not in ("", None) else None      # noqa: E731
        epochs = [EpochRecord(int(r["epoch"]), float(r["train_loss"]), float(r["train_accuracy"]),
                              num(r["val_loss"]), num(r["val_accuracy"]), float(r["lr"]), float(r["seconds"]))
                  for r in rows]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a fastlenet history ({type(exc).__name__}: {exc})") from None
    if not epochs:
        raise ValueError(f"{path}: no finished epoch to plot yet")
    best = -1
    try:
        best = int(json.loads((run / "metrics.json").read_text())["best_epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return History(epochs, best)


def _test_set(meta: dict, log) -> Optional[data.Dataset]:
    """The test set best.npz was trained on, found as ``fastlenet evaluate`` finds it."""
    from .evaluate import recorded_data
    try:
        dataset, folder = recorded_data(meta, None, None)
        return data.load(dataset, data_dir=folder, download_missing=False, test_only=True)
    except (ValueError, data.DatasetError) as exc:
        log(f"note: the test images are not available ({str(exc)[:160]})")
        return None


def draw(run: Path, log=print) -> List[Path]:
    """Draw what can be drawn for ``run``; returns the files written."""
    from . import plots
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory")
    written = [run / "curves.png"]
    plots.curves(written[0], read_history(run))
    model, ckpt = checkpoint.load_model(run / "best.npz")
    names = list(ckpt.inference.class_names)
    ds = _test_set(ckpt.meta, log)
    if ds is not None:
        x = data.prepare_inputs(ds.x_test, ckpt.inference, model.input_shape)
        from .evaluate import model_labels
        y = model_labels(ds, names, ds.name)
        _, _, pred = evaluate(model, x, y)
        plots.confusion(run / "confusion.png", confusion_matrix(y, pred, len(names)), names)
        plots.samples(run / "samples.png", ds.x_test, y, pred, names)
        return written + [run / "confusion.png", run / "samples.png"]
    try:
        cm = np.asarray(json.loads((run / "metrics.json").read_text())["confusion_matrix"], np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        log("note: confusion.png and samples.png skipped: no test images and no metrics.json")
        return written
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"{run / 'metrics.json'}: confusion_matrix is {cm.shape}, not {len(names)}x{len(names)}")
    plots.confusion(run / "confusion.png", cm, names)
    log("note: samples.png skipped (it needs the test images)")
    return written + [run / "confusion.png"]


def main(argv: Optional[List[str]] = None, prog: str = "fastlenet plot") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("run", help="a run directory written by fastlenet train")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{prog}: error: drawing needs matplotlib: {PLOT_HINT}", file=sys.stderr)
        return 2
    try:
        written = draw(Path(args.run), log=lambda m: print(m, file=sys.stderr))
    except (ValueError, OSError, checkpoint.CheckpointError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
