"""The Numba backend's first run, compiled on two processes.

A cold Numba cache makes the first training step compile every kernel the model
uses, one after another, on one core (about 10 s for LeNet-5). Numba compiles a
kernel at its first call and writes it to the on-disk cache; any process that
calls the kernel later with the same argument types loads it from there.

So, while the training process compiles its kernels in call order (the forward
pass first), a helper process (``start_helper``) compiles the same kernels from
the far end (the optimiser, the backward pass, then the forward pass), with the
argument types that a recorded run of the same network used. The two meet in
the middle; whatever one has finished, the other loads from the cache. The helper
only compiles: it runs no kernel and writes nothing but Numba's own cache files.

The recorded types live in ``numba_warmup.json`` beside this file, one list per
network (keyed by ``spec_key`` of its model file): a network without an entry,
fewer than two free CPUs, a warm cache or ``FASTLENET_NUMBA_HELPER=0`` start no helper.

    python -m fastlenet.kernels.numba_warmup --record          # rewrite the json (every preset)
    python -m fastlenet.kernels.numba_warmup --parent PID KEY  # the helper (start_helper runs it)
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

MANIFEST = Path(__file__).with_name("numba_warmup.json")
MODULES = ("numba_backend", "numba_conv", "numba_norm", "numba_pool", "_numba_loops", "_numba_options")
MAX_MANIFEST_BYTES = 1 << 20
MAX_KERNELS = 200
SCALARS = ("int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "float32", "float64", "boolean",
           "none")
LAYOUTS = ("C", "F", "A")
FORMAT = "fastlenet-numba-warmup"
NOT_SOURCES = ("numba_warmup.py", "cython_backend.py", "reference.py")     # no say in the Numba kernels' types
SOURCES_OUTSIDE = ("layers.py", "losses.py", "optim.py", "flat.py", "models.py", "buffers.py", "metrics.py")


class ManifestError(ValueError):
    """numba_warmup.json does not hold what this module wrote."""


def source_fingerprint() -> str:
    """A hash of the sources that decide which kernels a network calls with which argument
    types: a manifest recorded from other sources (or another Numba version) is not used, as
    its types could differ, and two processes compiling two overloads of one kernel at once
    can mix up Numba's cache files."""
    root = Path(__file__).resolve().parent
    files = sorted(f for f in root.glob("*.py") if f.name not in NOT_SOURCES) + \
        [root.parent / f for f in SOURCES_OUTSIDE]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\n".encode() + f.read_bytes())
    return digest.hexdigest()[:20]


def numba_version() -> str:
    from importlib.metadata import version
    return version("numba")


