"""Optimisers: SGD (momentum, Nesterov, weight decay) and Adam.

An optimiser updates, in place, the trainable parameters of a model (a Layer or a
Sequential) from the gradients its last ``backward`` left in ``grads``:

    loss.forward(model.forward(x), y); model.backward(loss.backward()); optimizer.step()

Layers that are not trainable are skipped. The state (momentum buffers, Adam's moments and
step counts) is a flat dict of arrays, ``state_dict()``, to save beside the model's.

``lr_scale`` gives some parameters a learning rate of their own, a multiple of ``lr`` (which
may change between steps, e.g. along a schedule): ``{"conv12.offset_weight": 0.1}`` trains
that parameter at a tenth of the rate of the others.
"""
import math
import numbers

import numpy as np

from .nn._args import positive_float, unit_interval


class Optimizer:
    """Base class: the loop over trainable parameters, and the state as a dict of arrays.

    ``self.buffers`` maps a buffer kind ("velocity", "m", "v", "step") to a dict
    parameter name -> array (an int for "step"); ``state_dict`` flattens it to
    "kind/parameter name" -> ndarray.
    """
    BUFFERS = ()

    def __init__(self, model, lr, weight_decay, lr_scale=None):
        self.model = model
        self.lr = _finite(positive_float(lr, "lr"), "lr")
        self.weight_decay = _finite(positive_float(weight_decay, "weight_decay", allow_zero=True),
                                    "weight_decay")
        self.lr_scale = _lr_scale(lr_scale, model)
        self.buffers = {kind: {} for kind in self.BUFFERS}

    def step(self):
        """Update every trainable parameter from its gradient, in place."""
        for name, param, grad in self.model.trainable_parameters():
            if self.weight_decay:
                grad = grad + self.weight_decay * param      # L2 penalty wd/2 * |param|^2
            self._update(name, param, grad, self.lr * self.lr_scale.get(name, 1.0))

    def _update(self, name, param, grad, lr):
        raise NotImplementedError

    def _buffer(self, kind, name, like):
        """The ``kind`` buffer of parameter ``name``, created as zeros like ``like``."""
        store = self.buffers[kind]
        if name not in store:
            store[name] = np.zeros_like(like)
        return store[name]

    def state_dict(self):
        """Copies of the buffers, "kind/parameter name" -> ndarray."""
        return {f"{kind}/{name}": np.array(a) for kind, store in self.buffers.items()
                for name, a in store.items()}

    def load_state_dict(self, arrays):
        """Replace the buffers by ``arrays`` (as written by ``state_dict``)."""
        params = self.model.params
        buffers = {kind: {} for kind in self.BUFFERS}
        for key, value in arrays.items():
            kind, _, name = key.partition("/")
            if kind not in buffers or name not in params:
                raise ValueError(f"state_dict: expected keys 'kind/parameter' with kind in "
                                 f"{list(self.BUFFERS)} and a parameter of the model, got {key!r}")
            value = np.asarray(value)
            expected = () if kind == "step" else params[name].shape
            if value.shape != expected:
                raise ValueError(f"state_dict: expected shape {expected} for {key!r}, "
                                 f"got {value.shape}")
            buffers[kind][name] = int(value) if kind == "step" else value.astype(params[name].dtype)
        self.buffers = buffers


def _finite(value, name):
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _lr_scale(lr_scale, model):
    """``lr_scale`` checked: a dict "layer.param" -> a finite positive factor."""
    if lr_scale is None:
        return {}
    if not isinstance(lr_scale, dict):
        raise ValueError(f"lr_scale: expected a dict 'layer.param' -> factor, got "
                         f"{type(lr_scale).__name__}")
    params = model.params
    for name, factor in lr_scale.items():
        if name not in params:
            raise ValueError(f"lr_scale: expected parameter names of the model, got {name!r}")
        ok = isinstance(factor, numbers.Real) and not isinstance(factor, bool)
        if not (ok and 0 < factor < math.inf):
            raise ValueError(f"lr_scale: expected a finite positive factor for {name!r}, "
                             f"got {factor!r}")
    return {name: float(factor) for name, factor in lr_scale.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    Parameters
    ----------
    model : Layer or Sequential
    lr : float
        The learning rate (may be changed between steps).
    momentum : float
        In [0, 1).
    nesterov : bool
        Nesterov momentum (needs momentum > 0).
    weight_decay : float
        Adds ``weight_decay * param`` to every gradient.
    lr_scale : dict or None
        "layer.param" -> float: learning-rate multipliers.

    Notes
    -----
    With g = grad + weight_decay * p, and v starting at 0 (PyTorch's formulation)::

        v = momentum * v + g
        p -= lr * (g + momentum * v)     if nesterov
        p -= lr * v                      otherwise

    Keras' ``v = momentum * v - lr * g; p += v`` is the same with its v = -lr * this v.
    """
    BUFFERS = ("velocity",)

    def __init__(self, model, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 lr_scale=None):
        super().__init__(model, lr, weight_decay, lr_scale)
        self.momentum = unit_interval(momentum, "momentum")
        if nesterov and not self.momentum:
            raise ValueError(f"nesterov: expected momentum > 0 with Nesterov, got momentum {momentum!r}")
        self.nesterov = bool(nesterov)

    def _update(self, name, param, grad, lr):
        if self.momentum:
            v = self._buffer("velocity", name, param)
            v *= self.momentum
            v += grad
            grad = grad + self.momentum * v if self.nesterov else v
        param -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), with weight decay as an L2 term in the gradient (not AdamW).

    Parameters
    ----------
    model : Layer or Sequential
    lr : float
    betas : (float, float)
        (beta1, beta2), the decay rates of the first and second moment estimates.
    eps : float
        Added to ``sqrt(v_hat)``.
    weight_decay : float
        Adds ``weight_decay * param`` to every gradient.
    lr_scale : dict or None
        "layer.param" -> float: learning-rate multipliers.

    Notes
    -----
    At step t of a parameter (counted per parameter, from 1), with g its gradient::

        m = beta1 * m + (1 - beta1) * g,       v = beta2 * v + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    so the first step moves every entry by about lr, against the sign of its gradient.
    """
    BUFFERS = ("m", "v", "step")

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 lr_scale=None):
        super().__init__(model, lr, weight_decay, lr_scale)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (unit_interval(betas[0], "betas[0]"), unit_interval(betas[1], "betas[1]"))
        self.eps = _finite(positive_float(eps, "eps"), "eps")

    def _update(self, name, param, grad, lr):
        beta1, beta2 = self.betas
        m = self._buffer("m", name, param)
        v = self._buffer("v", name, param)
        step = self.buffers["step"][name] = self.buffers["step"].get(name, 0) + 1
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
        param -= lr * m_hat / (np.sqrt(v_hat) + self.eps)
