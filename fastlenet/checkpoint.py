"""Checkpoints that cannot hurt you: ``.npz`` archives of plain arrays plus one
JSON document, written atomically, loaded with ``allow_pickle=False``, and
validated against the model config before a single value is used.

Archive layout (every entry a numeric array):

* ``meta``            -- UTF-8 JSON as uint8: format version, model config,
                         epoch/batch position, normalisation statistics,
                         class names, schedule/early-stopping state, history...
* ``param/<name>``    -- model parameters (``model.params``)
* ``buffer/<name>``   -- non-trained state (batch-norm running statistics)
* ``optim/<key>``     -- optimizer state (lr, step count, moments)
* ``best/<name>``     -- early stopping's best parameters, when kept
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Union

import numpy as np

from .fileio import atomic_write_bytes, read_npy_header

if TYPE_CHECKING:
    from .meta import Inference

FORMAT = "fastlenet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, unsafe, or does not match its model config."""


@dataclass
class Checkpoint:
    meta: dict
    params: Dict[str, np.ndarray]
    buffers: Dict[str, np.ndarray] = field(default_factory=dict)
    optim: Dict[str, np.ndarray] = field(default_factory=dict)
    best: Dict[str, np.ndarray] = field(default_factory=dict)
    inference: Optional["Inference"] = None     # the checked preprocessing (set by load_model)