def spec_key(spec: dict) -> str:
    """A network's key in the manifest: a hash of its model file without name and description
    (two files with the same layers, shapes and dtype compile the same kernels)."""
    body = {k: v for k, v in spec.items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- argument types
def type_to_json(t) -> list:
    """A Numba argument type as JSON: ["array", dtype, ndim, layout, readonly] or [scalar name];
    ValueError for any other type (its kernel is not recorded)."""
    from numba.core import types
    if isinstance(t, types.Array) and t.aligned and str(t.dtype) in SCALARS:
        return ["array", str(t.dtype), t.ndim, t.layout, not t.mutable]
    if isinstance(t, types.Boolean):
        return ["boolean"]
    if isinstance(t, (types.Integer, types.Float, types.NoneType)) and str(t) in SCALARS:
        return [str(t)]
    raise ValueError(f"argument type {t} is not recorded")


def type_from_json(doc):
    """The Numba type ``type_to_json`` wrote; ManifestError for anything else."""
    from numba.core import types
    if isinstance(doc, list) and len(doc) == 1 and doc[0] in SCALARS:
        return getattr(types, doc[0])
    if (isinstance(doc, list) and len(doc) == 5 and doc[0] == "array" and doc[1] in SCALARS[:-1]
            and type(doc[2]) is int and 0 <= doc[2] <= 8 and doc[3] in LAYOUTS and type(doc[4]) is bool):
        return types.Array(getattr(types, doc[1]), doc[2], doc[3], readonly=doc[4])
    raise ManifestError(f"not an argument type: {str(doc)[:80]}")


def kernel(module: str, name: str):
    """The Numba dispatcher ``fastlenet.kernels.<module>.<name>``; ManifestError otherwise."""
    from numba.core.registry import CPUDispatcher
    if module not in MODULES:
        raise ManifestError(f"not a kernel module: {str(module)[:80]}")
    obj = getattr(importlib.import_module(f"fastlenet.kernels.{module}"), str(name), None)
    if not isinstance(obj, CPUDispatcher):
        raise ManifestError(f"fastlenet.kernels.{module} has no Numba kernel {str(name)[:80]}")
    return obj


# --------------------------------------------------------------------------- the manifest
def read_manifest(path: Path = MANIFEST) -> Dict[str, dict]:
    """{"numba": version, "sources": source_fingerprint(), "networks": {key: {"name": preset, "kernels": [[module,
    name, [type, ...]], ...]}}} from the json;
    ManifestError when it is not what ``write_manifest`` writes (size bounded first)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("networks"), dict) \
            or not isinstance(doc.get("sources"), str) or not isinstance(doc.get("numba"), str):
        raise ManifestError(f"{path} is not a {FORMAT} file")
    for key, entry in doc["networks"].items():
        kernels = entry.get("kernels") if isinstance(entry, dict) else None
        if not isinstance(kernels, list) or len(kernels) > MAX_KERNELS or not all(
                isinstance(k, list) and len(k) == 3 and isinstance(k[2], list) for k in kernels):
            raise ManifestError(f"{path}: network {str(key)[:40]} has no valid kernel list")
    return doc


def write_manifest(networks: Dict[str, dict], path: Path = MANIFEST) -> None:
    """Write the manifest atomically (a temporary file beside it, then a rename)."""
    from ..fileio import atomic_write_bytes
    lines = [f'{{"format": "{FORMAT}", "numba": "{numba_version()}", "sources": "{source_fingerprint()}",',
             ' "networks": {']
    for n, (key, entry) in enumerate(sorted(networks.items())):
        lines.append(f' "{key}": {{"name": {json.dumps(entry["name"])}, "kernels": [')
        lines += [f"  {json.dumps(k)}," for k in entry["kernels"]]
        lines[-1] = lines[-1].rstrip(",")
        lines.append(" ]}" + ("," if n < len(networks) - 1 else ""))
    text = "\n".join(lines + ["}}", ""])
    json.loads(text)                                   # the layout above is JSON
    atomic_write_bytes(path, text.encode())


# --------------------------------------------------------------------------- recording
def record_calls(workload) -> List[list]:
    """[[module, name, [type, ...]], ...]: the kernels ``workload()`` calls from Python, in the
    order of their first call, each with the argument types of that call (kernels they call
    compile with them). Run it in a fresh process: kernels already compiled are not seen."""
    from numba.core.dispatcher import Dispatcher
    calls = []
    original = Dispatcher._compile_for_args

    def recording(self, *args, **kws):
        before = set(self.overloads)
        result = original(self, *args, **kws)
        module = self.py_func.__module__.rsplit(".", 1)[-1]
        for sig in [s for s in self.overloads if s not in before]:
            try:
                call = [module, self.py_func.__name__, [type_to_json(t) for t in sig]]
            except ValueError:
                continue
            if call not in calls:             # _compile_for_args may call itself once more
                calls.append(call)
        return result

    Dispatcher._compile_for_args = recording
    try:
        workload()
    finally:
        Dispatcher._compile_for_args = original
    return calls


def preset_workload(name: str):
    """(spec key, workload): one CLI training step of preset ``name`` on the numba backend
    (batch 256 of noise, the CLI's default settings) and one evaluation batch."""
    import numpy as np

    from .. import settings, train
    from ..metrics import evaluate
    s, _ = settings.resolve_settings(settings.build_parser().parse_args(["--model", name, "--backend", "numba"]))
    model = train.settings_model(s)
    opt = train.make_optimizer(s, model)
    rng = np.random.default_rng(0)
    x = rng.random((256,) + model.input_shape, dtype=np.float32).astype(model.dtype)
    y = rng.integers(0, model.output_shape[0], 256)

    def workload():
        model.forward_backward(x, y, s["label_smoothing"])
        opt.step(model.grads)
        evaluate(model, x, y)
    return spec_key(model.to_spec()), workload


def _record_one(name: str) -> int:
    key, workload = preset_workload(name)
    print(json.dumps({"key": key, "name": name, "kernels": record_calls(workload)}))
    return 0


def record_preset(name: str) -> dict:
    """{"key", "name", "kernels"} of preset ``name``, recorded in a fresh process with an empty
    Numba cache: a warm one would change which calls reach Python's dispatch first (a kernel
    that another compiles as its callee is then never called cold from Python)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fastlenet-record-") as cache:
        out = subprocess.run([sys.executable, "-m", "fastlenet.kernels.numba_warmup", "--record-one", name],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, NUMBA_CACHE_DIR=cache)).stdout
    return json.loads(out.strip().splitlines()[-1])


def record_presets(path: Path = MANIFEST) -> Dict[str, dict]:
    """Record every preset (``record_preset``) and rewrite the manifest."""
    from ..models import PRESETS
    networks = {}
    for name in sorted(PRESETS):
        doc = record_preset(name)
        networks[doc["key"]] = {"name": doc["name"], "kernels": doc["kernels"]}
    write_manifest(networks, path)
    return networks


# --------------------------------------------------------------------------- the helper
def compile_from_far_end(kernels: List[list], parent: Optional[int] = None) -> int:
    """Compile ``kernels`` (manifest entries) last first; stop when the process ``parent``
    is gone. Returns how many were compiled or loaded."""
    entries = [(kernel(m, n), tuple(type_from_json(t) for t in args)) for m, n, args in kernels]
    done = 0
    for dispatcher, sig in reversed(entries):
        if parent is not None and os.getppid() != parent:
            break
        dispatcher.compile(sig)
        done += 1
    return done


def network_kernels(spec: dict, path: Path = MANIFEST) -> Optional[List[list]]:
    """The recorded kernels of the network of model file ``spec``, or None: no entry for it,
    or a manifest recorded from other sources (``source_fingerprint``) or none at all."""
    try:
        doc = read_manifest(path)
        current = doc["sources"] == source_fingerprint() and doc["numba"] == numba_version()
        entry = doc["networks"].get(spec_key(spec)) if current else None
        return None if entry is None else [(kernel(m, n), args) for m, n, args in entry["kernels"]]
    except (OSError, ManifestError):
        return None


def uncompiled(entries: List[tuple]) -> bool:
    """Whether some recorded kernel has no index file in Numba's cache yet."""
    for dispatcher, _ in entries:
        index = getattr(getattr(getattr(dispatcher, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is None or not os.path.exists(index):
            return True
    return False


def free_cpus(samples: int = 5, interval: float = 0.01) -> int:
    """Usable CPUs minus the other tasks running or waiting for one (the median of a few
    reads of /proc/loadavg, 10 ms apart). Beside CPU-bound work the helper would only share
    this process's CPU time (beside two CPU hogs on 2 cores: 15.5 s -> 18.5 s to the first
    batch), so it starts only when two CPUs are free."""
    import statistics
    import time

    from ..governor import runnable_tasks
    from . import usable_cpus
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        counts.append(runnable_tasks())
    if None in counts:
        return usable_cpus()
    return usable_cpus() - max(0, int(statistics.median(counts)) - 1)


def start_helper(spec: dict, path: Path = MANIFEST) -> Optional[subprocess.Popen]:
    """The helper process for the network of model file ``spec``, whose recorded kernels
    (``network_kernels``) the caller found in ``path`` and not all cached (``uncompiled``);
    None when it would not help: fewer than two free CPUs (``free_cpus``;
    ``FASTLENET_NUMBA_HELPER=1`` skips that test), or ``FASTLENET_NUMBA_HELPER=0``. The
    caller ends it when done (``stop_helper``)."""
    wanted = os.environ.get("FASTLENET_NUMBA_HELPER", "auto")
    if wanted == "0" or (wanted != "1" and free_cpus() < 2):
        return None
    return subprocess.Popen([sys.executable, "-m", "fastlenet.kernels.numba_warmup", "--manifest", str(path),
                             "--parent", str(os.getpid()), spec_key(spec)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_helper(proc: Optional[subprocess.Popen]) -> None:
    """End the helper (it may be mid-compile: Numba writes its cache files by rename)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m fastlenet.kernels.numba_warmup", description=__doc__.split("\n")[0])
    p.add_argument("key", nargs="?", help="the network's key in the manifest (the helper)")
    p.add_argument("--parent", type=int, help="stop when this process is gone")
    p.add_argument("--manifest", type=Path, default=MANIFEST)
    p.add_argument("--record", action="store_true", help="record every preset and rewrite the manifest")
    p.add_argument("--record-one", metavar="PRESET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.record_one:
        return _record_one(args.record_one)
    if args.record:
        for key, entry in record_presets(args.manifest).items():
            print(f"{entry['name']:16s} {key}  {len(entry['kernels'])} kernels")
        return 0
    if not args.key:
        p.error("give a network key, --record or --record-one")
    try:
        kernels = read_manifest(args.manifest)["networks"].get(args.key)
    except (OSError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if kernels is None:
        print(f"error: {args.manifest} has no network {args.key}", file=sys.stderr)
        return 2
    compile_from_far_end(kernels["kernels"], args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
