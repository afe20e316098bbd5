"""Reading the images a user hands to ``predict``: a picture (PNG/JPEG/TIFF/..., via
Pillow) or a ``.npy`` array, into float32 (N, C, H, W) in [0, 1] with the model's C
(1: grey; 3: RGB; others only from arrays that have them).

Dimension legend: N images, H/W height/width, C colour channels (1 grey, 2 grey +
alpha, 3 RGB, 4 RGBA).

Values are scaled by the image's real range, never clipped: 8-bit by 255, 16-bit
by 65535, wider integers by the smallest of 255 / 65535 / 2**31-1 that holds their
largest value, floats taken as 0..1 (or 0..255 when larger than 1; anything else
refused).  For a grey model colour becomes grey by ITU-R 601 luminance (Pillow's
``L``); for an RGB model grey is repeated to three channels.
Transparency is composited explicitly, and said: when the colour under the
visible pixels is uniform, the drawing *is* the alpha channel and alpha is read as
ink (light on dark, as MNIST); otherwise the picture is composited over black.
Arrays may be (H, W), (N, H, W), (N, 1, H, W), channel-first colour (N, C, H, W) (and
(C, H, W), one image, for a model of C > 1 channels)
or channel-last colour (H, W, C) / (N, H, W, C) with C 3 or 4 -- only where the
shape says so unambiguously; anything else is refused with a message that names it.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .fileio import read_npy_header

#: the most pixels a picture may decode to (16 MP: any photo or scan of a digit; a
#: small file that claims more is a decompression bomb, refused from its header)
MAX_PIXELS = 4096 * 4096
#: the smallest side an image may have: a (N, H, W) array with W <= 4 is read as
#: channel-last colour only when H and N are at least this
MIN_SIDE = 8
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)


class ImageError(ValueError):
    """An input that cannot be read as an image; the message names the file and why."""


# --------------------------------------------------------------------------- values
def scaled(a: np.ndarray, where: str, notes: List[str]) -> np.ndarray:
    """Any numeric array -> float32 in [0, 1], scaled by its real range (see module doc)."""
    if a.size == 0:
        raise ImageError(f"{where}: the image is empty (shape {a.shape})")
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype.kind not in "uif":
        raise ImageError(f"{where}: array dtype {a.dtype} is not numeric")
    if a.dtype.kind == "f":
        return _scaled_float(a, where, notes)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise ImageError(f"{where}: negative pixel values ({lo}..{hi}); expected 0..255 or 0..65535")
    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        full = 255
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:
        full = 65535
    else:
        full = next(f for f in (255, 65535, 2**31 - 1, 2**64 - 1) if hi <= f)
    if full != 255:
        notes.append(f"{where}: {a.dtype} values {lo}..{hi} scaled by {full}")
    return (a.astype(np.float64) / full).astype(np.float32)


def _scaled_float(a: np.ndarray, where: str, notes: List[str]) -> np.ndarray:
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(a.size - finite.sum())
        raise ImageError(f"{where}: {bad} of its {a.size} values are NaN or infinite; "
                         "predictions from them would be meaningless")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise ImageError(f"{where}: float values {lo:g}..{hi:g} are neither 0..1 nor 0..255")
    if hi > 1:
        notes.append(f"{where}: float values {lo:g}..{hi:g} read as 0..255")
        return (a / 255).astype(np.float32)
    return a.astype(np.float32)


# --------------------------------------------------------------------------- channels
def grey(a: np.ndarray, where: str, notes: List[str]) -> np.ndarray:
    """(N, H, W, C) in [0, 1] -> (N, H, W): luminance, transparency composited."""
    c = a.shape[-1]
    if c == 1:
        return a[..., 0]
    colour, alpha = (a[..., :-1], a[..., -1]) if c in (2, 4) else (a, None)
    luma = colour[..., 0] if colour.shape[-1] == 1 else colour @ LUMINANCE
    if c in (3, 4):
        notes.append(f"{where}: converted {'RGB' if c == 3 else 'RGBA'} to greyscale")
    if alpha is None or alpha.min() == 1:
        return luma
    visible = alpha > 0
    uniform_colour = not visible.any() or np.ptp(luma[visible]) < 1 / 255
    if uniform_colour:
        notes.append(f"{where}: the drawing is in the alpha channel (uniform colour): read alpha as the ink")
        return alpha
    notes.append(f"{where}: composited its transparency over black")
    return luma * alpha


def to_channels(a: np.ndarray, channels: int, where: str, notes: List[str]) -> np.ndarray:
    """(N, H, W, C) in [0, 1] -> (N, ``channels``, H, W), the model's channels: 1 is grey
    (:func:`grey`); 3 is RGB (grey repeated, transparency composited over black); any
    other count only from an array that has exactly that many channels."""
    c = a.shape[-1]
    if channels == 1:
        return grey(a, where, notes)[:, None]
    if c == channels and channels not in (2, 4):
        return np.ascontiguousarray(np.moveaxis(a, 3, 1))
    if channels != 3:
        raise ImageError(f"{where}: the model takes {channels}-channel images; this one has {c} channel"
                         f"{'s' if c != 1 else ''} (give a (N, {channels}, H, W) .npy array)")
    colour, alpha = (a[..., :-1], a[..., -1:]) if c in (2, 4) else (a, None)
    if alpha is not None and alpha.min() < 1:
        notes.append(f"{where}: composited its transparency over black")
        colour = colour * alpha
    if colour.shape[-1] == 1:
        notes.append(f"{where}: grey image repeated to the model's 3 colour channels")
        colour = np.repeat(colour, 3, axis=-1)
    return np.ascontiguousarray(np.moveaxis(colour, 3, 1))


def _channel_last(a: np.ndarray) -> bool:
    """True when (.., H, W, C) is the only sensible reading of a rank-3/4 array."""
    if a.shape[-1] not in (3, 4):
        return False
    if a.ndim == 3:
        return a.shape[0] >= MIN_SIDE and a.shape[1] >= MIN_SIDE
    return a.shape[1] not in (1, 3, 4) and a.shape[2] >= MIN_SIDE


def as_nhwc(a: np.ndarray, where: str, channels: int = 1) -> np.ndarray:
    """An array in one of the accepted layouts (module doc) as (N, H, W, C).  For a model
    of ``channels`` > 1 channels, a (channels, H, W) array is one channel-first image."""
    s = a.shape
    if a.ndim == 2:
        return a[None, :, :, None]
    if a.ndim == 3 and channels > 1 and s[0] == channels and s[2] > 4:
        return np.moveaxis(a, 0, 2)[None]
    if a.ndim == 3 and _channel_last(a):
        return a[None]
    if a.ndim == 3 and s[2] > 4:
        return a[:, :, :, None]
    if a.ndim == 4 and _channel_last(a):
        return a
    if a.ndim == 4 and s[1] in (1, 2, 3, 4) and s[3] > 4:
        return np.moveaxis(a, 1, 3)
    raise ImageError(
        f"{where}: cannot tell how to read an array of shape {s} as images; expected (H, W), "
        f"(N, H, W), (N, C, H, W) or channel-last (H, W, C) / (N, H, W, C) with C 3 or 4 "
        f"and sides of at least {MIN_SIDE}")


# --------------------------------------------------------------------------- files
def _check_npy_header(path: Path) -> None:
    """Refuse, from its header, a .npy whose data would not fit in the file (a 100-byte
    file must not make ``np.load`` allocate what its header claims)."""
    try:
        with open(path, "rb") as f:
            shape, dtype = read_npy_header(f)
            data_start = f.tell()
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = path.stat().st_size - data_start
    if need > have:
        raise ImageError(f"{path}: its header promises a {shape} {dtype} array ({need:,} bytes) "
                         f"but the file holds {have:,}")


def read_array(path: Path, notes: List[str], channels: int = 1) -> np.ndarray:
    """A ``.npy`` file -> float32 (N, channels, H, W) in [0, 1]."""
    _check_npy_header(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
    nhwc = as_nhwc(a, str(path), channels)
    return to_channels(scaled(nhwc, str(path), notes), channels, path.name, notes)


def _open_picture(path: Path):
    try:
        from PIL import Image
    except ImportError:
        raise ImageError(f"{path}: reading PNG/JPEG needs Pillow: pip install 'fastlenet[image]'") from None
    too_big = f"is more than the {MAX_PIXELS:,} pixels fastlenet decodes; scale the image down first"
    try:
        img = Image.open(path)                         # reads the header only
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise ImageError(f"{path}: {img.size[0]}x{img.size[1]} {too_big}")
        img.load()
    except Image.DecompressionBombError:               # Pillow's own, larger limit, at open
        raise ImageError(f"{path}: its size {too_big}") from None
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    return img


def read_picture(path: Path, notes: List[str], channels: int = 1) -> np.ndarray:
    """A picture file -> float32 (1, channels, H, W) in [0, 1]."""
    img = _open_picture(path)
    if img.mode == "P":                                # palette: to RGB(A), keeping transparency
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
        notes.append(f"{path.name}: converted {img.mode} to RGB")
        img = img.convert("RGB")
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        a = a.astype(np.uint16)
    a = a if a.ndim == 3 else a[:, :, None]
    return to_channels(scaled(a[None], path.name, notes), channels, path.name, notes)


def resize(a: np.ndarray, size) -> np.ndarray:
    """(N, C, H, W) -> (N, C, OH, OW), ``size`` = OH (square) or (OH, OW), by averaging each
    output pixel's box of input pixels (exact area resampling when shrinking; nearest
    neighbour when growing)."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    h, w = a.shape[2:]
    rows = _box_weights(h, out_h)
    cols = _box_weights(w, out_w)
    return np.einsum("ih,nchw,jw->ncij", rows, a, cols, optimize=True).astype(np.float32)


def _box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix whose row i averages the inputs under output pixel i."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, left + 1) - np.maximum(lo, left), 0, None)
    if n_out > n_in:                                   # growing: nearest input pixel
        overlap = (left == np.minimum(((lo + hi) / 2).astype(int), n_in - 1)).astype(float)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)
