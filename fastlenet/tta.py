"""Test-time augmentation: a model's class probabilities averaged over a few
transformed views of each image -- the image itself, its one-pixel shifts and,
where the dataset allows, its mirror image.

Dimension legend: N images, C channels, H/W height/width, K classes.

Kinds (``--tta``):

* ``none``: the image alone (exactly :func:`fastlenet.metrics.evaluate`);
* ``shifts``: the image moved by every offset of up to 1 pixel in each direction,
  diagonals included (zero fill, as training's random shifts fill) -- 3x3 = 9 views;
* ``shifts2``: every offset of up to 2 pixels -- 5x5 = 25 views (for models trained
  with ``--max-shift 2``: the test views are the training's own shifts);
* ``flips``: the image and its left-right mirror -- 2 views (datasets whose labels
  survive a mirror only: Fashion-MNIST, CIFAR-10);
* ``flips-shifts``: the 9 shifts of the image and of its mirror -- 18 views.

Views are taken ``batch_size`` images at a time, so memory stays that of one
batch whatever N is.  The loss of averaged probabilities p is mean(-log p[y]).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .losses import softmax
from .metrics import accuracy, evaluate as plain_evaluate

KINDS = ("none", "shifts", "shifts2", "flips", "flips-shifts")
#: the largest offset (pixels, each direction) of each kind's shifts
_RADIUS = {"none": 0, "shifts": 1, "shifts2": 2, "flips": 0, "flips-shifts": 1}
#: the smallest probability a log is taken of (a view set that gives the true class 0)
_TINY = 1e-30


def views(kind: str) -> List[Tuple[bool, int, int]]:
    """The views of ``kind`` as (mirrored, dy, dx), the untouched image first."""
    if kind not in KINDS:
        raise ValueError(f"test-time augmentation must be one of {', '.join(KINDS)}, got {kind!r}")
    r = _RADIUS[kind]
    offsets = sorted(((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)),
                     key=lambda o: (o != (0, 0), o))
    mirrors = (False, True) if uses_flips(kind) else (False,)
    return [(m, dy, dx) for m in mirrors for dy, dx in offsets]


def uses_flips(kind: str) -> bool:
    return kind in ("flips", "flips-shifts")


def view_of(x: np.ndarray, mirrored: bool, dy: int, dx: int) -> np.ndarray:
    """x (N, C, H, W) mirrored left-right (when ``mirrored``), then moved ``dy`` rows
    down and ``dx`` columns right with zero fill -> a new C-contiguous array."""
    src = x[:, :, :, ::-1] if mirrored else x
    if dy == 0 and dx == 0:
        return np.ascontiguousarray(src)
    out = np.zeros_like(x)
    h, w = x.shape[2:]
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        src[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def predict_proba(model, x: np.ndarray, kind: str = "none", batch_size: int = 1000) -> np.ndarray:
    """Inference-mode class probabilities (N, K), float64, averaged over ``kind``'s views
    of x (N, C, H, W)."""
    chosen = views(kind)
    parts = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        total = None
        for view in chosen:
            p = softmax(model.forward(view_of(xb, *view), training=False).astype(np.float64))
            total = p if total is None else total + p
        parts.append(total / len(chosen))
    return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[0]))


def evaluate(model, x: np.ndarray, y: np.ndarray, kind: str = "none",
             batch_size: int = 1000) -> Tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, predicted classes (N,)) of x (N, C, H, W), y (N,) under
    ``kind``'s views; ``none`` is :func:`fastlenet.metrics.evaluate` itself."""
    if kind == "none":
        return plain_evaluate(model, x, y, batch_size)
    p = predict_proba(model, x, kind, batch_size)
    pred = p.argmax(axis=1)
    loss = float(-np.log(np.maximum(p[np.arange(len(y)), y], _TINY)).mean())
    return loss, accuracy(pred, y), pred


def describe(kind: str) -> str:
    """``kind`` and its view count, as the commands print it ("shifts2: 25 views averaged")."""
    return f"{kind}: {len(views(kind))} views averaged"


def mirror_problem(kind: str, dataset: Optional[str]) -> Optional[str]:
    """Why ``kind`` cannot be applied to ``dataset``'s images (it mirrors them and their
    labels do not survive a mirror; an unknown dataset is not assumed to), or None."""
    from .data import mirror_keeps_label
    if not uses_flips(kind) or (dataset is not None and mirror_keeps_label(dataset)):
        return None
    return (f"--tta {kind} mirrors the images, which changes what {dataset or 'these (unknown dataset)'} "
            "images show (use --tta shifts or none)")


def chosen(flag: Optional[str], meta: dict, dataset: Optional[str] = None) -> str:
    """The kind a reader of a checkpoint applies: ``flag`` (``--tta``), else the kind the
    checkpoint's training tested with (``meta["settings"]["tta"]``, checked), else none.
    Mirrors only for a ``dataset`` (default: the one the checkpoint recorded) whose labels
    survive them (ValueError otherwise)."""
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    kind = flag if flag is not None else settings.get("tta", "none")
    if kind not in KINDS:
        shown = repr(kind)
        raise ValueError(f"the checkpoint's settings.tta must be one of {', '.join(KINDS)}, got {shown[:40]}")
    if dataset is None and isinstance(settings.get("dataset"), str):
        dataset = settings["dataset"]
    problem = mirror_problem(kind, dataset)
    if problem:
        raise ValueError(problem)
    return kind
