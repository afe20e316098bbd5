"""The second robustness campaign: hostile or careless input, class by class.

    python tests/robustness_campaign.py --cases 300 [--seed 0] [--only meta,images]

Each class draws random cases and sorts every outcome into "accepted" (it worked,
and the result was checked) or "refused" (the project's own one-line error, nothing
changed on disk); anything else -- another exception, a changed file, an accepted
result that is wrong, memory or time beyond the bound -- is an "UNEXPECTED" and
printed.  Exit status 1 if there was any.

Classes: writers (symlinks, FIFOs, devices, folders, own input as targets), meta
(random edits of a checkpoint's JSON), images (random .npy arrays and pictures),
labels (random IDX label files), downloads (hostile HTTP mirrors on 127.0.0.1),
flags (random bad command lines: refused before a run directory exists), resume
(random flags with --resume on a finished run: it must not change), nan (NaN/Inf
planted at random in inputs: every backend must agree with the reference).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks import print_outcomes                                      # noqa: E402
from fastlenet import checkpoint, data, images, kernels, models, train   # noqa: E402
from fastlenet.fileio import WriteRefused, atomic_write_bytes            # noqa: E402

#: a case may raise more resident memory than this (kB) only as an UNEXPECTED
RSS_BOUND_KB = 300_000
CLASSES = {}


def campaign(name):
    def register(fn):
        CLASSES[name] = fn
        return fn
    return register


class Unexpected(Exception):
    """An accepted outcome that is wrong, or a refused one that changed something."""


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink()
                     else "dir") for p in sorted(folder.iterdir()) if p.name != ".fastlenet.lock"}


# --------------------------------------------------------------------------- writers
@campaign("writers")
def writers(rng, tmp: Path, case: int):
    folder = tmp / f"w{case}"
    folder.mkdir()
    (folder / "input.bin").write_bytes(b"precious")
    kind = rng.choice(["symlink", "dangling", "fifo", "folder", "own-input", "regular", "absent", "device"])
    target = folder / "target"
    if kind == "symlink":
        target.symlink_to(folder / "input.bin")
    elif kind == "dangling":
        target.symlink_to(folder / "nowhere")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "own-input":
        target = folder / "input.bin"
    elif kind == "regular":
        target.write_bytes(b"old")
    elif kind == "device":
        target = Path("/dev/null")
    before = snapshot(folder), os.lstat("/dev/null").st_mode
    try:
        atomic_write_bytes(target, b"new", sources=[folder / "input.bin"])
    except WriteRefused:
        if (snapshot(folder), os.lstat("/dev/null").st_mode) != before:
            raise Unexpected(f"{kind}: refused but something changed")
        return f"refused {kind}"
    if kind not in ("regular", "absent") or target.read_bytes() != b"new":
        raise Unexpected(f"{kind}: written")
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    if leftovers:
        raise Unexpected(f"temporary files left: {leftovers}")
    return f"accepted {kind}"


# --------------------------------------------------------------------------- meta
def random_json(rng, depth=0):
    """A random JSON value: the awkward scalars, and (shallow) lists and objects."""
    choices = [lambda: None, lambda: True, lambda: 0, lambda: -1, lambda: 10 ** int(rng.integers(1, 20)),
               lambda: float("inf"), lambda: float("nan"), lambda: "x" * int(rng.integers(0, 5)),
               lambda: float(rng.normal()), lambda: [str(i) for i in range(int(rng.integers(0, 12)))]]
    if depth < 2:
        choices += [lambda: [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))],
                    lambda: {"a": random_json(rng, depth + 1)}]
    return choices[int(rng.integers(0, len(choices)))]()


@campaign("meta")
def meta_edits(rng, tmp: Path, case: int):
    src = tmp / "meta-good.npz"
    if not src.exists():
        checkpoint.save(src, models.build("lenet5", backend="numpy"),
                        {"class_names": [str(i) for i in range(10)], "mean": 0.1, "std": 0.3, "image_size": [28, 28],
                         "settings": {"pad32": False}})
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    doc = json.loads(arrays["meta"].tobytes())
    field = rng.choice(["model.num_classes", "model.name", "model.seed", "model.dtype", "model.activation",
                        "model.pool", "model", "class_names", "mean", "std", "image_size", "settings", "format"])
    target, key = (doc["model"], field[6:]) if field.startswith("model.") else (doc, field)
    target[key] = random_json(rng)
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    path = tmp / "meta-case.npz"
    np.savez(path, **arrays)
    try:
        model, ckpt = checkpoint.load_model(path, backend="numpy")
    except checkpoint.CheckpointError:
        return f"refused {field}"
    info = ckpt.inference
    x = np.zeros((1, 1) + info.image_size, np.float32)
    if not np.isfinite(model.forward(data.prepare_inputs(x, info, model.input_shape))).all():
        raise Unexpected(f"{field}: accepted, but a blank image gives non-finite logits")
    if len(info.class_names) != model.output_shape[0]:
        raise Unexpected(f"{field}: accepted with {len(info.class_names)} names")
    return f"accepted {field}"


# --------------------------------------------------------------------------- images
DTYPES = ["u1", "u2", ">u2", "i4", "i8", "f4", "f8", "bool", "c8", "U2"]


@campaign("images")
def image_inputs(rng, tmp: Path, case: int):
    if rng.random() < 0.3:
        return picture_input(rng, tmp)
    rank = int(rng.integers(0, 6))
    shape = tuple(int(rng.choice([0, 1, 2, 3, 4, 5, 8, 28, 60])) for _ in range(rank))
    dtype = np.dtype(rng.choice(DTYPES))
    values = rng.normal(0, 1, shape) * rng.choice([1, 255, 70000, 1e12])
    if dtype.kind == "f" and values.size and rng.random() < 0.2:
        values.flat[int(rng.integers(0, values.size))] = rng.choice([np.nan, np.inf])
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        values = np.clip(np.abs(values) if rng.random() < 0.8 else values, info.min, info.max)
    a = values.astype(dtype) if dtype.kind != "U" else np.full(shape, "a", dtype)
    path = tmp / "case.npy"
    np.save(path, a)
    what = f"{dtype.str}{list(shape)}"
    try:
        x = images.read_array(path, [])
    except images.ImageError:
        return f"refused array rank {rank}"
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1] != 1 or not (0 <= x.min() and x.max() <= 1):
        raise Unexpected(f"{what}: accepted as {x.dtype} {x.shape} in {x.min()}..{x.max()}")
    return f"accepted array rank {rank}"


def picture_input(rng, tmp: Path):
    from PIL import Image
    mode = rng.choice(["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK"])
    side = int(rng.choice([1, 5, 28, 200]))
    base = Image.fromarray(rng.integers(0, 256, (side, side, 4)).astype(np.uint8), "RGBA")
    img = base.convert(mode) if mode not in ("I;16",) else Image.fromarray(
        rng.integers(0, 65536, (side, side)).astype(np.uint16))
    path = tmp / ("case.tif" if mode in ("I", "F", "I;16", "CMYK") else "case.png")
    img.save(path)
    x = images.read_picture(path, [])
    if x.shape != (1, 1, side, side) or not (0 <= x.min() and x.max() <= 1):
        raise Unexpected(f"picture {mode}: read as {x.shape} in {x.min()}..{x.max()}")
    return f"accepted picture {mode}"


# --------------------------------------------------------------------------- labels
@campaign("labels")
def label_files(rng, tmp: Path, case: int):
    folder = tmp / f"l{case}"
    folder.mkdir()
    n = int(rng.integers(1, 40))
    dtype = np.dtype(rng.choice([">u1", ">i1", ">i2", ">i4", ">f4", ">f8"]))
    values = rng.choice([rng.integers(0, 10, n), rng.integers(-5, 5, n), rng.integers(0, 3000, n),
                         rng.integers(0, 10, n) + 0.5 * (rng.random(n) < 0.1), np.full(n, np.nan)])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.nan_to_num(values), info.min, info.max)
    labels = values.astype(dtype)
    for split in ("train", "t10k"):
        data.write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 8, 8)).astype(np.uint8))
        data.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    try:
        ds = data.load("idx", data_dir=folder)
    except data.DatasetError:
        return f"refused {dtype.str}"
    k = ds.num_classes
    if ds.y_train.min() < 0 or ds.y_train.max() >= k or k > data.MAX_CLASSES:
        raise Unexpected(f"{dtype.str}: labels {ds.y_train.min()}..{ds.y_train.max()} for {k} classes")
    original = np.array([float(ds.class_names[c]) for c in ds.y_train])
    if not np.array_equal(original, labels.astype(np.float64)):
        raise Unexpected(f"{dtype.str}: the class names do not give back the labels")
    return f"accepted {dtype.str}" + (" remapped" if ds.notes else "")


# --------------------------------------------------------------------------- downloads
@campaign("downloads")
def downloads(rng, tmp: Path, case: int):
    import test_download as td
    server = _server(td)
    files, md5, gz_md5 = td.tiny_dataset(seed=case)
    td.Handler.files = files
    modes = [str(rng.choice(["good", "missing", "corrupt", "drop", "endless", "trickle", "huge"]))
             for _ in range(int(rng.integers(1, 4)))]
    sizes = {b: len(files[f"{b}.gz"]) for b in md5}
    info = data.DatasetInfo("tiny", md5, gz_md5, tuple(f"{server}/{m}/" for m in modes), tuple("0123456789"),
                            gz_size=sizes)
    dest = tmp / f"d{case}"
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            paths = data.download(info, dest, timeout=2, retries=0, deadline=0.5)
        except data.DatasetNotFound:
            outcome = "refused"
        else:
            outcome = "accepted"
            if any(data.md5_hex(p.read_bytes()) != gz_md5[b] for b, p in paths.items()):
                raise Unexpected(f"{modes}: a downloaded file does not match its MD5")
    if time.perf_counter() - started > 4 * (0.5 + 2) * len(modes) + 5:
        raise Unexpected(f"{modes}: took {time.perf_counter() - started:.1f} s")
    if dest.exists() and any(p.name not in files for p in dest.iterdir()):
        raise Unexpected(f"{modes}: left {[p.name for p in dest.iterdir()]}")
    return f"{outcome} ({'good' in modes and 'mirror with a good one' or 'all hostile'})"


_SERVER = {}


def _server(td):
    """One local mirror for the whole campaign (test_download's server)."""
    if "url" not in _SERVER:
        _SERVER["url"], _ = td.start_server()
    return _SERVER["url"]


# --------------------------------------------------------------------------- flags and resume
BAD_FLAGS = [["--lr", "nan"], ["--lr", "-1"], ["--lr-list", ","], ["--lr-list", "0.1,inf"], ["--max-shift", "-1"],
             ["--max-shift", "100"], ["--seed", "-1"], ["--momentum", "nan"], ["--val-split", "1"],
             ["--val-split", "0.0001", "--early-stopping", "1"], ["--epochs", "0"], ["--batch-size", "0"],
             ["--limit", "3"], ["--threads", "100000"], ["--gamma", "inf"], ["--min-lr", "-0.1"],
             ["--weight-decay", "nan"], ["--label-smoothing", "1"], ["--step-size", "0"], ["--dataset", "idx"],
             ["--data-dir", "/nonexistent"], ["--plateau-factor", "1"], ["--limit", "10", "--val-split", "0.95"]]
GOOD_FLAGS = [["--epochs", "1"], ["--batch-size", "16"], ["--seed", "5"], ["--augment"], ["--standardize"],
              ["--optimizer", "sgd"], ["--schedule", "step"], ["--lr", "0.01"]]


@campaign("flags")
def bad_command_lines(rng, tmp: Path, case: int):
    from conftest import write_synthetic_idx
    idx = tmp / "idx"
    if not idx.exists():
        write_synthetic_idx(idx, n_train=60, n_test=20)
    picks = [BAD_FLAGS[int(rng.integers(0, len(BAD_FLAGS)))]] + \
            [GOOD_FLAGS[int(i)] for i in rng.choice(len(GOOD_FLAGS), int(rng.integers(0, 3)), replace=False)]
    argv = ["--dataset", "mnist" if ["--dataset", "idx"] in picks else "idx", "--data-dir", str(idx),
            "--limit", "20", "--epochs", "1", "--no-plots", "--quiet", "--backend", "numpy"]
    for flag in picks:
        argv += flag
    if ["--dataset", "idx"] in picks:
        argv = [a for a in argv if a != str(idx) and a != "--data-dir"] + ["--dataset", "idx"]
    out = tmp / f"run{case}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = train.main(argv + ["--out", str(out)])
        except SystemExit as exc:                   # argparse's own usage errors
            code = exc.code
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code != 2 or out.exists() or len(lines) > 3 or "Traceback" in err.getvalue():
        raise Unexpected(f"{picks}: exit {code}, run dir {'made' if out.exists() else 'absent'}, stderr {lines[-3:]}")
    return f"refused {picks[0][0]}"


@campaign("resume")
def resume_flags(rng, tmp: Path, case: int):
    from conftest import write_synthetic_idx
    run = tmp / "finished"
    if not run.exists():
        idx = write_synthetic_idx(tmp / "idx-resume", n_train=60, n_test=20)
        with contextlib.redirect_stdout(io.StringIO()):
            assert train.main(["--dataset", "idx", "--data-dir", str(idx), "--epochs", "1", "--no-plots", "--quiet",
                               "--backend", "numpy", "--out", str(run)]) == 0
    before = snapshot(run)
    pool = BAD_FLAGS + GOOD_FLAGS + [["--epochs", "1"], ["--threads", "1"], ["--quiet"]]
    picks = [pool[int(i)] for i in rng.choice(len(pool), int(rng.integers(0, 3)), replace=False)]
    argv = ["--resume", str(run)] + [a for flag in picks for a in flag]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = train.main(argv)
        except SystemExit as exc:
            code = exc.code
    if snapshot(run) != before:
        raise Unexpected(f"{picks}: the finished run changed")
    return f"{'finished, unchanged' if code == 0 else 'refused'}"


# --------------------------------------------------------------------------- NaN
@campaign("nan")
def non_finite(rng, tmp: Path, case: int):
    name = str(rng.choice(["lenet5", "lenet5-classic", "lenet5-bn", "lenet5-1998"]))
    reference = models.build(name, backend="numpy", seed=case)
    x = rng.random((3,) + reference.input_shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        i, c, h, w = (int(rng.integers(0, s)) for s in x.shape)
        x[i, c, h, w] = rng.choice([np.nan, np.inf, -np.inf])
    want = np.isnan(reference.forward(x))
    for backend in kernels.available():
        got = models.build(name, backend=backend, seed=case).forward(x)
        if not np.array_equal(np.isnan(got), want):
            raise Unexpected(f"{name} on {backend}: NaN pattern differs from the reference")
    return f"agreed {name}"


# --------------------------------------------------------------------------- driver
def run(cases: int, seed: int, only) -> int:
    rng = np.random.default_rng(seed)
    outcomes, failures = Counter(), 0
    names = [n for n in CLASSES if not only or n in only]
    with tempfile.TemporaryDirectory() as tmp, np.errstate(all="ignore"):
        for name in names:
            root = Path(tmp) / name
            root.mkdir()
            t0 = time.perf_counter()
            for case in range(cases):
                work = root / f"c{case}"
                work.mkdir()
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                try:
                    outcomes[(name, CLASSES[name](rng, root if name in ("meta", "flags", "resume", "downloads")
                                                  else work, case))] += 1
                    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
                    if grown > RSS_BOUND_KB:
                        raise Unexpected(f"peak resident memory grew by {grown / 1024:.0f} MB")
                except Exception as exc:                     # noqa: BLE001 - that is what we look for
                    failures += 1
                    outcomes[(name, "UNEXPECTED")] += 1
                    print(f"{name} case {case}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    if not isinstance(exc, Unexpected):
                        traceback.print_exc()
                shutil.rmtree(work, ignore_errors=True)
            print(f"{name}: {cases} cases in {time.perf_counter() - t0:.0f} s", flush=True)
    return print_outcomes(outcomes, failures, seed)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=300, help="cases per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help=f"comma-separated classes among {', '.join(CLASSES)}")
    a = p.parse_args()
    sys.exit(run(a.cases, a.seed, set(filter(None, a.only.split(",")))))
