"""``python -m fastlenet.evaluate CKPT --dataset D``: accuracy, per-class accuracy
and the confusion matrix (as text) of a saved model on a dataset's test set.

The checkpoint's own normalisation statistics and input size are applied.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np

from . import checkpoint, data
from .data import prepare_inputs
from .metrics import confusion_matrix, evaluate


def format_confusion(cm: np.ndarray, names) -> str:
    width = max(5, max(len(n) for n in names))
    head = " " * (width + 2) + " ".join(f"{i:>5}" for i in range(len(names)))
    rows = [f"{name:>{width}} |" + " ".join(f"{v:>5}" for v in row) for name, row in zip(names, cm)]
    return "true \\ predicted\n" + head + "\n" + "\n".join(rows)


def run(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastlenet.evaluate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a best.npz / last.npz written by fastlenet.train")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "idx"], required=True)
    p.add_argument("--data-dir", default=None, help="folder holding the IDX files")
    p.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None)
    args = p.parse_args(argv)
    model, ckpt = checkpoint.load_model(args.checkpoint, backend=args.backend)
    ds = data.load(args.dataset, data_dir=args.data_dir)
    if ds.num_classes > model.output_shape[0]:
        raise ValueError(f"{args.dataset} has {ds.num_classes} classes but the model predicts {model.output_shape[0]}")
    x = prepare_inputs(ds.x_test, ckpt.meta, model.input_shape)
    loss, acc, pred = evaluate(model, x, ds.y_test)
    names = ckpt.meta.get("class_names") or list(ds.class_names)
    cm = confusion_matrix(ds.y_test, pred, len(names))
    print(f"{args.dataset} test set: {len(ds.y_test)} images, accuracy {100 * acc:.2f}%, loss {loss:.4f}")
    print("per-class accuracy:")
    for name, row, i in zip(names, cm, range(len(names))):
        print(f"  {i:>2} {name:<12} {100 * row[i] / max(row.sum(), 1):6.2f}%  ({row[i]}/{row.sum()})")
    print(format_confusion(cm, [str(i) for i in range(len(names))]))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run(argv)
    except (data.DatasetError, checkpoint.CheckpointError, ValueError) as exc:
        print(f"fastlenet.evaluate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
