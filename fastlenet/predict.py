"""``python -m fastlenet.predict CKPT FILE...``: classify images with a saved model.

FILE is a picture (PNG/JPEG/TIFF..., needs the ``image`` extra, Pillow) or a
``.npy`` array: (H, W), (N, H, W), (N, C, H, W) or channel-last (H, W, C) /
(N, H, W, C).  Values are scaled by their real range (8-bit, 16-bit, float 0..1),
colour becomes grey, transparency is composited, other sizes are resized to the
model's input -- each with a note (:mod:`fastlenet.images`).  MNIST-style data is
light on dark: pass ``--invert`` for dark-on-light photos and scans.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import checkpoint, images
from .data import prepare_inputs
from .losses import softmax

def read_inputs(path: Path, size: Tuple[int, int], notes: List[str]) -> np.ndarray:
    """Any accepted file (see :mod:`fastlenet.images`) -> float32 (N, 1, H, W) in [0, 1]
    at ``size`` = (H, W), the size the model's training images had (before padding)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    reader = images.read_array if path.suffix.lower() == ".npy" else images.read_picture
    x = reader(path, notes)
    if x.shape[2:] != tuple(size):
        notes.append(f"{path.name}: resized {x.shape[3]}x{x.shape[2]} to {size[1]}x{size[0]}")
        x = images.resize(x, size)
    return x


def run(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastlenet.predict", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a best.npz / last.npz written by fastlenet.train")
    p.add_argument("files", nargs="+", help="PNG/JPEG images or .npy arrays")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark digits on a light background)")
    p.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None)
    args = p.parse_args(argv)
    model, ckpt = checkpoint.load_model(args.checkpoint, backend=args.backend)
    names = ckpt.inference.class_names
    for f in args.files:
        path = Path(f)
        notes: List[str] = []
        x = read_inputs(path, ckpt.inference.image_size, notes)
        if args.invert:
            x = 1.0 - x
        for note in notes:
            print(f"note: {note}")
        probs = softmax(model.forward(prepare_inputs(x, ckpt.inference, model.input_shape)).astype(np.float64))
        for i, pr in enumerate(probs):
            top = np.argsort(pr)[::-1][: max(1, args.top)]
            label = f"{path.name}[{i}]" if len(probs) > 1 else path.name
            print(f"{label}: " + ", ".join(f"{names[k]} {100 * pr[k]:.1f}%" for k in top))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run(argv)
    except (checkpoint.CheckpointError, ValueError) as exc:
        print(f"fastlenet.predict: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
