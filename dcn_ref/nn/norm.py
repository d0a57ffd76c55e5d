"""Normalisation layers: BatchNorm2D (statistics over the batch and the pixels, one mean and
variance a channel) and LayerNorm (statistics over the channels, one mean and variance a
pixel, channels last)."""
import numpy as np

from ._args import float_dtype, positive_float, positive_int, unit_interval
from .layer import Layer, check_channels_last


class BatchNorm2D(Layer):
    """Normalise each channel, then scale by ``gamma`` and shift by ``beta``.

    Parameters
    ----------
    channels : int
        C.
    momentum : float
        In [0, 1): the running statistics keep this share of their old value at every
        training step (Keras' convention and default, 0.99; PyTorch's momentum is 1 - this).
    eps : float
        Added to the variance (Keras' default 1e-3).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    input x (N, C, H, W) -> output (N, C, H, W). In train mode, over the ``M = N*H*W`` values
    of channel c::

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


def layer_norm(x, weight, bias, eps):
    """Normalise x (..., C) over its last axis, then scale and shift: returns (out, xhat,
    inv_std), xhat (..., C) and inv_std (..., 1) being what ``layer_norm_backward`` needs."""
    mean = x.mean(axis=-1, keepdims=True)                               # (..., 1)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)            # (..., 1), biased
    inv_std = 1 / np.sqrt(var + eps)
    xhat = centred * inv_std
    return xhat * weight + bias, xhat, inv_std


def layer_norm_backward(grad, xhat, inv_std, weight):
    """Gradients of ``layer_norm``: grad (..., C) -> (dx, dweight, dbias).

    With gx = grad * weight and means over the C channels of each position::

        dx = inv_std * (gx - mean(gx) - xhat * mean(gx * xhat))
        dweight = sum over positions of grad * xhat,   dbias = sum over positions of grad
    """
    gx = grad * weight
    dx = inv_std * (gx - gx.mean(axis=-1, keepdims=True)
                    - xhat * np.mean(gx * xhat, axis=-1, keepdims=True))
    lead = tuple(range(grad.ndim - 1))
    return dx, np.sum(grad * xhat, axis=lead), grad.sum(axis=lead)


class LayerNorm(Layer):
    """Layer normalisation over the last (channel) axis, as ``torch.nn.LayerNorm(C)``.

    Parameters
    ----------
    channels : int
        C.
    eps : float
        Added to the variance. PyTorch's default, 1e-5; InternImage builds its layer norms
        with 1e-6 (the DCNv3 block passes that).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (..., C) -> out (..., C), channels last. At every position, over its C values::

        mean = sum(x) / C,  var = sum((x - mean)**2) / C,  inv_std = 1 / sqrt(var + eps)
        xhat = (x - mean) * inv_std,  out = weight * xhat + bias

    The statistics are the sample's own, so train and eval mode compute the same thing.
    Parameter names are torch's: weight (gamma, starts at 1) and bias (beta, starts at 0).
    Backward: see ``layer_norm_backward``.
    """

    def __init__(self, channels, eps=1e-5, *, dtype=np.float32, name="layer_norm"):
        super().__init__(name)
        self.channels = positive_int(channels, "channels")
        self.eps = positive_float(eps, "eps")
        dtype = float_dtype(dtype)
        self.add_param("weight", np.ones(self.channels, dtype))
        self.add_param("bias", np.zeros(self.channels, dtype))

    def forward(self, x):
        """x (..., C) -> (..., C)."""
        check_channels_last(self, x, self.channels)
        out, xhat, inv_std = layer_norm(x, self.params["weight"], self.params["bias"], self.eps)
        return self._save(out, xhat, inv_std)

    def backward(self, grad):
        """grad (..., C) -> dL/dx (..., C); dL/dweight, dL/dbias to grads."""
        xhat, inv_std = self._saved(grad)
        dx, dweight, dbias = layer_norm_backward(grad, xhat, inv_std, self.params["weight"])
        self._store_grads(weight=dweight, bias=dbias)
        return dx
