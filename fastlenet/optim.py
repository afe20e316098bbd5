"""Optimizers, learning-rate schedules and early stopping.

Optimizers update ``params`` (name -> array) in place from ``grads`` (same
keys).  Every buffer (momentum, Adam moments, a scratch array) is allocated
once, in the constructor: a step allocates nothing parameter-sized.  Weight
decay applies to weights (names ending in ``.w``), not to biases or
batch-norm parameters.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from .flat import FlatArrays, flat_views

Arrays = Dict[str, np.ndarray]


def _decays(name: str) -> bool:
    return name.endswith(".w")


class Optimizer:
    """Base: ``step(grads)`` updates the params; ``lr`` may be changed between steps."""

    def __init__(self, params: Arrays, lr: float) -> None:
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"learning rate must be a positive number, got {lr}")
        self.params = params
        self.lr = float(lr)
        self.steps = 0

    def _slots(self) -> Dict[str, Arrays]:
        """Named per-parameter state (for checkpoints)."""
        return {}

    def state_dict(self) -> Arrays:
        """Flat name -> array state (scalars as 0-d arrays): lr, steps and every slot."""
        state = {"lr": np.array(self.lr), "steps": np.array(self.steps)}
        for slot, arrays in self._slots().items():
            for k, a in arrays.items():
                state[f"{slot}/{k}"] = a
        return state

    def load_state_dict(self, state: Arrays) -> None:
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for slot, arrays in self._slots().items():
            for k, a in arrays.items():
                a[...] = state[f"{slot}/{k}"]


class SGD(Optimizer):
    """v = momentum * v + (g + wd * p);  p -= lr * v   (Nesterov: p -= lr * (g + momentum * v))."""

    def __init__(self, params: Arrays, lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)
        self._scratch = {k: np.empty_like(p) for k, p in params.items()}
        self.velocity = {k: np.zeros_like(p) for k, p in params.items()} if momentum else {}

    def _slots(self):
        return {"velocity": self.velocity}

    def step(self, grads: Arrays) -> None:
        self.steps += 1
        lr, mu = self.lr, self.momentum
        for k, p in self.params.items():
            g, tmp = grads[k], self._scratch[k]
            if self.weight_decay and _decays(k):           # g <- g + wd * p (coupled L2)
                np.multiply(p, self.weight_decay, out=tmp)
                tmp += g
                g = tmp
            if not mu:
                np.multiply(g, lr, out=tmp)
                p -= tmp
                continue
            v = self.velocity[k]
            v *= mu
            v += g
            if self.nesterov:                               # p -= lr * (g + mu * v)
                np.multiply(g, lr, out=tmp)
                p -= tmp
                np.multiply(v, lr * mu, out=tmp)
            else:                                           # p -= lr * v
                np.multiply(v, lr, out=tmp)
            p -= tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``decoupled=True`` gives AdamW.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
    Weight decay: L2 added to g (Adam) or p *= 1 - lr * wd (AdamW).

    ``backend`` (a name or ``kernels.backend(...)``; None: the default backend)
    supplies a compiled one-pass update when it has one (``Backend.fast.adam_update``);
    it runs when the parameters are a :class:`fastlenet.flat.FlatArrays`, views of one
    declared buffer, as a model's ``params`` are.  Otherwise the update is NumPy.
    """

    def __init__(self, params: Arrays, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False, backend=None) -> None:
        super().__init__(params, lr)
        self.b1, self.b2 = map(float, betas)
        self.eps, self.weight_decay, self.decoupled = float(eps), float(weight_decay), bool(decoupled)
        # The moments live in one flat buffer each (m[k], v[k] are views into it), so a
        # step is a dozen whole-model array operations (or one compiled pass) instead of
        # a dozen per tensor.  Gradients that do not tile one buffer are gathered into a
        # flat scratch buffer first (no allocation).
        keys = list(params)
        dtypes = {params[k].dtype for k in keys}
        self._flat = len(dtypes) == 1 and len(keys) > 0
        self._param_buffer, self._update = None, None
        if self._flat:
            dtype = dtypes.pop()
            shapes = {k: params[k].shape for k in keys}
            self._flat_m, self.m = flat_views(shapes, dtype)
            self._flat_v, self.v = flat_views(shapes, dtype)
            self._flat_g, self._g_views = flat_views(shapes, dtype)
            self._flat_tmp, self._tmp_views = flat_views(shapes, dtype)
            #: the one buffer the parameters are views of (declared by a FlatArrays), or None
            self._param_buffer = params.buffer if isinstance(params, FlatArrays) else None
            if self._param_buffer is not None:
                self._update = _adam_kernel(backend)
        else:           # per tensor: moments and the step's scratch array for each
            self.m = {k: np.zeros_like(p) for k, p in params.items()}
            self.v = {k: np.zeros_like(p) for k, p in params.items()}
            self._scratch = {k: np.empty_like(p) for k, p in params.items()}
        #: Adam + L2 (not AdamW): the gradient of a weight gets wd * p added
        self._l2 = bool(self.weight_decay and not self.decoupled)
        self._g_l2 = {k: np.empty_like(p) for k, p in params.items()} if self._l2 else {}

    def _slots(self):
        return {"m": self.m, "v": self.v}

    def step(self, grads: Arrays) -> None:
        self.steps += 1
        t = self.steps
        step_size = self.lr / (1 - self.b1 ** t)
        root_bc2 = math.sqrt(1 - self.b2 ** t)
        if self.weight_decay and self.decoupled:           # AdamW: p <- p (1 - lr wd)
            for k, p in self.params.items():
                if _decays(k):
                    p *= 1 - self.lr * self.weight_decay
        if not self._flat:
            for k, p in self.params.items():
                tmp = self._scratch[k]
                self._moments_and_step(self._with_l2(k, p, grads[k]), self.m[k], self.v[k], tmp,
                                       step_size, root_bc2)
                p -= tmp
            return
        g = self._flat_gradient(grads)
        if self._update is not None:
            self._update(self._param_buffer, g, self._flat_m, self._flat_v, step_size, self.b1,
                         self.b2, root_bc2, self.eps)
            return
        self._moments_and_step(g, self._flat_m, self._flat_v, self._flat_tmp, step_size, root_bc2)
        if self._param_buffer is not None:
            self._param_buffer -= self._flat_tmp
        else:
            for k, p in self.params.items():
                p -= self._tmp_views[k]

    def _flat_gradient(self, grads: Arrays) -> np.ndarray:
        """The gradient as one flat (P,) array: the declared buffer of a FlatArrays with the
        parameters' names and dtype (a model's ``grads``) when there is no L2 term, else
        gathered (with it) into scratch."""
        if (not self._l2 and isinstance(grads, FlatArrays) and grads.names == tuple(self.params)
                and grads.buffer.dtype == self._flat_g.dtype):
            return grads.buffer
        for k, p in self.params.items():
            self._g_views[k][...] = self._with_l2(k, p, grads[k])
        return self._flat_g

    def _with_l2(self, k, p, g):
        """Adam + L2 (not AdamW): g + wd p for weight k; otherwise g itself."""
        if self._l2 and _decays(k):
            np.multiply(p, self.weight_decay, out=self._g_l2[k])
            self._g_l2[k] += g
            return self._g_l2[k]
        return g

    def _moments_and_step(self, g, m, v, tmp, step_size, root_bc2):
        """m, v updated in place from g; tmp <- the step to subtract from the parameters
        (on one tensor's buffers or on the flat ones, which hold every tensor)."""
        m *= self.b1
        np.multiply(g, 1 - self.b1, out=tmp)
        m += tmp
        v *= self.b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= root_bc2
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size


