"""A run directory: the one object that owns every file of a training run.

Layout (each file written atomically, see fastlenet.fileio)::

    RUN/config.json     settings, versions, backend, threads  (written once, at the start)
    RUN/model.json      the model file trained (fastlenet.spec; --model RUN/model.json trains it again)
    RUN/history.csv     one row per finished epoch            (rewritten after every epoch)
    RUN/last.npz        model + optimizer + trainer position  (after every epoch, on a stop)
    RUN/best.npz        the best epoch's model (the monitored metric; see trainer)
    RUN/metrics.json    test accuracy of best.npz, confusion matrix, timings (at the end)
    RUN/curves.png, confusion.png, samples.png               (at the end, with matplotlib)
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional

from . import checkpoint

try:
    import fcntl
except ImportError:         # not POSIX (Windows): runs are not locked
    fcntl = None
from .fileio import atomic_write_bytes, write_json

HISTORY_FIELDS = ["epoch", "seconds", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]


class RunDirectoryError(ValueError):
    """A run directory that cannot be created, written or resumed."""


#: the files a run writes: a new run never starts in a folder that already holds one
RUN_FILES = ("config.json", "model.json", "history.csv", "last.npz", "best.npz", "metrics.json")
#: what a run writes before its first epoch ends
START_FILES = ("config.json", "model.json")
LOCK_NAME = ".fastlenet.lock"


class RunDirectory:
    """The files of one run under ``path``.  A run holds ``RUN/.fastlenet.lock`` (an
    advisory ``flock``, released by the kernel however the process ends) for as long as
    it writes there, so a second training into the same folder is refused."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self._lock_fd: Optional[int] = None

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ opening
    def create(self) -> "RunDirectory":
        """Make the folder for a new run (refusing one that already holds a run) and check
        that it is writable."""
        if self.file("last.npz").exists():
            raise RunDirectoryError(f"{self.path} already holds a run; continue it with --resume "
                                    f"{self.path} or choose another --out")
        present = [name for name in RUN_FILES if os.path.lexists(self.file(name))]
        if present and not self._unstarted_run():
            raise RunDirectoryError(f"{self.path} already holds {', '.join(present)}, which this run "
                                    "would overwrite; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.file(".write-test")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirectoryError(f"cannot write to run directory {self.path}: {exc.strerror or exc}") from None
        return self.lock()

    def _unstarted_run(self) -> bool:
        """Whether the folder holds only what a fastlenet run that never finished an epoch
        writes (its own config.json, no checkpoint): a new run may start over there."""
        if any(os.path.lexists(self.file(n)) for n in RUN_FILES if n not in START_FILES):
            return False
        try:
            doc = json.loads(self.file("config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(doc, dict) and isinstance(doc.get("settings"), dict) and "versions" in doc

    def lock(self) -> "RunDirectory":
        """Hold the run's lock until :meth:`unlock` or the process ends; refuse (naming the
        process) when another training holds it."""
        if self._lock_fd is not None or fcntl is None:
            return self
        try:
            fd = os.open(self.file(LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot lock run directory {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirectoryError(f"{self.path} is being written by another training (pid {holder}); "
                                    "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)                  # closing releases the flock
            self._lock_fd = None

    def read_settings(self) -> dict:
        """The settings of the run to resume (from config.json), checking it can be resumed."""
        cfg = self.file("config.json")
        if not cfg.is_file():
            raise RunDirectoryError(f"--resume {self.path}: no config.json there (not a fastlenet run directory)")
        if not self.file("last.npz").is_file():
            raise RunDirectoryError(f"--resume {self.path}: no last.npz to resume from")
        self.lock()
        return self.read_config()["settings"]

    def read_config(self) -> dict:
        """config.json, checked to be an object with a 'settings' object."""
        cfg = self.file("config.json")
        try:
            doc = json.loads(cfg.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RunDirectoryError(f"{cfg}: unreadable ({type(exc).__name__}: {str(exc)[:100]})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
            raise RunDirectoryError(f"{cfg}: has no 'settings' object")
        return doc

    # ------------------------------------------------------------------ writing
    def write_config(self, doc: dict) -> None:
        write_json(self.file("config.json"), doc)

    def write_model(self, spec: dict) -> None:
        write_json(self.file("model.json"), spec)

    def write_metrics(self, doc: dict) -> None:
        write_json(self.file("metrics.json"), doc)

    def write_history(self, records: Iterable[dict]) -> None:
        """history.csv: one row per epoch (empty cells for metrics a run does not measure)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for rec in records:
            w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        atomic_write_bytes(self.file("history.csv"), buf.getvalue().encode())

    def save_checkpoint(self, name: str, model, meta: dict, optimizer=None) -> Path:
        return checkpoint.save(self.file(name), model, meta, optimizer)

    def write_plots(self, history, cm, ds, pred, log) -> None:
        """curves.png, confusion.png, samples.png (a note instead when matplotlib is missing)."""
        try:
            from . import plots
            plots.curves(self.file("curves.png"), history)
            plots.confusion(self.file("confusion.png"), cm, ds.class_names)
            plots.samples(self.file("samples.png"), ds.x_test, ds.y_test, pred, ds.class_names)
        except ImportError as exc:
            log(f"note: plots skipped ({exc}); pip install 'fastlenet[plot]', then draw them with: "
                f"fastlenet plot {self.path}")
        except OSError as exc:
            log(f"note: plots skipped: could not write them ({exc})")


def optional(path) -> Optional[RunDirectory]:
    """A RunDirectory for ``path``, or None for None (nothing written)."""
    return None if path is None else RunDirectory(path)
