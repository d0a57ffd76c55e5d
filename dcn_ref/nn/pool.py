"""GlobalAvgPool2D: the mean of each channel over the image."""
import numpy as np

from .layer import Layer


class GlobalAvgPool2D(Layer):
    """x (N, C, H, W) -> out (N, C), ``out[n, c]`` = the mean of ``x[n, c]``;
    ``dL/dx[n, c, i, j] = g[n, c] / (H*W)``."""

    def __init__(self, name="avg_pool"):
        super().__init__(name)

    def forward(self, x):
        self._check_input(x, "(N, C, H, W)")
        return self._save(x.mean(axis=(2, 3)), x.shape)

    def backward(self, grad):
        """grad (N, C) -> dL/dx (N, C, H, W), a read-only broadcast view (no copy)."""
        (shape,) = self._saved(grad)
        return np.broadcast_to((grad / (shape[2] * shape[3]))[:, :, None, None], shape)
