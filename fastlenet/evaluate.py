"""``fastlenet evaluate CKPT``: accuracy, per-class accuracy and the confusion matrix
of a saved model on a test set (``--json``: as one JSON document).

The dataset defaults to the one the checkpoint was trained on, and the folder to
the one it was trained from while it exists; only the two ``t10k-*`` files are
needed.  The checkpoint's own normalisation statistics and image size are applied.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import checkpoint, data, tta
from .cli import HelpFormatter, guarded
from .data import prepare_inputs
from .metrics import confusion_matrix


def format_confusion(cm: np.ndarray, names) -> str:
    width = max(5, max(len(n) for n in names))
    head = " " * (width + 2) + " ".join(f"{i:>5}" for i in range(len(names)))
    rows = [f"{name:>{width}} |" + " ".join(f"{v:>5}" for v in row) for name, row in zip(names, cm)]
    return "true \\ predicted\n" + head + "\n" + "\n".join(rows)


def model_labels(ds: data.Dataset, names, dataset: str, warn=None) -> np.ndarray:
    """The test labels as the model's output indices.  Same class list: as they are.  An
    ``idx`` dataset (whose classes are its label values, which the model's names record):
    matched by name, a class the model never saw refused.  Another registered dataset's
    different list: by index, with a warning (``warn``)."""
    if list(ds.class_names) == list(names):
        return ds.y_test
    if ds.name != "idx":
        if ds.num_classes > len(names):
            raise ValueError(f"{dataset} has {ds.num_classes} classes but the model predicts {len(names)}")
        if warn is not None:
            warn(f"the model's classes ({', '.join(names[:5])}, ...) are not {dataset}'s "
                 f"({', '.join(ds.class_names[:5])}, ...): scored by class index")
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


def recorded_data(meta: dict, dataset: Optional[str], data_dir: Optional[str]):
    """(dataset, data folder) to evaluate on: the flags, else what the checkpoint recorded
    (its dataset, and the folder it was trained from while that folder still exists)."""
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    recorded = settings.get("dataset") if settings.get("dataset") in ("mnist", "fashion-mnist", "idx") else None
    dataset = dataset or recorded
    if dataset is None:
        raise ValueError("--dataset is needed: the checkpoint does not record the dataset it was trained on")
    source = meta.get("data_source")
    if data_dir is None and dataset == recorded and isinstance(source, str) and Path(source).is_dir():
        data_dir = source
    return dataset, data_dir


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="a best.npz / last.npz written by fastlenet train")
    p.add_argument("--dataset", choices=data.DATASET_NAMES, default=None,
                   help="the test set to use; default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the test files (t10k-images/labels-idx*-ubyte[.gz]); default: the folder "
                        "the checkpoint was trained from if it still exists, else the usual places")
    p.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None,
                   help="kernel backend; default: $FASTLENET_BACKEND, else the fastest available")
    p.add_argument("--tta", choices=list(tta.KINDS), default=None,
                   help="test-time augmentation (see fastlenet train --tta); default: the one the checkpoint's "
                        "training tested with, else none")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document")
    return p


def run(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.evaluate") -> int:
    args = build_parser(prog).parse_args(argv)
    model, ckpt = checkpoint.load_model(args.checkpoint, backend=args.backend)
    dataset, data_dir = recorded_data(ckpt.meta, args.dataset, args.data_dir)
    ds = data.load(dataset, data_dir=data_dir, test_only=True)
    names = list(ckpt.inference.class_names)
    y = model_labels(ds, names, dataset, warn=lambda m: print(f"{prog}: warning: {m}", file=sys.stderr))
    x = prepare_inputs(ds.x_test, ckpt.inference, model.input_shape)
    kind = tta.chosen(args.tta, ckpt.meta, dataset)
    loss, acc, pred = tta.evaluate(model, x, y, kind)
    cm = confusion_matrix(y, pred, len(names))
    if args.json:
        print(json.dumps({**results_doc(dataset, ds.source, loss, acc, cm, names), "tta": kind}))
    else:
        print_results(dataset, len(y), loss, acc, cm, names, kind)
    return 0


def results_doc(dataset: str, source: str, loss: float, acc: float, cm: np.ndarray, names) -> dict:
    return {"dataset": dataset, "data_source": source, "images": int(cm.sum()), "accuracy": acc, "loss": loss,
            "per_class": [{"class": n, "correct": int(cm[i, i]), "total": int(cm[i].sum())}
                          for i, n in enumerate(names)], "confusion_matrix": cm.tolist()}


def print_results(dataset: str, n: int, loss: float, acc: float, cm: np.ndarray, names, kind: str = "none") -> None:
    views = f" (test-time augmentation {tta.describe(kind)})" if kind != "none" else ""
    print(f"{dataset} test set: {n} images, accuracy {100 * acc:.2f}%{views}, loss {loss:.4f}")
    print("per-class accuracy:")
    for i, (name, row) in enumerate(zip(names, cm)):
        print(f"  {i:>2} {name:<12} {100 * row[i] / max(row.sum(), 1):6.2f}%  ({row[i]}/{row.sum()})")
    print(format_confusion(cm, [str(i) for i in range(len(names))]))


def main(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.evaluate") -> int:
    return guarded(run, argv, prog, (data.DatasetError, checkpoint.CheckpointError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
