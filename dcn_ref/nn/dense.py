"""Dense: a fully connected layer."""
import numpy as np

from ._args import float_dtype, positive_int
from .init import initial_weight
from .layer import Layer


class Dense(Layer):
    """out = x @ weight.T + bias, with weight (out_features, in_features) as a 1x1 Conv2D's.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init : "glorot_uniform" (Keras' default) or "he_normal"; the bias starts at zero.
    rng : numpy Generator, seed or None.
    dtype : float32 (default) or float64
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
