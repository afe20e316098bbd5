"""``fastlenet predict CKPT FILE...``: classify images with a saved model.

FILE is a picture (PNG/JPEG/TIFF..., needs the ``image`` extra, Pillow) or a
``.npy`` array: (H, W), (N, H, W), (N, C, H, W) or channel-last (H, W, C) /
(N, H, W, C).  Values are scaled by their real range (8-bit, 16-bit, float 0..1),
colour becomes grey, transparency is composited, other sizes are resized to the
model's input -- each with a note (:mod:`fastlenet.images`).  MNIST-style data is
light on dark: pass ``--invert`` for dark-on-light photos and scans.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import checkpoint, images, tta
from .cli import HelpFormatter, guarded
from .data import prepare_inputs


def read_inputs(path: Path, size: Tuple[int, int], notes: List[str], channels: int = 1) -> np.ndarray:
    """Any accepted file (see :mod:`fastlenet.images`) -> float32 (N, channels, H, W) in
    [0, 1] at ``size`` = (H, W), the size the model's training images had (before padding)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    reader = images.read_array if path.suffix.lower() == ".npy" else images.read_picture
    x = reader(path, notes, channels)
    if x.shape[2:] != tuple(size):
        notes.append(f"{path.name}: resized {x.shape[3]}x{x.shape[2]} to {size[1]}x{size[0]}")
        x = images.resize(x, size)
    return x


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
#: an image whose mean grey level is above this looks dark-on-light (MNIST is light on dark)
BRIGHT = 0.5


def expand(args: List[str]) -> Tuple[List[Path], List[str]]:
    """FILE arguments -> (files, problems): a folder gives its pictures and .npy files (sorted),
    a glob pattern its matches; an argument that gives nothing is a problem."""
    files, problems = [], []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES + (".npy",))
            if not found:
                problems.append(f"{path}: a folder with no pictures or .npy files")
        elif not path.exists() and glob.has_magic(arg):
            found = [Path(p) for p in sorted(glob.glob(arg)) if Path(p).is_file()]
            if not found:
                problems.append(f"{arg}: no file matches")
        else:
            found = [path]
        files.extend(found)
    return files, problems


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="a best.npz / last.npz written by fastlenet train")
    p.add_argument("files", nargs="+", help="pictures or .npy arrays; folders and glob patterns ('digits/*.png') too")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark digits on a light background)")
    p.add_argument("--backend", choices=["numpy", "numba", "cython"], default=None,
                   help="kernel backend; default: $FASTLENET_BACKEND, else the fastest available")
    p.add_argument("--tta", choices=list(tta.KINDS), default=None,
                   help="test-time augmentation (see fastlenet train --tta); default: the one the checkpoint's "
                        "training tested with, else none")
    p.add_argument("--json", action="store_true", help="print one JSON document: per image, its top classes")
    return p


def classify(model, ckpt, path: Path, args, notes: List[str]) -> List[dict]:
    """One file's images -> [{"file", "index", "top": [{"class", "probability"}]}]."""
    x = read_inputs(path, ckpt.inference.image_size, notes, model.input_shape[0])
    if args.invert:
        x = 1.0 - x
    elif float(x.mean()) > BRIGHT:
        notes.append(f"{path.name}: mostly bright (mean {x.mean():.2f}); if it is dark on light, try --invert")
    probs = tta.predict_proba(model, prepare_inputs(x, ckpt.inference, model.input_shape), args.tta)
    names = ckpt.inference.class_names
    return [{"file": str(path), "index": i, "images": len(probs),
             "top": [{"class": names[k], "probability": float(pr[k])} for k in np.argsort(pr)[::-1][: max(1, args.top)]]}
            for i, pr in enumerate(probs)]


def run(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.predict") -> int:
    """Exit 0 when every input was classified, 1 when some could not be read (each named
    on stderr, the rest classified), 2 when none could."""
    args = build_parser(prog).parse_args(argv)
    model, ckpt = checkpoint.load_model(args.checkpoint, backend=args.backend)
    args.tta = tta.chosen(args.tta, ckpt.meta)             # mirrors only for the dataset it was trained on
    files, problems = expand(args.files)
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    results, all_notes = [], []
    for path in files:
        notes: List[str] = []
        try:
            rows = classify(model, ckpt, path, args, notes)
        except ValueError as exc:                  # ImageError and friends: this file only
            problems.append(str(exc))
            print(f"{prog}: error: {exc}", file=sys.stderr)
            continue
        all_notes += notes
        results += rows
        if not args.json:
            print_rows(rows, notes)
    if args.json:
        print(json.dumps({"predictions": results, "notes": all_notes, "errors": problems}))
    return 0 if not problems else (1 if results else 2)


def print_rows(rows: List[dict], notes: List[str]) -> None:
    for note in notes:
        print(f"note: {note}")
    for row in rows:
        name = Path(row["file"]).name
        label = f"{name}[{row['index']}]" if row["images"] > 1 else name
        print(f"{label}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in row["top"]))


def main(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.predict") -> int:
    return guarded(run, argv, prog, (checkpoint.CheckpointError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
