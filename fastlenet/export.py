"""``fastlenet export CKPT OUT.onnx``: a trained model as ONNX (needs the ``onnx`` extra).

    python -m fastlenet.export runs/RUN/best.npz model.onnx
    fastlenet.export.to_onnx(model, "model.onnx", mean=..., std=...)

Dimension legend: N batch (dynamic: the graph's first axis is named "batch"),
C channels, H/W height/width, K classes.

The graph is built with the ``onnx`` helper API at IR version 8 / opset 17,
which onnxruntime loads.  Layers map one to one (Conv with its four pads,
Relu, LeakyRelu, Sigmoid, Tanh, MaxPool, AveragePool, GlobalAveragePool +
Flatten, Flatten, Gemm); batch normalisation is exported in its
inference form, folded into a per-channel Mul + Add from the running
statistics; dropout is removed.  The preprocessing the model was trained with
is folded into the graph: standardisation as Sub + Div with the stored
train-set mean/std, and the 28 -> 32 zero padding of ``--pad32`` as a Pad, so
the exported model takes images in [0, 1] exactly as the dataset stores them.
Input ``images`` (N, C, H, W) float32; output ``logits`` (N, K).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import checkpoint
from .fileio import atomic_write_bytes, check_target
from .layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, LeakyReLU,
                     MaxPool2D, ReLU, Sigmoid, Tanh)

OPSET = 17
IR_VERSION = 8


class ExportError(ValueError):
    """The model holds something ONNX export does not support."""


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'fastlenet[onnx]'") from None
    return onnx, TensorProto, helper, numpy_helper


class _Graph:
    """The nodes and initialisers of an ONNX graph being built, with unique names."""

    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self._count = [], [], 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, value, dtype=np.float32) -> str:
        n = self.name(prefix)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype), n))
        return n

    def node(self, op: str, inputs, output: str = None, **attrs) -> str:
        output = output or self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], **attrs))
        return output


def _preprocess(g: _Graph, x: str, input_shape, mean, std, pad_from) -> str:
    """Standardisation and zero-padding to the model's input, as graph nodes."""
    _, h, w = input_shape
    if mean is not None and std is not None:
        centered = g.node("Sub", [x, g.const("mean", np.reshape(mean, (-1, 1, 1)))])     # per channel
        x = g.node("Div", [centered, g.const("std", np.reshape(std, (-1, 1, 1)))])
    if pad_from:
        top, left = (h - pad_from) // 2, (w - pad_from) // 2
        pads = [0, 0, top, left, 0, 0, h - pad_from - top, w - pad_from - left]
        x = g.node("Pad", [x, g.const("pads", pads, np.int64)], mode="constant")
    return x


def _batchnorm(g: _Graph, x: str, layer, lname: str, ndim: int) -> str:
    # inference form: y = x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))
    scale = layer.params["gamma"] / np.sqrt(layer.buffers["running_var"] + layer.eps)
    shift = layer.params["beta"] - layer.buffers["running_mean"] * scale
    shape = (-1, 1, 1) if ndim == 3 else (-1,)
    mid = g.node("Mul", [x, g.const(f"{lname}.scale", scale.reshape(shape))])
    return g.node("Add", [mid, g.const(f"{lname}.shift", shift.reshape(shape))])