def _kernels(backend):
    """A kernel backend from a name, a Backend, or None (the default one)."""
    from . import kernels
    if backend is None:
        return kernels.default_backend()
    return kernels.backend(backend) if isinstance(backend, str) else backend


def _adam_kernel(backend):
    """The backend's compiled one-pass Adam (FastPaths.adam_update), or None (NumPy)."""
    fast = _kernels(backend).fast
    return None if fast is None else fast.adam_update


def AdamW(params: Arrays, lr: float = 1e-3, weight_decay: float = 1e-2, **kwargs) -> Adam:
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""
    return Adam(params, lr=lr, weight_decay=weight_decay, decoupled=True, **kwargs)


# --------------------------------------------------------------------------- schedules
class Schedule:
    """Learning rate per epoch: ``lr(epoch)`` before the epoch (0-based); ``observe(metric)`` after it."""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = float(base_lr)

    def lr(self, epoch: int) -> float:
        return self.base_lr

    def observe(self, metric: float) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class StepLR(Schedule):
    """lr = base * gamma ** (epoch // step_size)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(base_lr)
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ListLR(Schedule):
    """One rate per epoch; the last one is kept after the list ends."""

    def __init__(self, rates: List[float]) -> None:
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(f"lr list must hold positive rates, got {rates}")
        super().__init__(rates[0])
        self.rates = [float(r) for r in rates]

    def lr(self, epoch):
        return self.rates[min(epoch, len(self.rates) - 1)]


class CosineLR(Schedule):
    """Cosine decay from base towards ``min_lr`` over ``epochs``:
    lr(e) = min + (base - min) (1 + cos(pi e / epochs)) / 2, so the last epoch still learns."""

    def __init__(self, base_lr: float, epochs: int, min_lr: float = 0.0) -> None:
        super().__init__(base_lr)
        self.epochs, self.min_lr = max(int(epochs), 1), float(min_lr)

    def lr(self, epoch):
        frac = min(epoch, self.epochs) / self.epochs
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * frac))


#: how ReduceLROnPlateau counts, as each framework documents it
PLATEAU_STYLES = ("torch", "keras", "exact")


class ReduceLROnPlateau(Schedule):
    """Multiply the rate by ``factor`` when the monitored metric (lower is better) has
    stopped improving; never below ``min_lr``.  ``style`` says what "stopped" means:

    * ``"torch"`` (``torch.optim.lr_scheduler.ReduceLROnPlateau``): an improvement is
      ``metric < best * (1 - 1e-4)`` (threshold 1e-4, mode "rel"); the rate drops when
      more than ``patience`` epochs in a row did not improve (the ``patience + 1``-th);
    * ``"keras"`` (``keras.callbacks.ReduceLROnPlateau``): an improvement is
      ``metric < best - 1e-4`` (min_delta 1e-4); the rate drops after ``patience``
      epochs without one (the ``patience``-th);
    * ``"exact"``: any decrease is an improvement, torch's count (fastlenet before
      2026-12-02).

    Both frameworks restart the count after a drop (cooldown 0), as here."""

    def __init__(self, base_lr: float, factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, min_delta: float = 0.0, style: str = "torch") -> None:
        super().__init__(base_lr)
        if not 0 < factor < 1:
            raise ValueError(f"plateau factor must be in (0, 1), got {factor}")
        if style not in PLATEAU_STYLES:
            raise ValueError(f"plateau style must be one of {PLATEAU_STYLES}, got {style!r}")
        self.factor, self.patience, self.style = float(factor), int(patience), style
        self.min_lr, self.min_delta = float(min_lr), float(min_delta)
        self.current, self.best, self.bad_epochs = self.base_lr, math.inf, 0

    def lr(self, epoch):
        return self.current

    def _improves(self, metric: float) -> bool:
        if self.style == "torch":
            return metric < self.best * (1 - 1e-4) if math.isfinite(self.best) else True
        if self.style == "keras":
            return metric < self.best - max(self.min_delta, 1e-4)
        return metric < self.best - self.min_delta

    def observe(self, metric):
        if self._improves(metric):
            self.best, self.bad_epochs = float(metric), 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience + (0 if self.style == "keras" else 1):
            self.current = max(self.current * self.factor, self.min_lr)
            self.bad_epochs = 0

    def state(self):
        return {"current": self.current, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state(self, state):
        self.current, self.best, self.bad_epochs = state["current"], state["best"], state["bad_epochs"]


# --------------------------------------------------------------------------- best epoch, early stopping
#: the metrics a run measures per epoch, and whether higher is better
METRICS = {"val_accuracy": "max", "val_loss": "min", "train_accuracy": "max", "train_loss": "min"}


class BestTracker:
    """The one notion of "best" of a run: the epoch whose ``monitor`` value improved last
    (by more than ``min_delta``).  It picks best.npz, early stopping's restore and the
    weights metrics.json reports (see fastlenet.trainer)."""

    def __init__(self, monitor: str = "val_accuracy", min_delta: float = 0.0, mode: Optional[str] = None) -> None:
        if monitor not in METRICS:
            raise ValueError(f"monitor must be one of {sorted(METRICS)}, got {monitor!r}")
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
        self.monitor, self.min_delta = monitor, float(min_delta)
        self.mode = mode or METRICS[monitor]
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch, self.bad_epochs = -1, 0

    def improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def observe(self, epoch: int, value: float) -> bool:
        """Record epoch ``epoch``'s monitored value (1-based); True when it is the new best."""
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    def state(self) -> dict:
        return {"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


class EarlyStopping(BestTracker):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode`` is "min" (losses) or "max" (accuracies).  With ``restore_best`` the
    trainer puts the best epoch's weights back when it stops (the weights of best.npz).
    """

    def __init__(self, patience: int, monitor: str = "val_accuracy", min_delta: float = 0.0,
                 mode: Optional[str] = None, restore_best: bool = True) -> None:
        if patience < 1:
            raise ValueError(f"early-stopping patience must be >= 1, got {patience}")
        super().__init__(monitor, min_delta, mode)
        self.patience = int(patience)
        self.restore_best = bool(restore_best)

    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def update(self, epoch: int, value: float) -> bool:
        """Record the epoch's metric; True when training should stop."""
        self.observe(epoch, value)
        return self.should_stop()
