"""Callbacks: code that runs after every epoch of :class:`fastlenet.trainer.Trainer`
(``fit(..., callbacks=[...])``, ``fastlenet train --tensorboard``).

A callback is any object with ``on_epoch_end(record, trainer)`` (``record``: the
epoch's :class:`~fastlenet.trainer.EpochRecord`) and, optionally, ``close()``,
called once when training ends however it ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

TENSORBOARD_HINT = "pip install 'fastlenet[tensorboard]'"


class TensorBoard:
    """Scalars per epoch for TensorBoard: ``loss/train``, ``loss/val``, ``accuracy/train``,
    ``accuracy/val``, ``lr`` and ``seconds``, in ``logdir`` (tensorboardX's event files;
    the optional ``tensorboard`` extra).  Watch them with ``tensorboard --logdir RUN``."""

    def __init__(self, logdir) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(f"--tensorboard needs tensorboardX: {TENSORBOARD_HINT}") from None
        self.logdir = Path(logdir)
        self._writer: Optional[object] = SummaryWriter(logdir=str(self.logdir))

    def on_epoch_end(self, record, trainer=None) -> None:
        scalars = {"loss/train": record.train_loss, "accuracy/train": record.train_accuracy,
                   "loss/val": record.val_loss, "accuracy/val": record.val_accuracy,
                   "lr": record.lr, "seconds": record.seconds}
        for tag, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), record.epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_scalars(logdir) -> dict:
    """``{tag: [(step, value), ...]}`` from the event files in ``logdir`` (for tests and
    scripts; uses tensorboardX's own protobuf reader, no TensorFlow)."""
    import struct
    from tensorboardX.proto import event_pb2
    out: dict = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        blob = path.read_bytes()
        pos = 0
        while pos + 12 <= len(blob):                  # TFRecord: len, crc, data, crc
            (length,) = struct.unpack("<Q", blob[pos:pos + 8])
            event = event_pb2.Event.FromString(blob[pos + 12: pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
