"""Figures of a run (needs the ``plot`` extra: matplotlib, drawn with Agg).

Dimension legend: N images, C channels, H/W height/width, K classes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .fileio import atomic_write_bytes

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> None:
    """Draw into memory, then write atomically (fastlenet.fileio): a crash never leaves
    half a PNG, and only a regular file is ever replaced."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def curves(path: Path, history) -> None:
    """Loss and accuracy per epoch, training and validation, written to ``path``."""
    _save(_curves_figure(history), path)


def training_curves(history, path=None):
    """The curves figure of ``history`` (``History.plot``): written to ``path`` when given
    (then closed), else returned open for a notebook to show."""
    fig = _curves_figure(history)
    if path is not None:
        _save(fig, Path(path))
    return fig


def _curves_figure(history):
    ep = [e.epoch for e in history.epochs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [e.train_loss for e in history.epochs], "o-", label="train")
    b.plot(ep, [100 * e.train_accuracy for e in history.epochs], "o-", label="train")
    if any(e.val_loss is not None for e in history.epochs):
        a.plot(ep, [e.val_loss for e in history.epochs], "s-", label="validation")
        b.plot(ep, [100 * e.val_accuracy for e in history.epochs], "s-", label="validation")
    if history.best_epoch > 0:
        for ax in (a, b):
            ax.axvline(history.best_epoch, color="grey", ls=":", label="best epoch")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion(path: Path, cm: np.ndarray, class_names) -> None:
    """(K, K) confusion matrix, rows true, columns predicted, with counts."""
    k = len(cm)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * k, 1 + 0.55 * k))
    ax.imshow(cm, cmap="Blues")
    thresh = cm.max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > thresh else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion matrix (accuracy {100 * np.trace(cm) / cm.sum():.2f}%)")
    _save(fig, path)


def samples(path: Path, x: np.ndarray, y: np.ndarray, pred: np.ndarray, class_names, count: int = 32) -> None:
    """A grid of test images x (N, C, H, W) with 'predicted (true)'; mistakes in red.
    Half the grid shows mistakes when there are any."""
    wrong = np.flatnonzero(pred != y)[: count // 2]
    right = np.flatnonzero(pred == y)[: count - len(wrong)]
    idx = np.concatenate([right[: count // 2], wrong, right[count // 2:]])[:count]
    cols = 8
    rows = -(-len(idx) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), idx):
        ax.imshow(x[i, 0], cmap="gray")
        ok = pred[i] == y[i]
        label = f"{class_names[pred[i]]}" + ("" if ok else f"\n(true {class_names[y[i]]})")
        ax.set_title(label, fontsize=7, color="black" if ok else "red")
    _save(fig, path)
