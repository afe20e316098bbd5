"""Whole networks beyond LeNet-5 for the benchmarks: any fastlenet model (a preset or a
model file) with its PyTorch twin (same layers, same initial weights) and its FLOPs.

Dimension legend: N batch, C channels, H/W height/width, F filters, KH/KW kernel,
OH/OW conv output, D/U dense input/output features.

    model = networks.build("cifar-cnn", "cython")          # or a model file's path
    twin = networks.torch_twin(torch, model)               # nn.Sequential, same weights
    networks.step_flops(model, 128)                        # forward + backward FLOPs

``NETWORKS`` are the whole-network training-step benchmarks of issue 16: the
CIFAR-shaped preset and a small VGG-style network (two 3x3 convolutions per stage,
three stages, ``benchmarks/models/vgg-small.json``), and its first two stages with batch
norm (``vgg-small-bn.json``: conv -> batch norm -> ReLU, the last two fused).
"""
from __future__ import annotations

import os

from fastlenet import layers as L
from fastlenet import models

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORKS = {"cifar-cnn": "cifar-cnn", "vgg-small": os.path.join(HERE, "models", "vgg-small.json"),
            "vgg-small-bn": os.path.join(HERE, "models", "vgg-small-bn.json")}


def build(name: str, backend: str, seed: int = 0):
    """A preset, one of NETWORKS, or a model file, on ``backend``."""
    return models.from_spec(models.read_spec(NETWORKS.get(name, name)), backend=backend, seed=seed)


def _conv_twin(nn, layer: L.Conv2D, c_in: int) -> list:
    top, bottom, left, right = layer.pads
    conv = nn.Conv2d(c_in, layer.filters, (layer.kh, layer.kw), layer.stride,
                     padding=top if len({top, bottom, left, right}) == 1 else 0)
    pad = [] if len({top, bottom, left, right}) == 1 else [nn.ZeroPad2d((left, right, top, bottom))]
    return pad + [conv]


def _twin(nn, layer, shape):
    """The PyTorch modules computing ``layer`` on inputs of ``shape`` (C, H, W) or (D,)."""
    if isinstance(layer, L.Conv2D):
        return _conv_twin(nn, layer, shape[0])
    if isinstance(layer, L.Dense):
        return [nn.Linear(shape[0], layer.units)]
    if isinstance(layer, L.BatchNorm):
        norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return [norm(shape[0], eps=layer.eps, momentum=layer.momentum)]
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
        pool = nn.MaxPool2d if isinstance(layer, L.MaxPool2D) else nn.AvgPool2d
        return [pool(layer.size, layer.stride)]
    if isinstance(layer, L.GlobalAvgPool2D):
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if isinstance(layer, L.LeakyReLU):
        return [nn.LeakyReLU(layer.alpha)]
    if isinstance(layer, L.Dropout):
        return [nn.Dropout(layer.rate)]
    simple = {L.ReLU: nn.ReLU, L.Sigmoid: nn.Sigmoid, L.Tanh: nn.Tanh, L.Flatten: nn.Flatten}
    return [simple[type(layer)]()]


def torch_twin(torch, model):
    """``model``'s layers as a torch ``nn.Sequential`` with ``model``'s current weights."""
    nn = torch.nn
    modules, shape = [], model.input_shape
    with torch.no_grad():
        for layer, out_shape in zip(model.layers, model.shapes):
            mods = _twin(nn, layer, shape)
            weighted = mods[-1]
            if "w" in layer.params:
                w = layer.params["w"]
                weighted.weight.copy_(torch.from_numpy(w if w.ndim == 4 else w.T.copy()))
                weighted.bias.copy_(torch.from_numpy(layer.params["b"]))
            elif "gamma" in layer.params:
                weighted.weight.copy_(torch.from_numpy(layer.params["gamma"]))
                weighted.bias.copy_(torch.from_numpy(layer.params["beta"]))
            modules += mods
            shape = out_shape
    return nn.Sequential(*modules)


def step_flops(model, batch: int) -> float:
    """Forward + backward FLOPs of one training step: 2 * N * MACs per conv and dense layer
    forward, twice that backward (dW and dx), without the first layer's unused dx."""
    total, shape = 0.0, model.input_shape
    for i, (layer, out_shape) in enumerate(zip(model.layers, model.shapes)):
        if isinstance(layer, L.Conv2D):
            macs = out_shape[0] * out_shape[1] * out_shape[2] * shape[0] * layer.kh * layer.kw
        elif isinstance(layer, L.Dense):
            macs = shape[0] * layer.units
        else:
            macs = 0
        total += 2.0 * batch * macs * (2 if i == 0 else 3)
        shape = out_shape
    return total
