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

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from . import checkpoint, optim
from .augment import augment
from .data import Dataset, batch_rng, batches, epoch_order, num_batches, to_float
from .metrics import evaluate
from .rundir import RunDirectory


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
    """What :func:`fit` returns: one :class:`EpochRecord` per epoch, the best epoch, and
    each metric as a list (``history["val_accuracy"]``), ready to plot (:meth:`plot`)."""

    epochs: List[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1

    def as_dicts(self):
        return [vars(e) for e in self.epochs]

    def __getitem__(self, metric: str) -> list:
        """The values of ``metric`` (``train_loss``, ``val_accuracy``, ``lr``, ...) by epoch."""
        if metric not in EpochRecord.__dataclass_fields__:
            raise KeyError(f"{metric!r}; the history holds {', '.join(EpochRecord.__dataclass_fields__)}")
        return [getattr(e, metric) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def plot(self, path=None):
        """Loss and accuracy curves (matplotlib, the ``plot`` extra): returns the figure,
        and writes it to ``path`` when given."""
        from .plots import training_curves
        return training_curves(self, path)


# --------------------------------------------------------------------------- helpers
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
    """Runs epochs of ``model`` on ``data``; ``run_dir`` (a path, or None: nothing is
    written, the Python API's default) receives its checkpoints and history.

    One notion of "best" (:class:`optim.BestTracker`): the monitored metric -- early
    stopping's ``monitor`` when given, else ``monitor`` (default: validation accuracy,
    training accuracy without a validation set).  It picks best.npz, early stopping's
    restore and :meth:`restore_best`, so the weights tested are always best.npz's.
    """

    def __init__(self, model, data: Dataset, optimizer, schedule: Optional[optim.Schedule] = None,
                 epochs: int = 10, batch_size: int = 256, seed: int = 0,
                 early_stopping: Optional[optim.EarlyStopping] = None, augment: bool = False,
                 label_smoothing: float = 0.0, max_shift: int = 2, run_dir=None,
                 meta: Optional[dict] = None, log: Optional[Callable[[str], None]] = None,
                 progress: bool = False, monitor: Optional[str] = None, callbacks=(), rotate: float = 0.0,
                 erase: float = 0.0, governor=None, elastic: float = 0.0) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.data, self.opt = model, data, optimizer
        self.schedule = schedule or optim.Schedule(optimizer.lr)
        self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), int(seed)
        self.early = early_stopping
        self.tracker = early_stopping or optim.BestTracker(monitor or self._default_monitor())
        self._check_monitor()
        self.augment, self.label_smoothing = bool(augment), float(label_smoothing)
        self.max_shift = int(max_shift)
        self.rotate, self.erase, self.elastic = float(rotate), float(erase), float(elastic)   # fastlenet.augment
        self.run_dir = run_dir if isinstance(run_dir, RunDirectory) or run_dir is None else RunDirectory(run_dir)
        self.meta = dict(meta or {})
        self.log = log or (lambda s: None)
        self.progress = progress
        self.callbacks = list(callbacks)                  # see fastlenet.callbacks
        self.governor = governor                          # a fastlenet.governor.ThreadGovernor, or None
        self.history = History()
        self.first_batch_done: Optional[float] = None     # time.time() when this process finished a batch
        # position: the next epoch/batch to run and the running sums of the current epoch
        self.epoch, self.batch = 0, 0
        self.sums = _new_sums()
        self.stopped_early = False                        # set when early stopping ends run()
        #: a callback sets this to True to end training after the current epoch
        self.stop_training = False
        self._best_weights: Optional[tuple] = None        # (params, buffers) of the best epoch

    def _has_validation(self) -> bool:
        return self.data.x_val is not None and len(self.data.x_val) > 0

    def _default_monitor(self) -> str:
        return "val_accuracy" if self._has_validation() else "train_accuracy"

    def _check_monitor(self) -> None:
        if self.tracker.monitor.startswith("val") and not self._has_validation():
            raise ValueError(f"the best epoch is chosen by {self.tracker.monitor!r}, which this run does "
                             "not measure (set --val-split for val_loss / val_accuracy)")

    # ------------------------------------------------------------------ state
    def _state_meta(self) -> dict:
        return {
            **self.meta,
            "position": {"epoch": self.epoch, "batch": self.batch, "sums": self.sums},
            "history": self.history.as_dicts(), "best_epoch": self.history.best_epoch,
            "best": self.tracker.state(), "schedule": self.schedule.state(),
            "mean": self.data.mean, "std": self.data.std,
            "class_names": list(self.data.class_names),
            "image_size": list(self.data.stored_image_size()),
        }

    def save(self, name: str) -> Optional[Path]:
        if self.run_dir is None:
            return None
        try:
            return self.run_dir.save_checkpoint(name, self.model, self._state_meta(), self.opt)
        except OSError as exc:
            raise TrainingStopped(f"could not write {self.run_dir.file(name)}: {exc.strerror or exc}; "
                                  "the previous checkpoint is intact", 4) from None

    def restore(self, ckpt: checkpoint.Checkpoint, path) -> None:
        """Continue from a checkpoint written by :meth:`save` (model values already loaded)."""
        checkpoint.load_optimizer_state(path, ckpt, self.opt)
        meta = ckpt.meta
        try:
            pos = meta["position"]
            self.epoch, self.batch, self.sums = int(pos["epoch"]), int(pos["batch"]), dict(pos["sums"])
            self.history = History([EpochRecord(**e) for e in meta["history"]], int(meta["best_epoch"]))
            self.tracker.load_state(meta["best"])
            self.schedule.load_state(meta["schedule"])
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoint.CheckpointError(f"{path}: its training state cannot be resumed ({exc!r})") from None
        self._snapshot_best()                       # the current weights, unless best.npz says otherwise
        best = self.run_dir.file("best.npz") if self.run_dir else None
        if best is not None and best.is_file() and self.history.best_epoch > 0:
            current = self._weights_copy()
            checkpoint.load_into(self.model, best)
            self._snapshot_best()
            self._put_weights(current)

    # ------------------------------------------------------------------ best weights
    def _weights_copy(self) -> tuple:
        return (self.model.flat_params.copy(), {k: b.copy() for k, b in self.model.buffers.items()})

    def _put_weights(self, weights: tuple) -> None:
        params, buffers = weights
        self.model.flat_params[...] = params
        for k, b in buffers.items():
            self.model.buffers[k][...] = b

    def _snapshot_best(self) -> None:
        if self._best_weights is None:
            self._best_weights = self._weights_copy()
        else:
            self._best_weights[0][...] = self.model.flat_params
            for k, b in self.model.buffers.items():
                self._best_weights[1][k][...] = b

    def restore_best(self) -> None:
        """Put the best epoch's weights (those of best.npz) back into the model."""
        if self._best_weights is not None:
            self._put_weights(self._best_weights)

    # ------------------------------------------------------------------ loop
    def _train_batch(self, xb: np.ndarray, yb: np.ndarray) -> None:
        t0 = time.perf_counter()
        if self.augment:
            xb = augment(xb, batch_rng(self.seed, self.epoch, self.batch), self.max_shift,
                         flip=self.data.flip_ok, rotate=self.rotate, erase=self.erase, elastic=self.elastic)
        if hasattr(self.model, "reseed"):                 # dropout masks from (seed, epoch, batch)
            self.model.reseed((self.seed, self.epoch, self.batch))
        loss, logits = self.model.forward_backward(xb, yb, self.label_smoothing)
        if not math.isfinite(loss):
            raise TrainingStopped(
                f"training diverged: the loss became {loss} at epoch {self.epoch + 1}, batch "
                f"{self.batch + 1} (learning rate {self.opt.lr:g}); try a lower --lr, e.g. "
                f"{self.opt.lr / 10:g}. The last good checkpoint is kept.", 3)
        self.opt.step(self.model.grads)
        if self.first_batch_done is None:
            self.first_batch_done = time.time()
        self.batch += 1
        self.sums["loss"] += loss * len(yb)
        self.sums["correct"] += int((logits.argmax(axis=1) == yb).sum())
        self.sums["seen"] += len(yb)
        seconds = time.perf_counter() - t0
        self.sums["seconds"] += seconds
        if self.governor is not None:
            self.governor.record(len(yb), seconds)

    def _run_epoch(self, stop: _StopRequest) -> bool:
        """Train the rest of epoch ``self.epoch``; False when a stop was requested mid-epoch."""
        x, y = self.data.x_train, self.data.y_train
        total = num_batches(len(x), self.batch_size)
        order = epoch_order(len(x), self.seed, self.epoch)
        with _progress_bar(self.progress, total, self.batch, f"epoch {self.epoch + 1}/{self.epochs}") as bar:
            for xb, yb in batches(x, y, self.batch_size, order=order, start=self.batch):
                self._train_batch(xb, yb)
                bar.update(self.sums["loss"] / self.sums["seen"])
                if stop.signum is not None and self.batch < total:
                    return False
        return True

    def _monitored(self, rec: EpochRecord) -> float:
        return {"val_loss": rec.val_loss, "val_accuracy": rec.val_accuracy, "train_loss": rec.train_loss,
                "train_accuracy": rec.train_accuracy}[self.tracker.monitor]

    def _finish_epoch(self) -> bool:
        """Evaluate, record, schedule, checkpoint; True when early stopping says stop."""
        d = self.data
        val_loss = val_acc = None
        if self._has_validation():
            val_loss, val_acc, _ = evaluate(self.model, d.x_val, d.y_val)
        rec = EpochRecord(self.epoch + 1, self.sums["loss"] / self.sums["seen"],
                          self.sums["correct"] / self.sums["seen"], val_loss, val_acc,
                          self.opt.lr, self.sums["seconds"])
        self.history.epochs.append(rec)
        improved = self.tracker.observe(rec.epoch, self._monitored(rec))
        if improved:
            self.history.best_epoch = rec.epoch
            self._snapshot_best()
        self.schedule.observe(val_loss if val_loss is not None else rec.train_loss)
        self.epoch, self.batch, self.sums = self.epoch + 1, 0, _new_sums()
        if improved:
            self.save("best.npz")
        self.save("last.npz")
        self.log(self._epoch_line(rec))
        if self.run_dir is not None:
            self.run_dir.write_history(self.history.as_dicts())
        for callback in self.callbacks:
            callback.on_epoch_end(rec, self)
        return self.early is not None and self.early.should_stop()

    def _callback_stop(self) -> bool:
        if self.stop_training:
            self.log(f"stopped by a callback after epoch {self.epoch}")
            self.stopped_early = True
        return self.stop_training

    def _epoch_line(self, r: EpochRecord) -> str:
        val = (f"  val loss {r.val_loss:.4f} acc {100 * r.val_accuracy:.2f}%" if r.val_loss is not None else "")
        return (f"epoch {r.epoch:>3}/{self.epochs}  {r.seconds:6.1f}s  train loss {r.train_loss:.4f} "
                f"acc {100 * r.train_accuracy:.2f}%{val}  lr {r.lr:.3g}")

    def run(self) -> History:
        """Train until ``epochs`` are done or early stopping fires (then, with its
        ``restore_best``, the model holds the best epoch's weights).

        Raises :class:`TrainingStopped` when interrupted (after saving last.npz)
        or when the loss stops being finite (keeping the last good checkpoint).
        """
        # overflow/NaN are detected (a non-finite loss stops the run with a message);
        # NumPy's warnings about them would only add noise to the output
        with _StopRequest(self.log) as stop, np.errstate(over="ignore", invalid="ignore"), \
                _closing(self.callbacks), _finishing(self.governor):
            while self.epoch < self.epochs:
                self.opt.lr = self.schedule.lr(self.epoch)
                finished = self._run_epoch(stop)
                if finished and self._finish_epoch():
                    self.log(f"early stopping: {self.early.monitor} has not improved for "
                             f"{self.early.patience} epochs (best epoch {self.history.best_epoch})")
                    self.stopped_early = True
                    break
                if finished and self._callback_stop():
                    break
                if stop.signum is not None:
                    self._interrupted(stop.signum)
        if self.early and self.early.restore_best:
            self.restore_best()
        return self.history

    def _interrupted(self, signum: int) -> None:
        self.save("last.npz")
        where = f" {self.run_dir.path}" if self.run_dir else ""
        raise TrainingStopped(
            f"interrupted by {signal.Signals(signum).name} at epoch {self.epoch + 1}, "
            f"batch {self.batch}; state saved to last.npz. Resume with: "
            f"python -m fastlenet.train --resume{where}", 128 + signum)


@contextlib.contextmanager
def _finishing(governor):
    """The thread governor's full count restored however training ends."""
    try:
        yield
    finally:
        if governor is not None:
            governor.finish()


def _closing(callbacks) -> contextlib.ExitStack:
    """Close every callback that can be closed when training ends, however it ends."""
    stack = contextlib.ExitStack()
    for callback in callbacks:
        if hasattr(callback, "close"):
            stack.callback(callback.close)
    return stack


def _new_sums() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}


