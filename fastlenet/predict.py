"""``python -m fastlenet.predict CKPT FILE...``: classify images with a saved model.

FILE is a PNG/JPEG (needs the ``image`` extra, Pillow) or a ``.npy`` array of
one image (H, W), several (N, H, W) or (N, 1, H, W), with values in 0..255
(uint8) or 0..1 (float).  Colour images are converted to grey and other sizes
resized to the model's input, each with a note.  MNIST-style data is light on
dark: pass ``--invert`` for dark-on-light photos and scans.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import checkpoint
from .data import prepare_inputs
from .losses import softmax

TRAIN_SIZE = 28   # images are prepared at the training size; padding to 32 follows the model
#: the most pixels a picture may decode to (16 MP: any photo or scan of a digit; a
#: small file that claims more is a decompression bomb, refused from its header)
MAX_PIXELS = 4096 * 4096


def _load_picture(path: Path, size: int, notes: List[str]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"{path}: reading PNG/JPEG needs Pillow: pip install 'fastlenet[image]'") from None
    too_big = f"is more than the {MAX_PIXELS:,} pixels fastlenet decodes; scale the image down first"
    try:
        img = Image.open(path)                         # reads the header only
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise ValueError(f"{path}: {img.size[0]}x{img.size[1]} {too_big}")
        img.load()
    except Image.DecompressionBombError:               # Pillow's own, larger limit, at open
        raise ValueError(f"{path}: its size {too_big}") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    if img.mode not in ("L", "I;16", "I", "F"):
        notes.append(f"{path.name}: converted {img.mode} to greyscale")
        img = img.convert("L")
    if img.size != (size, size):
        notes.append(f"{path.name}: resized {img.size[0]}x{img.size[1]} to {size}x{size}")
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img.convert("L"), np.float32) / 255.0
    return a[None, None]


def _load_array(path: Path, size: int, notes: List[str]) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    if a.dtype.kind not in "uif":
        raise ValueError(f"{path}: array dtype {a.dtype} is not numeric")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int(a.size - np.isfinite(a).sum())
        raise ValueError(f"{path}: {bad} of its {a.size} values are NaN or infinite; "
                         "predictions from them would be meaningless")
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    elif a.ndim != 4 or a.shape[1] != 1:
        raise ValueError(f"{path}: expected (H, W), (N, H, W) or (N, 1, H, W), got {a.shape}")
    a = a.astype(np.float32)
    if a.size and a.max() > 1.0:
        a /= 255.0
    if a.shape[2:] != (size, size):
        notes.append(f"{path.name}: resized {a.shape[2]}x{a.shape[3]} to {size}x{size}")
        a = _resize(a, size)
    return a


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, 1, H, W) to (N, 1, size, size)."""
    h, w = a.shape[2:]
    rows = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(int)
    cols = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(int)
    return a[:, :, rows][:, :, :, cols]


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
    names = ckpt.meta.get("class_names") or [str(i) for i in range(model.output_shape[0])]
    for f in args.files:
        path = Path(f)
        notes: List[str] = []
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        loader = _load_array if path.suffix.lower() == ".npy" else _load_picture
        x = loader(path, TRAIN_SIZE, notes)
        if args.invert:
            x = 1.0 - x
        for note in notes:
            print(f"note: {note}")
        probs = softmax(model.forward(prepare_inputs(x, ckpt.meta, model.input_shape)).astype(np.float64))
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
