"""Elementwise activations (ReLU, GELU) and the softmax over the last axis.

ReLU is the activation of the Keras model; GELU and the softmax are those of the DCNv3
block (InternImage), where the softmax normalises the weights of each group's points.
"""
import math

import numpy as np
from scipy.special import erf

from .layer import Layer

INV_SQRT2 = 1 / math.sqrt(2)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


class ReLU(Layer):
    """out = max(x, 0) elementwise, for x of any shape; dL/dx = g where x > 0, else 0."""

    def __init__(self, name="relu"):
        super().__init__(name)

    def forward(self, x):
        self._check_input(x, None)
        return self._save(np.maximum(x, 0), x > 0)

    def backward(self, grad):
        (positive,) = self._saved(grad)
        return grad * positive


def gelu(x):
    """Exact GELU, x * Phi(x) with Phi the standard normal CDF (``torch.nn.GELU()``)."""
    return 0.5 * x * (1 + erf(x * INV_SQRT2))


def gelu_backward(grad, x):
    """dL/dx of ``gelu``: grad * (Phi(x) + x * phi(x)), phi the standard normal density."""
    cdf = 0.5 * (1 + erf(x * INV_SQRT2))
    density = INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return grad * (cdf + x * density)


class GELU(Layer):
    """The Gaussian error linear unit, exact erf form (PyTorch's default, not the tanh
    approximation), elementwise on any shape.

    Notes
    -----
    out = x * Phi(x) = x/2 * (1 + erf(x / sqrt(2)));  dout/dx = Phi(x) + x * phi(x),
    phi(x) = exp(-x^2/2) / sqrt(2 pi).
    """

    def __init__(self, name="gelu"):
        super().__init__(name)

    def forward(self, x):
        self._check_input(x, None)
        return self._save(gelu(x), x)

    def backward(self, grad):
        (x,) = self._saved(grad)
        return gelu_backward(grad, x)


def softmax(z):
    """softmax over the last axis, exp(z - max) / sum exp(z - max): no overflow."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(grad, s):
    """dL/dz of ``s = softmax(z)`` (pass s, not z): s * (grad - sum(grad * s)) on the last axis."""
    return s * (grad - np.sum(grad * s, axis=-1, keepdims=True))
