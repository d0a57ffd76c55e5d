"""Fully connected layers: Dense on (N, features) and Linear on the last axis of any array."""
import numpy as np

from ._args import float_dtype, positive_int
from .init import initial_weight
from .layer import Layer, check_channels_last


class Dense(Layer):
    """out = x @ weight.T + bias, with weight (out_features, in_features) as a 1x1 Conv2D's.

    Parameters
    ----------
    in_features : int
    out_features : int
    bias : bool
    init : str
        "glorot_uniform" (Keras' default) or "he_normal"; the bias starts at zero.
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, in_features) -> out (N, out_features). Backward:
    ``dweight = g.T @ x``, ``dbias = sum of g over the batch``, ``dx = g @ weight``.
    """

    def __init__(self, in_features, out_features, bias=True, *, init="glorot_uniform", rng=None,
                 dtype=np.float32, name="dense"):
        super().__init__(name)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        dtype = float_dtype(dtype)
        self.add_param("weight", initial_weight(init, rng, (self.out_features, self.in_features),
                                                fan_in=self.in_features,
                                                fan_out=self.out_features, dtype=dtype))
        if bias:
            self.add_param("bias", np.zeros(self.out_features, dtype))

    def forward(self, x):
        self._check_input(x, "(N, in_features)", self.in_features)
        out = x @ self.params["weight"].T                               # (N, out_features)
        if "bias" in self.params:
            out += self.params["bias"]
        return self._save(out, x)

    def backward(self, grad):
        (x,) = self._saved(grad)
        grads = {"weight": grad.T @ x}                                   # (out, in)
        if "bias" in self.params:
            grads["bias"] = grad.sum(axis=0)
        self._store_grads(**grads)
        return grad @ self.params["weight"]                             # (N, in_features)


def linear(x, weight, bias=None):
    """x (..., C_in) @ weight.T + bias: weight (C_out, C_in) as torch.nn.Linear's, bias (C_out,)
    or None -> (..., C_out)."""
    # one 2-d matrix product (BLAS); a stacked (N, H, W, C) @ (C, C') loops over N*H
    out = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        out += bias
    return out


def linear_backward(grad, x, weight, has_bias=True):
    """Gradients of ``linear``: grad (..., C_out), x (..., C_in) -> (dx, dweight, dbias).

    ``dweight = sum over the leading axes of grad^T x``, ``dbias = sum of grad over them``
    (None without a bias), ``dx = grad @ weight``.
    """
    g2 = np.ascontiguousarray(grad).reshape(-1, grad.shape[-1])        # (M, C_out)
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])              # (M, C_in)
    dweight = g2.T @ x2                                                 # (C_out, C_in)
    dbias = g2.sum(axis=0) if has_bias else None
    return (g2 @ weight).reshape(x.shape), dweight, dbias


class Linear(Layer):
    """A fully connected layer on the last axis (channels last), as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features : int
    out_features : int
    bias : bool
    init : str
        "glorot_uniform" (Xavier uniform; Keras' default, InternImage's projections) or
        "he_normal"; the bias starts at zero.
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (..., in_features) -> out (..., out_features), any number of leading axes (an image
    (N, H, W, C) is a 1x1 convolution). Backward: see ``linear_backward``.
    """

    def __init__(self, in_features, out_features, bias=True, *, init="glorot_uniform", rng=None,
                 dtype=np.float32, name="linear"):
        super().__init__(name)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        dtype = float_dtype(dtype)
        self.add_param("weight", initial_weight(init, rng, (self.out_features, self.in_features),
                                                fan_in=self.in_features,
                                                fan_out=self.out_features, dtype=dtype))
        if bias:
            self.add_param("bias", np.zeros(self.out_features, dtype))

    def forward(self, x):
        """x (..., in_features) -> (..., out_features)."""
        check_channels_last(self, x, self.in_features, "in_features")
        return self._save(linear(x, self.params["weight"], self.params.get("bias")), x)

    def backward(self, grad):
        """grad (..., out_features) -> dL/dx (..., in_features); dL/dweight, dL/dbias to grads."""
        (x,) = self._saved(grad)
        dx, dweight, dbias = linear_backward(grad, x, self.params["weight"], "bias" in self.params)
        self._store_grads(weight=dweight, **({"bias": dbias} if dbias is not None else {}))
        return dx
