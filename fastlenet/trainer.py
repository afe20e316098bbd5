"""The training loop: epochs of shuffled mini-batches, evaluation, schedules,
early stopping, checkpoints, interruption and exact resumption.

Dimension legend: N images, C channels, H/W height/width, K classes.

Everything random in an epoch is derived from ``(seed, epoch[, batch])``
(the shuffling order and the augmentation), so a run interrupted after any
batch and resumed from its checkpoint ends with exactly the parameters of an
uninterrupted run.  :func:`fit` is the Python API; ``python -m fastlenet.train``
is the command line around it.
"""
from __future__ import annotations

import csv
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from . import checkpoint, optim
from .data import Dataset, atomic_write_bytes
from .losses import softmax_cross_entropy


class TrainingStopped(Exception):
    """Training ended early: diverged, interrupted, or could not save. ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: Optional[float]
    val_accuracy: Optional[float]
    lr: float
    seconds: float


@dataclass
class History:
    epochs: List[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1

    def as_dicts(self):
        return [vars(e) for e in self.epochs]


# --------------------------------------------------------------------------- helpers
def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000):
    """Inference-mode (loss, accuracy, predictions) over x (N, C, H, W), y (N,)."""
    total, preds = 0.0, []
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size], training=False)
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch_size])
        total += loss * len(logits)
        preds.append(logits.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(x), float((pred == y).mean()), pred


def augment(x: np.ndarray, rng: np.random.Generator, max_shift: int = 2, flip: bool = False) -> np.ndarray:
    """Random translations by up to ``max_shift`` pixels (zero fill) and, when
    ``flip``, horizontal flips of half the images.  x (N, C, H, W) -> new array."""
    n, _, h, w = x.shape
    s = max_shift
    if s == 0:
        out = x.copy()
        if flip:
            m = rng.random(n) < 0.5
            out[m] = out[m, :, :, ::-1]
        return out
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    oy, ox = rng.integers(0, 2 * s + 1, n), rng.integers(0, 2 * s + 1, n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    if flip:
        m = rng.random(n) < 0.5
        out[m] = out[m, :, :, ::-1]
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its batch, saves and exits.
    A second SIGINT interrupts at once (the last checkpoint is still intact)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.signum: Optional[int] = None
        self.log = log
        self._old = {}

    def __enter__(self):
        if hasattr(signal, "SIGTERM") and _main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.log(f"\n{signal.Signals(signum).name}: finishing the current batch, then saving last.npz ...")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Runs epochs of ``model`` on ``data`` and keeps the run directory up to date.

    ``run_dir`` None: nothing is written (the Python API's default).
    """

    def __init__(self, model, data: Dataset, optimizer, schedule: Optional[optim.Schedule] = None,
                 epochs: int = 10, batch_size: int = 256, seed: int = 0,
                 early_stopping: Optional[optim.EarlyStopping] = None, augment: bool = False,
                 label_smoothing: float = 0.0, max_shift: int = 2, run_dir: Optional[Path] = None,
                 meta: Optional[dict] = None, log: Optional[Callable[[str], None]] = None,
                 progress: bool = False) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.data, self.opt = model, data, optimizer
        self.schedule = schedule or optim.Schedule(optimizer.lr)
        self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), int(seed)
        self.early = early_stopping
        self.augment, self.label_smoothing = bool(augment), float(label_smoothing)
        self.max_shift = int(max_shift)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.meta = dict(meta or {})
        self.log = log or (lambda s: None)
        self.progress = progress
        self.history = History()
        self.best_metric = -math.inf
        self.first_batch_done: Optional[float] = None     # time.time() when this process finished a batch
        # position: the next epoch/batch to run and the running sums of the current epoch
        self.epoch, self.batch = 0, 0
        self.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    # ------------------------------------------------------------------ state
    def _state_meta(self) -> dict:
        return {
            **self.meta,
            "position": {"epoch": self.epoch, "batch": self.batch, "sums": self.sums},
            "history": self.history.as_dicts(), "best_epoch": self.history.best_epoch,
            "best_metric": self.best_metric,
            "schedule": self.schedule.state(),
            "early_stopping": self.early.state() if self.early else None,
            "mean": self.data.mean, "std": self.data.std,
            "class_names": list(self.data.class_names),
        }

    def save(self, name: str) -> Optional[Path]:
        if self.run_dir is None:
            return None
        best = self.early.best_params if (self.early and self.early.best_params is not None) else None
        try:
            return checkpoint.save(self.run_dir / name, self.model, self._state_meta(), self.opt, best)
        except OSError as exc:
            raise TrainingStopped(f"could not write {self.run_dir / name}: {exc.strerror or exc}; "
                                  "the previous checkpoint is intact", 4) from None

    def restore(self, ckpt: checkpoint.Checkpoint, path) -> None:
        """Continue from a checkpoint written by :meth:`save` (model values already loaded)."""
        checkpoint.load_optimizer_state(path, ckpt, self.opt)
        meta = ckpt.meta
        pos = meta["position"]
        self.epoch, self.batch, self.sums = int(pos["epoch"]), int(pos["batch"]), dict(pos["sums"])
        self.history = History([EpochRecord(**e) for e in meta["history"]], int(meta["best_epoch"]))
        self.best_metric = float(meta["best_metric"])
        self.schedule.load_state(meta["schedule"])
        if self.early and meta.get("early_stopping"):
            self.early.load_state(meta["early_stopping"])
            if ckpt.best:
                self.early.best_params = {k: v.copy() for k, v in ckpt.best.items()}

    # ------------------------------------------------------------------ loop
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.data.x_train))

    def _run_epoch(self, stop: _StopRequest) -> bool:
        """Train the rest of epoch ``self.epoch``; False when a stop was requested mid-epoch."""
        x, y, bs = self.data.x_train, self.data.y_train, self.batch_size
        order = self._epoch_order(self.epoch)
        n_batches = -(-len(x) // bs)
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=n_batches, initial=self.batch, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                       leave=False, unit="batch", file=sys.stderr)
        try:
            while self.batch < n_batches:
                t0 = time.perf_counter()
                idx = np.sort(order[self.batch * bs:(self.batch + 1) * bs])
                xb, yb = x[idx], y[idx]
                if self.augment:
                    rng = np.random.default_rng([self.seed, self.epoch, self.batch, 1])
                    xb = augment(xb, rng, self.max_shift, flip=self.data.flip_ok)
                loss, grads = self.model.loss_and_grads(xb, yb, self.label_smoothing)
                if not math.isfinite(loss):
                    raise TrainingStopped(
                        f"training diverged: the loss became {loss} at epoch {self.epoch + 1}, batch "
                        f"{self.batch + 1} (learning rate {self.opt.lr:g}); try a lower --lr, e.g. "
                        f"{self.opt.lr / 10:g}. The last good checkpoint is kept.", 3)
                self.opt.step(grads)
                if self.first_batch_done is None:
                    self.first_batch_done = time.time()
                self.batch += 1
                self.sums["loss"] += loss * len(yb)
                self.sums["correct"] += int((self.model.last_logits.argmax(axis=1) == yb).sum())
                self.sums["seen"] += len(yb)
                self.sums["seconds"] += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.sums['loss'] / self.sums['seen']:.4f}")
                if stop.signum is not None and self.batch < n_batches:
                    return False
        finally:
            if bar is not None:
                bar.close()
        return True

    def _finish_epoch(self) -> bool:
        """Evaluate, record, schedule, checkpoint; True when early stopping says stop."""
        d = self.data
        val_loss = val_acc = None
        if d.x_val is not None and len(d.x_val):
            val_loss, val_acc, _ = evaluate(self.model, d.x_val, d.y_val)
        rec = EpochRecord(self.epoch + 1, self.sums["loss"] / self.sums["seen"],
                          self.sums["correct"] / self.sums["seen"], val_loss, val_acc,
                          self.opt.lr, self.sums["seconds"])
        self.history.epochs.append(rec)
        # best epoch: highest validation accuracy (training accuracy without a validation set)
        metric = val_acc if val_acc is not None else rec.train_accuracy
        improved = metric > self.best_metric
        if improved:
            self.best_metric, self.history.best_epoch = metric, rec.epoch
        self.schedule.observe(val_loss if val_loss is not None else rec.train_loss)
        stop = False
        if self.early:
            value = {"val_loss": val_loss, "val_accuracy": val_acc, "train_loss": rec.train_loss,
                     "train_accuracy": rec.train_accuracy}.get(self.early.monitor)
            if value is None:
                raise ValueError(f"early stopping monitors {self.early.monitor!r}, which this run does not "
                                 "measure (set --val-split for val_loss / val_accuracy)")
            stop = self.early.update(rec.epoch, value, self.model.params)
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if improved:
            self.save("best.npz")
        self.save("last.npz")
        self.log(self._epoch_line(rec))
        if self.run_dir is not None:
            self.write_history()
        return stop

    def _epoch_line(self, r: EpochRecord) -> str:
        val = (f"  val loss {r.val_loss:.4f} acc {100 * r.val_accuracy:.2f}%" if r.val_loss is not None else "")
        return (f"epoch {r.epoch:>3}/{self.epochs}  {r.seconds:6.1f}s  train loss {r.train_loss:.4f} "
                f"acc {100 * r.train_accuracy:.2f}%{val}  lr {r.lr:.3g}")

    def run(self) -> History:
        """Train until ``epochs`` are done or early stopping fires.

        Raises :class:`TrainingStopped` when interrupted (after saving last.npz)
        or when the loss stops being finite (keeping the last good checkpoint).
        """
        # overflow/NaN are detected (a non-finite loss stops the run with a message);
        # NumPy's warnings about them would only add noise to the output
        with _StopRequest(self.log) as stop, np.errstate(over="ignore", invalid="ignore"):
            while self.epoch < self.epochs:
                self.opt.lr = self.schedule.lr(self.epoch)
                completed = self._run_epoch(stop)
                if completed:
                    early_stop = self._finish_epoch()
                    if early_stop:
                        self.log(f"early stopping: {self.early.monitor} has not improved for "
                                 f"{self.early.patience} epochs (best epoch {self.early.best_epoch})")
                        break
                if stop.signum is not None:
                    self.save("last.npz")
                    where = f" {self.run_dir}" if self.run_dir else ""
                    code = 128 + stop.signum
                    raise TrainingStopped(
                        f"interrupted by {signal.Signals(stop.signum).name} at epoch {self.epoch + 1}, "
                        f"batch {self.batch}; state saved to last.npz. Resume with: "
                        f"python -m fastlenet.train --resume{where}", code)
        if self.early and self.early.restore_best and self.early.best_params is not None:
            self.early.restore(self.model.params)
        return self.history

    def write_history(self) -> None:
        """history.csv: one row per epoch."""
        import io
        buf = io.StringIO()
        fields = ["epoch", "seconds", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for rec in self.history.epochs:
            w.writerow({k: ("" if v is None else v) for k, v in vars(rec).items()})
        atomic_write_bytes(self.run_dir / "history.csv", buf.getvalue().encode())


def write_json(path: Path, doc: dict) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fit(model, data: Dataset, epochs: int = 10, batch_size: int = 256, optimizer=None,
        schedule: Optional[optim.Schedule] = None, early_stopping: Optional[optim.EarlyStopping] = None,
        augment: bool = False, seed: int = 0, run_dir=None, verbose: bool = False) -> History:
    """Train ``model`` on ``data`` (a :class:`fastlenet.data.Dataset`) and return its history.

    ``optimizer`` defaults to Adam(lr=1e-3) over ``model.params`` (on the model's backend).  With
    ``run_dir`` set, checkpoints (last.npz, best.npz) and history.csv are
    written there.  Validation uses ``data.x_val``/``data.y_val`` when present.
    """
    opt = optimizer or optim.Adam(model.params, lr=1e-3, backend=model.backend)
    trainer = Trainer(model, data, opt, schedule, epochs, batch_size, seed, early_stopping, augment,
                      run_dir=Path(run_dir) if run_dir else None, log=print if verbose else None)
    if trainer.run_dir is not None:
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
    return trainer.run()
