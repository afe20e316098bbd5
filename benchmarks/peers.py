"""The frameworks a user would pick instead of fastlenet, each training the same
LeNet-5 (ReLU, max pool) epoch: same initial weights where the framework takes them,
same batches, Adam (lr 1e-3), softmax cross-entropy, the same thread count.

Dimension legend: N batch, C channels, H/W height/width (28x28 images), K classes.

Every peer is optional (never a dependency): :func:`available` lists the installed
ones.  Each is made as fast as its documentation suggests for a small CNN on a CPU:

* ``torch``         -- PyTorch eager, NCHW (its default layout);
* ``torch-cl``      -- PyTorch eager with ``channels_last`` model and inputs (the
                       layout its CPU convolutions (oneDNN) prefer);
* ``torch-compile`` -- ``torch.compile`` (Inductor) of the model; compiling happens
                       in the warm-up;
* ``keras``         -- Keras 3 on TensorFlow, NHWC, ``jit_compile=True`` (XLA),
                       ``model.fit`` over the epoch's batches;
* ``jax``           -- JAX, the whole train step (forward, backward, Adam) one
                       ``jax.jit`` function, parameters donated between steps.

The PyTorch peers (``ANY_MODEL``) also train any other fastlenet model, as its twin
(``benchmarks/networks.py``: same layers, same initial weights; ``compare.py --model``).

``make_epoch(name, threads)`` returns ``epoch(x, y, batch)``: it trains on ``x``
(N, 1, 28, 28) float32 (the model's input shape for another model) and ``y`` (N,) int64 in order, in batches of ``batch``, and
returns only when the work is done (JAX dispatches asynchronously: it blocks).
"""
from __future__ import annotations

import importlib.util
import os

PEERS = ("torch", "torch-cl", "torch-compile", "keras", "jax")
FRAMEWORK = {"torch": "torch", "torch-cl": "torch", "torch-compile": "torch", "keras": "tensorflow",
           "jax": "jax"}
#: the peers that train any fastlenet model (benchmarks/networks.torch_twin); the others LeNet-5
ANY_MODEL = ("torch", "torch-cl", "torch-compile")
LR = 1e-3
KERAS_JIT = os.environ.get("FASTLENET_BENCH_KERAS_JIT", "0") == "1"


def available() -> list:
    """The peers whose framework is installed here."""
    return [p for p in PEERS if importlib.util.find_spec(FRAMEWORK[p]) is not None]


def initial_weights(seed: int = 0) -> dict:
    """fastlenet's LeNet-5 initial weights (conv w (F, C, KH, KW), dense w (in, out))."""
    from fastlenet import models
    params = models.build("lenet5", backend="numpy", seed=seed).params
    return {k: v.copy() for k, v in params.items()}


def make_epoch(name: str, threads: int, seed: int = 0, model: str = "lenet5"):
    """``epoch(x, y, batch)`` of peer ``name`` training ``model`` (LeNet-5 unless a PyTorch peer)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {PEERS}")
    if model != "lenet5" and name not in ANY_MODEL:
        raise ValueError(f"peer {name!r} trains LeNet-5 only, not {model!r}")
    if name.startswith("torch"):
        return _torch_epoch(name, threads, seed, model)
    return {"keras": _keras_epoch, "jax": _jax_epoch}[name](threads, seed)


# --------------------------------------------------------------------------- PyTorch
def _torch_epoch(name, threads, seed, model="lenet5"):
    import torch

    from benchmarks import networks
    torch.set_num_threads(threads)
    net = networks.torch_twin(torch, networks.build(model, "numpy", seed))
    fmt = torch.channels_last if name == "torch-cl" else torch.contiguous_format
    net = net.to(memory_format=fmt)
    model = torch.compile(net) if name == "torch-compile" else net
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(x, y, batch):
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch]).contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), torch.from_numpy(y[i:i + batch]))
            loss.backward()
            opt.step()
    return epoch


# --------------------------------------------------------------------------- Keras 3
def _keras_epoch(threads, seed):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras import layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2),
        layers.Permute((3, 1, 2)), layers.Flatten(),          # flatten in (C, H, W) order, like ours
        layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"), layers.Dense(10),
    ])
    w = initial_weights(seed)
    convs_and_dense = [l for l in model.layers if l.weights]
    for layer, key in zip(convs_and_dense, ["conv2d1", "conv2d2", "dense1", "dense2", "dense3"]):
        kernel = w[f"{key}.w"]
        kernel = kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel   # (KH, KW, C, F)
        layer.set_weights([kernel, w[f"{key}.b"]])
    model.compile(optimizer=keras.optimizers.Adam(LR), jit_compile=KERAS_JIT,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def epoch(x, y, batch):
        model.fit(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y, batch_size=batch, epochs=1,
                  shuffle=False, verbose=0)
    return epoch


# --------------------------------------------------------------------------- JAX
def _jax_epoch(threads, seed):
    from fastlenet.kernels import usable_cpus
    if threads < usable_cpus() and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])   # XLA sizes its pool from it
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in initial_weights(seed).items()}
    moments = jax.tree_util.tree_map(lambda p: (jnp.zeros_like(p), jnp.zeros_like(p)), params)

    def conv(x, w, b, pad):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jax.nn.relu(y + b[None, :, None, None])

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def loss_fn(p, x, y):
        h = pool(conv(x, p["conv2d1.w"], p["conv2d1.b"], 2))
        h = pool(conv(h, p["conv2d2.w"], p["conv2d2.b"], 0)).reshape(x.shape[0], -1)
        h = jax.nn.relu(h @ p["dense1.w"] + p["dense1.b"])
        h = jax.nn.relu(h @ p["dense2.w"] + p["dense2.b"])
        logits = h @ p["dense3.w"] + p["dense3.b"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def train_step(p, m, t, x, y):
        grads = jax.grad(loss_fn)(p, x, y)
        b1, b2, eps = 0.9, 0.999, 1e-8
        m = jax.tree_util.tree_map(lambda mv, g: (b1 * mv[0] + (1 - b1) * g, b2 * mv[1] + (1 - b2) * g * g),
                                   m, grads, is_leaf=lambda v: isinstance(v, tuple))
        step_size = LR * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p = jax.tree_util.tree_map(lambda pv, mv: pv - step_size * mv[0] / (jnp.sqrt(mv[1]) + eps),
                                   p, m, is_leaf=lambda v: isinstance(v, tuple))
        return p, m

    step = jax.jit(train_step, donate_argnums=(0, 1))
    state = {"p": params, "m": moments, "t": 0}

    def epoch(x, y, batch):
        p, m, t = state["p"], state["m"], state["t"]
        for i in range(0, len(x), batch):
            t += 1
            p, m = step(p, m, float(t), jnp.asarray(x[i:i + batch]), jnp.asarray(y[i:i + batch].astype("int32")))
        jax.block_until_ready(p)
        state.update(p=p, m=m, t=t)
    return epoch
