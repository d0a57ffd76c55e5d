"""The layer interface (``Layer``) and the argument checks layers share; ``Sequential``, a
chain of layers, is in ``sequential.py``.

A layer is a function with a memory: ``forward(x)`` computes the output and keeps what its
derivative needs; ``backward(grad)`` takes dL/d(output) of a scalar loss L, returns
dL/d(input) and leaves dL/d(parameter) in ``grads`` (replacing the previous values, no
accumulation). Parameters are the arrays an optimiser trains (``params``); ``state`` holds
arrays that are saved in checkpoints but not trained (BatchNorm's running statistics).

Parameters are updated in place (by optimisers and ``load_state_dict``), so references
to them stay valid; only ``astype`` replaces them.
"""
from typing import NamedTuple

import numpy as np

from ._args import FLOAT_DTYPES, float_dtype


class LoadResult(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` left alone: keys of the model that were not
    in the dict, and keys of the dict that the model does not have."""
    missing: list
    unexpected: list


def check_name(name, what="name"):
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{what}: expected a non-empty string without '.', got {name!r}")
    return name


def check_channels_last(layer, x, channels, what="channels", ndim=None):
    """Check a channels-last input: an ndarray of rank ``ndim`` (None: any rank >= 1) whose
    last axis has ``channels`` entries, with the layer's dtype (see ``Layer._check_input``)."""
    layout = "(..., C)" if ndim is None else "(N, H, W, C)"
    layer._check_input(x, None if ndim is None else layout)
    if x.ndim < 1 or x.shape[-1] != channels:
        raise ValueError(f"{layer.name}: input: expected {what} = {channels} entries on the "
                         f"last axis of {layout}, got shape {x.shape}")
    return x


class Layer:
    """Base class: the bookkeeping shared by every layer.

    Attributes
    ----------
    name : str, unique within a model; checkpoints are keyed by it.
    params : dict name -> ndarray, the trained parameters.
    grads : dict name -> ndarray, dL/dparams of the last ``backward`` (zeros while the layer
        is not trainable).
    state : dict name -> ndarray, saved in checkpoints but not trained.
    trainable : bool. A non-trainable layer still passes gradients to its input, but leaves
        its ``grads`` at zero and optimisers skip it. ``set_param_trainable`` freezes single
        parameters of a trainable layer in the same way (DeformConv2D's main weight while its
        offset convolution trains, say).
    training : bool, True in train mode (``train()``), False in eval mode (``eval()``).
    """

    def __init__(self, name):
        self.name = check_name(name)
        self.training = True
        self.state = {}
        self._params = {}
        self._grads = {}
        self._trainable = True
        self._frozen = set()
        self._cache = None

    # -- parameters -------------------------------------------------------------------

    @property
    def params(self):
        return self._params

    @property
    def grads(self):
        return self._grads

    def add_param(self, name, value):
        """Register a trained parameter (and a zero gradient for it)."""
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)

    def _store_grads(self, **grads):
        """Keep the parameter gradients of a backward pass, for the trainable parameters."""
        if self._trainable:
            self._grads.update({k: g for k, g in grads.items() if k not in self._frozen})

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, flag):
        self._trainable = bool(flag)
        if not self._trainable:
            self._grads = {k: np.zeros_like(p) for k, p in self._params.items()}

    def set_param_trainable(self, name, flag):
        """Freeze (``flag`` False) or unfreeze one parameter of this layer."""
        if name not in self._params:
            raise ValueError(f"name: expected a parameter of layer {self.name!r} from "
                             f"{list(self._params)}, got {name!r}")
        if flag:
            self._frozen.discard(name)
        else:
            self._frozen.add(name)
            self._grads[name] = np.zeros_like(self._params[name])

    def trainable_parameters(self):
        """[(name, param, grad)] for an optimiser: the parameters that are not frozen, none
        when the layer is not trainable."""
        if not self._trainable:
            return []
        return [(k, p, self._grads[k]) for k, p in self._params.items() if k not in self._frozen]

    def num_params(self, trainable_only=False):
        if trainable_only:
            return sum(p.size for _, p, _ in self.trainable_parameters())
        return sum(p.size for p in self._params.values())

    @property
    def dtype(self):
        """The dtype of the parameters (None for a layer without any)."""
        arrays = list(self._params.values()) + list(self.state.values())
        return arrays[0].dtype if arrays else None

    def astype(self, dtype):
        """Convert parameters, gradients and state to float32 or float64 (new arrays)."""
        dtype = float_dtype(dtype)
        self._params = {k: p.astype(dtype) for k, p in self._params.items()}
        self._grads = {k: g.astype(dtype) for k, g in self._grads.items()}
        self.state = {k: s.astype(dtype) for k, s in self.state.items()}
        self._cache = None
        return self

    # -- modes ------------------------------------------------------------------------

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- checkpoints ------------------------------------------------------------------

    def state_dict(self):
        """Copies of the parameters and the state, name -> ndarray."""
        return {k: v.copy() for k, v in {**self._params, **self.state}.items()}

    def load_state_dict(self, arrays, strict=True):
        """Copy ``arrays`` (name -> array) into the parameters and state, in place.

        Shapes must match. With ``strict`` every key must match too; without, the keys that
        do are loaded and the others reported in the returned LoadResult.
        """
        own = {**self._params, **self.state}
        missing = [k for k in own if k not in arrays]
        unexpected = [k for k in arrays if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict: expected the keys {sorted(own)} of layer "
                             f"{self.name!r}, got missing {missing} and unexpected {unexpected}")
        for k in own:
            if k in arrays:
                value = np.asarray(arrays[k])
                if value.shape != own[k].shape:
                    raise ValueError(f"state_dict: expected shape {own[k].shape} for "
                                     f"{self.name}.{k}, got {value.shape}")
                own[k][...] = value
        return LoadResult(missing, unexpected)

    # -- forward and backward ---------------------------------------------------------

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _check_input(self, x, layout, channels=None):
        """Check rank (from ``layout``, e.g. "(N, C, H, W)"; None: any), channels (axis 1)
        and dtype (the parameters' dtype, or a float dtype for a layer without any)."""
        ndim = None if layout is None else layout.count(",") + 1
        if not isinstance(x, np.ndarray) or (ndim is not None and x.ndim != ndim):
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{self.name}: input: expected an ndarray of shape {layout}, got {got}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{self.name}: input: expected {channels} channels (axis 1) in "
                             f"{layout}, got shape {x.shape}")
        dtype = self.dtype
        if dtype is None and x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{self.name}: input: expected dtype float32 or float64, got {x.dtype}")
        if dtype is not None and x.dtype != dtype:
            raise ValueError(f"{self.name}: input: expected dtype {dtype} (the layer's "
                             f"parameters; see astype), got {x.dtype}")
        return x

    def _save(self, out, *cache):
        """Remember what backward needs (``cache``) and the output's shape and dtype."""
        self._cache = cache
        self._out_spec = (out.shape, out.dtype)
        return out

    def _saved(self, grad):
        """Check ``grad`` against the last output; return the cache of the last forward."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before forward")
        shape, dtype = self._out_spec
        if not isinstance(grad, np.ndarray) or grad.shape != shape:
            got = grad.shape if isinstance(grad, np.ndarray) else type(grad).__name__
            raise ValueError(f"{self.name}: grad: expected an ndarray of shape {shape} "
                             f"(the last output's), got {got}")
        if grad.dtype != dtype:
            raise ValueError(f"{self.name}: grad: expected dtype {dtype} (the last output's), "
                             f"got {grad.dtype}")
        return self._cache

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"
