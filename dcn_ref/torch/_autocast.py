"""The registered ops inside ``torch.autocast``: computed in float32, returned in the
dtype of their first tensor (``input``, or ``image``).

Autocast runs each op of a region in the dtype its rule names; an op with no rule gets
its tensors as they are, and a bfloat16 activation next to a float32 weight would then
be refused (the tensors of one call share a dtype). ``register`` gives each forward op
torchvision's rule for its ``deform_conv2d``, on the CPU and on CUDA: every floating
tensor of the call's device type but float64 is cast to float32, the op runs with
autocast off, and its result is cast to the dtype the first tensor came in. The casts
are ordinary differentiable ops, so each gradient reaches its tensor in that tensor's
dtype. A float64 tensor is left alone, as autocast leaves it; mixed with float32 it is
refused as it is outside autocast.

The backward ops need no rule: they see the tensors the forward op saw, all float32.
"""
import torch

#: the dispatch key of autocast for each device type the ops run on
_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}

# Registrations live as long as the Library that made them: this one, the module's.
_LIBRARY = torch.library.Library("dcn_ref", "FRAGMENT")


def _casts(t, device_type):
    """Whether autocast for ``device_type`` casts ``t`` to float32: a floating tensor on
    that device type that is not float64."""
    return (isinstance(t, torch.Tensor) and t.is_floating_point()
            and t.device.type == device_type and t.dtype != torch.float64)


def dtype_of(t):
    """The dtype the tensor ``t`` reaches a registered op in, here: float32 where an
    autocast region of its device type is open and casts it, else its own."""
    device_type = t.device.type
    if device_type in _KEYS and torch.is_autocast_enabled(device_type) and _casts(t, device_type):
        return torch.float32
    return t.dtype


def register(op, name):
    """Give the custom op ``dcn_ref::<name>`` (``op``, its default overload) the rule of
    the module docstring for every device type of ``_KEYS``."""
    for device_type, key in _KEYS.items():
        _LIBRARY.impl(name, _kernel(op, device_type), key)


def _kernel(op, device_type):
    def run_in_float32(*args):
        first = next(a for a in args if isinstance(a, torch.Tensor))
        with torch.autocast(device_type, enabled=False):
            out = op(*(a.to(torch.float32) if _casts(a, device_type) else a for a in args))
        return out.to(first.dtype)

    return run_in_float32
