"""A run directory: the one object that owns every file of a training run.

Layout (each file written atomically, see fastlenet.fileio)::

    RUN/config.json     settings, versions, backend, threads  (written once, at the start)
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
from pathlib import Path
from typing import Iterable, Optional

from . import checkpoint
from .fileio import atomic_write_bytes, write_json

HISTORY_FIELDS = ["epoch", "seconds", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]


class RunDirectoryError(ValueError):
    """A run directory that cannot be created, written or resumed."""


class RunDirectory:
    """The files of one run under ``path``."""

    def __init__(self, path) -> None:
        self.path = Path(path)

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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.file(".write-test")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirectoryError(f"cannot write to run directory {self.path}: {exc.strerror or exc}") from None
        return self

    def read_settings(self) -> dict:
        """The settings of the run to resume (from config.json), checking it can be resumed."""
        cfg = self.file("config.json")
        if not cfg.is_file():
            raise RunDirectoryError(f"--resume {self.path}: no config.json there (not a fastlenet run directory)")
        if not self.file("last.npz").is_file():
            raise RunDirectoryError(f"--resume {self.path}: no last.npz to resume from")
        try:
            doc = json.loads(cfg.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunDirectoryError(f"{cfg}: unreadable ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
            raise RunDirectoryError(f"{cfg}: has no 'settings' object")
        return doc["settings"]

    # ------------------------------------------------------------------ writing
    def write_config(self, doc: dict) -> None:
        write_json(self.file("config.json"), doc)

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
            log(f"note: plots skipped ({exc}); install them with pip install 'fastlenet[plot]'")
        except OSError as exc:
            log(f"note: plots skipped: could not write them ({exc})")


def optional(path) -> Optional[RunDirectory]:
    """A RunDirectory for ``path``, or None for None (nothing written)."""
    return None if path is None else RunDirectory(path)
