"""Weight initialisers. Each draws from a NumPy Generator, in float64, then casts.

fan_in and fan_out count the inputs and outputs of one unit: for a convolution weight
(C_out, C_in, kh, kw), fan_in = C_in*kh*kw and fan_out = C_out*kh*kw (as Keras counts).
"""
import math

import numpy as np

INITS = ("glorot_uniform", "he_normal")


def glorot_uniform(rng, shape, fan_in, fan_out, dtype):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): Keras' default for Conv2D and Dense."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def he_normal(rng, shape, fan_in, fan_out, dtype):
    """N(0, 2 / fan_in): keeps the variance of activations through ReLUs (He et al. 2015)."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def initial_weight(init, rng, shape, fan_in, fan_out, dtype):
    """A weight drawn by the initialiser called ``init`` (one of INITS)."""
    if init not in INITS:
        raise ValueError(f"init: expected one of {list(INITS)}, got {init!r}")
    rng = np.random.default_rng(rng)
    return {"glorot_uniform": glorot_uniform, "he_normal": he_normal}[init](
        rng, shape, fan_in, fan_out, dtype)
