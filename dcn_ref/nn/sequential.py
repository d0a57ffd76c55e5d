"""Sequential: layers applied one after the other, with checkpoints by layer name.

Parameters are named "layername.paramname", so a checkpoint of one model fills the layers
another model shares with it (``load_state_dict(..., strict=False)``).
"""
import numpy as np

from .layer import Layer, LoadResult


class Sequential(Layer):
    """Layers applied one after the other; parameters named "layername.paramname".

    Parameters
    ----------
    layers : list of Layer
        With unique names.
    name : str

    Notes
    -----
    Checkpoints go by layer name, so a model can start from another that shares some of its
    layers: ``deform_cnn().load_state_dict(cnn().state_dict(), strict=False)`` fills the
    layers the two have in common and leaves the rest at their initial values.
    """

    def __init__(self, layers, name="sequential"):
        super().__init__(name)
        layers = list(layers)
        seen = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"layers: expected Layer objects, got {type(layer).__name__} "
                                 f"at position {i}")
            if layer.name in seen:
                raise ValueError(f"layers: expected unique names, got {layer.name!r} twice")
            seen.add(layer.name)
        self.layers = layers

    def __getitem__(self, name):
        """The layer called ``name`` (or at position ``name`` when it is an int)."""
        if isinstance(name, int):
            return self.layers[name]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    # -- forward and backward ---------------------------------------------------------

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    # -- parameters, flattened as "layername.paramname" -------------------------------

    @property
    def params(self):
        return {f"{l.name}.{k}": p for l in self.layers for k, p in l.params.items()}

    @property
    def grads(self):
        return {f"{l.name}.{k}": g for l in self.layers for k, g in l.grads.items()}

    def trainable_parameters(self):
        return [(f"{l.name}.{k}", p, g) for l in self.layers for k, p, g in l.trainable_parameters()]

    def num_params(self, trainable_only=False):
        return sum(l.num_params(trainable_only) for l in self.layers)

    @property
    def trainable(self):
        """True when every layer is trainable; setting it sets every layer."""
        return all(l.trainable for l in self.layers)

    @trainable.setter
    def trainable(self, flag):
        for layer in self.layers:
            layer.trainable = flag

    def set_trainable(self, which, trainable):
        """Set ``trainable`` on some layers or parameters: ``which`` is a name, a list of
        names, or a predicate ``f(layer) -> bool``. A name is a layer ("conv12") or one of
        its parameters ("conv12.weight"). Returns the names it set."""
        if callable(which):
            chosen = [l.name for l in self.layers if which(l)]
        else:
            chosen = [which] if isinstance(which, str) else list(which)
        known = {l.name: l for l in self.layers}
        unknown = [n for n in chosen if n.partition(".")[0] not in known]
        if unknown:
            raise ValueError(f"which: expected layer names from {list(known)} (or "
                             f"'layer.param'), got unknown {unknown}")
        for name in chosen:
            layer_name, _, param = name.partition(".")
            if param:
                known[layer_name].set_param_trainable(param, trainable)
            else:
                known[layer_name].trainable = trainable
        return chosen

    def train_only(self, names):
        """Make exactly ``names`` trainable and freeze everything else. A name is a layer
        ("conv12_offset": all its parameters) or one parameter ("conv12.offset_weight": the
        layer trains, its other parameters stay frozen). Returns the trainable parameters'
        names."""
        names = set(names)
        known = {l.name for l in self.layers}
        unknown = sorted(n for n in names if n.partition(".")[0] not in known)
        if unknown:
            raise ValueError(f"names: expected layer names from {sorted(known)} (or "
                             f"'layer.param'), got unknown {unknown}")
        for layer in self.layers:
            whole = layer.name in names
            layer.trainable = whole or any(n.partition(".")[0] == layer.name for n in names)
            for param in layer.params:
                layer.set_param_trainable(param, whole or f"{layer.name}.{param}" in names)
        return [name for name, _, _ in self.trainable_parameters()]

    @property
    def dtype(self):
        dtypes = [l.dtype for l in self.layers if l.dtype is not None]
        return dtypes[0] if dtypes else None

    def astype(self, dtype):
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    # -- checkpoints ------------------------------------------------------------------

    def state_dict(self):
        """Parameters and state of every layer, "layername.key" -> ndarray (copies)."""
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.state_dict().items()}

    def load_state_dict(self, arrays, strict=True):
        """Load "layername.key" arrays into the layers of those names (in place).

        With ``strict`` the keys must be exactly those of ``state_dict()``; without, the
        matching keys are loaded and the rest reported. Shapes must always match.

        Returns
        -------
        LoadResult(missing, unexpected): lists of "layername.key".
        """
        by_layer = {l.name: {} for l in self.layers}
        unexpected = []
        for key, value in arrays.items():
            layer_name, _, rest = key.partition(".")
            if layer_name in by_layer and rest:
                by_layer[layer_name][rest] = value
            else:
                unexpected.append(key)
        missing = []
        for layer in self.layers:
            result = layer.load_state_dict(by_layer[layer.name], strict=False)
            missing += [f"{layer.name}.{k}" for k in result.missing]
            unexpected += [f"{layer.name}.{k}" for k in result.unexpected]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict: expected the keys of model {self.name!r}, got "
                             f"missing {missing} and unexpected {unexpected}")
        return LoadResult(missing, unexpected)

    def save(self, path):
        """Write ``state_dict()`` to an ``.npz`` file."""
        np.savez(path, **self.state_dict())

    def load(self, path, strict=True):
        """Read an ``.npz`` file written by ``save`` (see ``load_state_dict``)."""
        with np.load(path) as f:
            return self.load_state_dict({k: f[k] for k in f.files}, strict=strict)

    def summary(self):
        """One line per layer: name, type, number of parameters, trainable."""
        lines = [f"{'layer':<16} {'type':<18} {'params':>9}  trainable"]
        for l in self.layers:
            lines.append(f"{l.name:<16} {type(l).__name__:<18} {l.num_params():>9}  "
                         f"{'yes' if l.trainable else 'no'}")
        lines.append(f"{'total':<16} {'':<18} {self.num_params():>9}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Sequential(name={self.name!r}, layers={[l.name for l in self.layers]})"
