"""Metrics of a model on labelled images: loss, accuracy, predictions, confusion matrix.

Dimension legend: N images, C channels, H/W height/width, K classes.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .losses import softmax_cross_entropy


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> Tuple[float, float, np.ndarray]:
    """Inference-mode (mean loss, accuracy, predicted classes (N,)) over x (N, C, H, W), y (N,)."""
    total, preds = 0.0, []
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size], training=False)
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch_size])
        total += loss * len(logits)
        preds.append(logits.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(x), accuracy(pred, y), pred


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of predictions (N,) equal to the labels (N,)."""
    return float((np.asarray(pred) == np.asarray(y)).mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(K,) recall of each class from a confusion matrix (0 for a class with no images)."""
    return np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
