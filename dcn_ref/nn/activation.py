"""ReLU, the only activation the Keras model uses between layers (softmax is in the loss)."""
import numpy as np

from .layer import Layer


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
