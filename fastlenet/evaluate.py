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


def model_labels(ds: data.Dataset, names, dataset: str) -> np.ndarray:
    """The test labels as the model's output indices, matched by class name (an ``idx``
    dataset's classes are its label values, which the model's names record)."""
    if list(ds.class_names) == list(names):
        return ds.y_test
    index = {name: i for i, name in enumerate(names)}
    present = [ds.class_names[c] for c in np.unique(ds.y_test)]
    unknown = [n for n in present if n not in index]
    if unknown:
        raise ValueError(f"{dataset}'s test labels include class{'es' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown[:5])}, which the model was not trained on (its classes: "
                         f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''})")
    lookup = np.array([index.get(n, -1) for n in ds.class_names], np.int64)
    return lookup[ds.y_test]


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
    names = list(ckpt.inference.class_names)
    y = model_labels(ds, names, args.dataset)
    x = prepare_inputs(ds.x_test, ckpt.inference, model.input_shape)
    loss, acc, pred = evaluate(model, x, y)
    cm = confusion_matrix(y, pred, len(names))
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