def _layer(g: _Graph, x: str, layer, lname: str, in_shape) -> str:
    """The node(s) of one layer on input ``x``; returns the output's name."""
    if isinstance(layer, Conv2D):
        top, bottom, left, right = layer.pads
        return g.node("Conv", [x, g.const(f"{lname}.w", layer.params["w"]), g.const(f"{lname}.b", layer.params["b"])],
                      kernel_shape=[layer.kh, layer.kw], strides=[layer.stride] * 2, pads=[top, left, bottom, right])
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        op = "MaxPool" if isinstance(layer, MaxPool2D) else "AveragePool"
        return g.node(op, [x], kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2)
    if isinstance(layer, (ReLU, Sigmoid, Tanh)):
        return g.node({ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}[type(layer)], [x])
    if isinstance(layer, LeakyReLU):
        return g.node("LeakyRelu", [x], alpha=layer.alpha)
    if isinstance(layer, GlobalAvgPool2D):                 # (N, C, 1, 1) -> (N, C)
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    if isinstance(layer, Flatten):
        return g.node("Flatten", [x], axis=1)
    if isinstance(layer, Dense):
        return g.node("Gemm", [x, g.const(f"{lname}.w", layer.params["w"]), g.const(f"{lname}.b", layer.params["b"])])
    if isinstance(layer, BatchNorm):
        return _batchnorm(g, x, layer, lname, len(in_shape))
    if isinstance(layer, Dropout):
        return x                                        # identity at inference
    raise ExportError(f"cannot export layer {lname} ({type(layer).__name__}) to ONNX")


def to_onnx(model, path, mean=None, std=None,
            pad_from: Optional[int] = None, doc: str = "", sources=()):
    """Write ``model`` as an ONNX graph to ``path`` and return the ModelProto
    (``sources``: input files that ``path`` must not replace).

    ``mean``/``std``: the standardisation applied to the training images (a number or
    one per channel), folded into the graph.  ``pad_from``: the stored image size when the model's input
    was zero-padded to its size (e.g. 28 for a 32x32 ``lenet5-1998``).
    """
    onnx, TensorProto, helper, numpy_helper = _onnx()
    g = _Graph(helper, numpy_helper)
    c, h, w = model.input_shape
    in_h, in_w = (pad_from, pad_from) if pad_from else (h, w)
    x = _preprocess(g, "images", model.input_shape, mean, std, pad_from)
    for lname, layer in zip(model.layer_names, model.layers):
        x = _layer(g, x, layer, lname, _shape_before(model, lname))
    g.node("Identity", [x], "logits")
    graph = helper.make_graph(
        g.nodes, f"fastlenet-{model.name}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", c, in_h, in_w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", model.output_shape[0]])],
        g.inits)
    proto = helper.make_model(graph, producer_name="fastlenet", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=doc or f"fastlenet {model.name}: images in [0, 1] -> logits")
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    atomic_write_bytes(Path(path), proto.SerializeToString(), sources)
    return proto


def _shape_before(model, lname):
    """The input shape (no batch axis) of layer ``lname``."""
    i = model.layer_names.index(lname)
    return model.input_shape if i == 0 else model.shapes[i - 1]


def export_checkpoint(ckpt_path, out_path):
    """Export a checkpoint written by ``fastlenet.train`` with its preprocessing folded in."""
    check_target(Path(out_path), [ckpt_path])          # before reading anything
    model, ckpt = checkpoint.load_model(ckpt_path, backend="numpy")
    info = ckpt.inference
    h, w = info.image_size
    if h != w:
        raise ExportError(f"{ckpt_path}: trained on {h}x{w} images; export pads square images only")
    pad_from = h if (h, w) != tuple(model.input_shape[1:]) else None
    return model, to_onnx(model, out_path, info.mean, info.std, pad_from,
                          doc=f"fastlenet {model.name} from {Path(ckpt_path).name}; "
                              f"classes: {', '.join(info.class_names)}",
                          sources=[ckpt_path])


def main(argv: Optional[List[str]] = None, prog: str = "python -m fastlenet.export") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("checkpoint", help="a best.npz / last.npz written by fastlenet.train")
    p.add_argument("output", help="the .onnx file to write")
    args = p.parse_args(argv)
    try:
        model, proto = export_checkpoint(args.checkpoint, args.output)
    except (checkpoint.CheckpointError, ExportError, OSError) as exc:
        print(f"fastlenet.export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {model.name}, opset {OPSET}, IR {IR_VERSION}, "
          f"input {proto.graph.input[0].name} (batch, {', '.join(str(d.dim_value) for d in proto.graph.input[0].type.tensor_type.shape.dim[1:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