class _progress_bar:
    """A tqdm bar over an epoch's batches (``enabled``), else nothing; ``tqdm.auto``: a
    text bar in a terminal, a widget in Jupyter."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, unit="batch", file=sys.stderr)

    def __enter__(self):
        return self

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def as_dataset(data, y=None, validation_data=None, class_names=None) -> Dataset:
    """``fit``'s data: a :class:`Dataset` as is, or arrays -- images (N, C, H, W) (float,
    or uint8 scaled to [0, 1]) and int labels (N,) -- with ``validation_data=(x, y)``."""
    if isinstance(data, Dataset):
        if y is not None or validation_data is not None:
            raise ValueError("give labels and validation_data only with arrays, not with a Dataset")
        return data
    if y is None:
        raise ValueError("fit(model, x, y): labels y are needed with an image array")

    def arrays(x, labels, what):
        x, labels = np.asarray(x), np.asarray(labels)
        if x.ndim != 4 or len(x) != len(labels) or labels.ndim != 1:
            raise ValueError(f"{what}: images must be (N, C, H, W) and labels (N,), got {x.shape} and {labels.shape}")
        if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
            raise ValueError(f"{what}: labels must be non-negative integers, got {labels.dtype}")
        x = to_float(x) if x.dtype == np.uint8 else np.ascontiguousarray(x)     # the datasets' one conversion
        return x, labels.astype(np.int64)

    x, y = arrays(data, y, "x, y")
    xv, yv = arrays(*validation_data, "validation_data") if validation_data is not None else (None, None)
    k = int(max(y.max(), yv.max() if yv is not None and len(yv) else 0)) + 1
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
    return Dataset("arrays", x, y, x[:0], y[:0], names, x_val=xv, y_val=yv, image_size=tuple(x.shape[2:]))


def _governor(model):
    import numba

    from .governor import ThreadGovernor
    return ThreadGovernor.for_training(model.backend.name, numba.get_num_threads())


def fit(model, data, y=None, epochs: int = 10, batch_size: int = 256, optimizer=None,
        schedule: Optional[optim.Schedule] = None, early_stopping: Optional[optim.EarlyStopping] = None,
        augment: bool = False, seed: int = 0, run_dir=None, verbose: bool = False,
        monitor: Optional[str] = None, callbacks=(), validation_data=None, progress: Optional[bool] = None,
        class_names=None, adapt_threads: bool = True) -> History:
    """Train ``model`` and return its :class:`History` (``history["val_accuracy"]``,
    ``history.plot()``).

    ``data``: a :class:`fastlenet.data.Dataset`, or images (N, C, H, W) with labels ``y``
    (N,) and optionally ``validation_data=(x_val, y_val)``.  ``optimizer`` defaults to
    Adam(lr=1e-3) over ``model.params`` (on the model's backend).  With ``run_dir`` set,
    checkpoints (last.npz, best.npz) and history.csv are written there.  ``progress``:
    a bar per epoch (``tqdm.auto``: terminal or Jupyter; default: when ``verbose``).
    ``callbacks``: objects with ``on_epoch_end(record, trainer)`` (see
    fastlenet.callbacks); one that sets ``trainer.stop_training = True`` ends training
    after that epoch.  ``adapt_threads``: while other programs hold the CPUs, the
    kernels use fewer threads when that measures faster (fastlenet.governor; the
    results are the same bits); False keeps the thread count as set.
    """
    ds = as_dataset(data, y, validation_data, class_names)
    opt = optimizer or optim.Adam(model.params, lr=1e-3, backend=model.backend)
    trainer = Trainer(model, ds, opt, schedule, epochs, batch_size, seed, early_stopping, augment,
                      run_dir=RunDirectory(run_dir) if run_dir else None, log=print if verbose else None,
                      progress=verbose if progress is None else progress, monitor=monitor, callbacks=callbacks,
                      governor=_governor(model) if adapt_threads else None)
    if trainer.run_dir is not None:
        trainer.run_dir.path.mkdir(parents=True, exist_ok=True)
    return trainer.run()