def save(path: Union[str, Path], model, meta: Optional[dict] = None, optimizer=None,
         best_params: Optional[Dict[str, np.ndarray]] = None) -> Path:
    """Write ``model`` (+ optimizer state and ``meta``) to ``path`` atomically:
    a temporary file in the same folder, fsync, rename.  A crash at any moment
    leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    doc = {"format": FORMAT, "version": VERSION, "model": model.model_config(),
           "input_shape": list(model.input_shape), **(meta or {})}
    arrays = {"meta": np.frombuffer(json.dumps(doc).encode("utf-8"), np.uint8)}
    arrays.update({f"param/{k}": v for k, v in model.params.items()})
    arrays.update({f"buffer/{k}": v for k, v in model.buffers.items()})
    if optimizer is not None:
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    if best_params is not None:
        arrays.update({f"best/{k}": v for k, v in best_params.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


_GROUPS = ("param", "buffer", "optim", "best")
#: the most bytes a checkpoint's arrays may hold together (LeNet-5's are under 1 MB)
MAX_ARRAY_BYTES = 1 << 30
#: the most bytes of a member beyond what its .npy header and shape need (header padding)
_MEMBER_SLACK = 4096


def _check_members(path: Path) -> None:
    """Read only the .npy header of each zip member: its name, dtype (plain numbers) and
    shape, and that the member holds no more bytes than that shape needs, and that all
    of them together stay under MAX_ARRAY_BYTES -- so that a small file with a highly
    compressible extra member cannot make the loader inflate gigabytes."""
    import zipfile
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                key = name[:-4] if name.endswith(".npy") else name
                if not name.endswith(".npy") or (key.partition("/")[0] not in _GROUPS and key != "meta"):
                    raise CheckpointError(f"{path}: unexpected entry {key!r}")
                with zf.open(info) as f:
                    shape, dtype = read_npy_header(f)
                if dtype.kind not in "biuf":
                    raise CheckpointError(f"{path}: entry {key!r} has non-numeric dtype {dtype}")
                nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if info.file_size > nbytes + _MEMBER_SLACK:
                    raise CheckpointError(f"{path}: entry {key!r} holds {info.file_size:,} bytes for a "
                                          f"{shape} array ({nbytes:,} bytes)")
                total += nbytes
                if total > MAX_ARRAY_BYTES:
                    raise CheckpointError(f"{path}: its arrays claim more than {MAX_ARRAY_BYTES:,} bytes")
    except CheckpointError:
        raise
    except Exception as exc:            # noqa: BLE001 - BadZipFile, a mangled header, ...
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({type(exc).__name__}: {exc})") from None


def read(path: Union[str, Path]) -> Checkpoint:
    """Read a checkpoint's arrays and meta without trusting anything in it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":        # np.load would also accept .npy and pickles
            raise CheckpointError(f"{path}: not a readable .npz checkpoint (no zip header)")
    _check_members(path)                     # every header, before any data is inflated
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as exc:
        if "pickle" in str(exc):        # object arrays: allow_pickle=False refuses them
            raise CheckpointError(f"{path}: refused: {exc} (checkpoints hold plain numeric arrays only)") from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint (ValueError: {exc})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: an entry claims more memory than is available") from None
    except Exception as exc:            # noqa: BLE001 - zipfile/numpy raise many types on corrupt
        # input (BadZipFile, NotImplementedError, SyntaxError from a mangled .npy header, ...)
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({type(exc).__name__}: {exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: no 'meta' entry; not a fastlenet checkpoint")
    try:
        meta = json.loads(arrays.pop("meta").astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt 'meta' JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: 'meta' JSON nested too deeply to be a checkpoint's") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastlenet checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is not supported (this is {VERSION})")
    groups: Dict[str, Dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise CheckpointError(f"{path}: unexpected entry {key!r}")
        if value.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: entry {key!r} has non-numeric dtype {value.dtype}")
        groups[group][name] = value
    return Checkpoint(meta, groups["param"], groups["buffer"], groups["optim"], groups["best"])


def _check_group(path, what, got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]):
    problems = []
    for name in sorted(set(want) - set(got)):
        problems.append(f"missing {what} {name!r}")
    for name in sorted(set(got) - set(want)):
        problems.append(f"unexpected {what} {name!r}")
    for name in sorted(set(got) & set(want)):
        g, w = got[name], want[name]
        if g.shape != w.shape:
            problems.append(f"{what} {name!r} has shape {g.shape}, the model config needs {w.shape}")
        elif g.dtype != w.dtype:
            problems.append(f"{what} {name!r} has dtype {g.dtype}, the model config needs {w.dtype}")
        elif not np.isfinite(g).all():
            problems.append(f"{what} {name!r} holds NaN or infinite values")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise CheckpointError(f"{path}: does not match its model config: " + "; ".join(problems[:5]) + more)


def load_into(model, path: Union[str, Path], ckpt: Optional[Checkpoint] = None) -> Checkpoint:
    """Load a checkpoint's values into ``model`` after checking every array's
    name, shape, dtype (and finiteness) against it; nothing is written on a mismatch.
    ``ckpt``: the already-read checkpoint at ``path`` (read here otherwise)."""
    ckpt = read(path) if ckpt is None else ckpt
    _check_group(path, "parameter", ckpt.params, model.params)
    _check_group(path, "buffer", ckpt.buffers, model.buffers)
    if ckpt.best:
        _check_group(path, "best parameter", ckpt.best, model.params)
    for name, value in ckpt.params.items():
        model.params[name][...] = value
    for name, value in ckpt.buffers.items():
        model.buffers[name][...] = value
    return ckpt


#: presets renamed since: the name an older checkpoint wrote -> the model file it meant
LEGACY_PRESETS = {"lenet5-bn": "lenet5-bn-all"}     # 2026-12-02: lenet5-bn now has batch norm after the convs only


def load_model(path: Union[str, Path], backend=None):
    """Rebuild the model a checkpoint describes and load its values: ``(model, checkpoint)``,
    the checkpoint's preprocessing checked into ``checkpoint.inference`` (fastlenet.meta)."""
    from . import kernels, models
    from .meta import check_model_config, inference
    backend = backend or kernels.default_backend().name     # a bad FASTLENET_BACKEND is its own error
    ckpt = read(path)
    config = check_model_config(ckpt.meta.get("model"), path)    # bounded before anything is built
    try:
        if "spec" in config:                     # checked by check_model_config
            model = models.from_spec(config["spec"], backend=backend, seed=config["seed"], where=f"{path}: meta model.spec")
        else:                                    # written before model files existed: a preset and its overrides
            name = LEGACY_PRESETS.get(config["name"], config["name"])
            model = models.build(name, backend=backend, seed=config["seed"],
                                 dtype=np.dtype(config["dtype"]), activation=config["activation"],
                                 pool=config["pool"], dense_activation=config["dense_activation"],
                                 num_classes=config["num_classes"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: its model config cannot be built: {exc}") from None
    load_into(model, path, ckpt)
    ckpt.inference = inference(ckpt.meta, path, model.input_shape, model.output_shape[0])
    return model, ckpt


def load_optimizer_state(path, ckpt: Checkpoint, optimizer) -> None:
    """Restore optimizer state, checking it against the optimizer's own layout."""
    want = {k: np.asarray(v) for k, v in optimizer.state_dict().items()}
    _check_group(path, "optimizer entry", ckpt.optim, want)
    optimizer.load_state_dict(ckpt.optim)
