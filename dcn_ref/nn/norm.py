"""BatchNorm2D: batch normalisation over images and pixels, one mean and variance a channel."""
import numpy as np

from ._args import float_dtype, positive_float, positive_int, unit_interval
from .layer import Layer


class BatchNorm2D(Layer):
    """Normalise each channel, then scale by ``gamma`` and shift by ``beta``.

    Parameters
    ----------
    channels : int, C.
    momentum : float in [0, 1): the running statistics keep this share of their old value at
        every training step (Keras' convention and default, 0.99; PyTorch's momentum is
        1 - this).
    eps : float, added to the variance (Keras' default 1e-3).
    dtype : float32 (default) or float64
    name : str

    Notes
    -----
    input x (N, C, H, W) -> output (N, C, H, W). In train mode, over the M = N*H*W values of
    channel c::

        mean = sum(x) / M,   var = sum((x - mean)**2) / M,   inv_std = 1 / sqrt(var + eps)
        xhat = (x - mean) * inv_std,   out = gamma * xhat + beta

    and the running statistics move towards the batch's (the variance unbiased, M/(M-1) var,
    as Keras and PyTorch keep it). In eval mode the running statistics replace mean and var.

    Backward in train mode, where mean and var depend on every x of the channel::

        dbeta = sum(g),   dgamma = sum(g * xhat)
        dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma / M)

    In eval mode mean and var are constants and ``dx = gamma * inv_std * g``.
    """

    def __init__(self, channels, momentum=0.99, eps=1e-3, *, dtype=np.float32, name="bn"):
        super().__init__(name)
        self.channels = positive_int(channels, "channels")
        self.momentum = unit_interval(momentum, "momentum")
        self.eps = positive_float(eps, "eps")
        dtype = float_dtype(dtype)
        self.add_param("gamma", np.ones(self.channels, dtype))
        self.add_param("beta", np.zeros(self.channels, dtype))
        self.state["running_mean"] = np.zeros(self.channels, dtype)
        self.state["running_var"] = np.ones(self.channels, dtype)

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W)."""
        self._check_input(x, "(N, C, H, W)", self.channels)
        if self.training:
            M = x.shape[0] * x.shape[2] * x.shape[3]
            mean = x.mean(axis=(0, 2, 3))                               # (C,)
            centred = x - mean[:, None, None]
            var = np.mean(centred * centred, axis=(0, 2, 3))            # (C,)
            inv_std = 1 / np.sqrt(var + self.eps)
            xhat = centred * inv_std[:, None, None]
            m = self.momentum
            self.state["running_mean"] *= m
            self.state["running_mean"] += (1 - m) * mean
            self.state["running_var"] *= m
            self.state["running_var"] += (1 - m) * var * (M / max(M - 1, 1))
        else:
            inv_std = 1 / np.sqrt(self.state["running_var"] + self.eps)
            xhat = (x - self.state["running_mean"][:, None, None]) * inv_std[:, None, None]
        p = self.params
        out = p["gamma"][:, None, None] * xhat + p["beta"][:, None, None]
        return self._save(out, xhat, inv_std, self.training)

    def backward(self, grad):
        """grad (N, C, H, W) -> dL/dx (N, C, H, W); dL/dgamma, dL/dbeta to grads."""
        xhat, inv_std, batch_statistics = self._saved(grad)
        dbeta = grad.sum(axis=(0, 2, 3))                                # (C,)
        dgamma = np.sum(grad * xhat, axis=(0, 2, 3))                    # (C,)
        scale = (self.params["gamma"] * inv_std)[:, None, None]
        if batch_statistics:
            M = grad.shape[0] * grad.shape[2] * grad.shape[3]
            dx = scale * (grad - (dbeta / M)[:, None, None] - xhat * (dgamma / M)[:, None, None])
        else:
            dx = scale * grad
        self._store_grads(gamma=dgamma, beta=dbeta)
        return dx
