"""What the bridge checks before anything is dispatched, and how it hands arguments to the
registered ops.

A function of ``dcn_ref.torch`` checks its arguments the way ``dcn_ref.ops`` does, before
the call reaches PyTorch's dispatcher:

1. every tensor argument is a tensor (or None where the op takes None);
2. all tensors are on one device, a CPU, CUDA or meta device;
3. all tensors share one dtype, float16, bfloat16, float32 or float64, as the tensors
   reach the op: inside ``torch.autocast`` for their device, after its casts (``_autocast``);
4. everything the op in ``dcn_ref.ops`` checks (ranks, shapes, the scalar arguments as
   given): the op's own check runs on stand-ins of the tensors, NumPy arrays of their
   shape and of the dtype they are computed in (float32 for the half-precision ones),
   without memory, so meta and fake tensors are checked as real ones are.

Then the scalar arguments are handed to the op's schema as they are: PyTorch's schemas
convert (an ``int`` argument takes 2.5 as 2), so a value of the wrong type is refused
here instead of converted. The fake implementations run checks 2 to 4 too, so tracing
(``torch.compile``) refuses what eager mode refuses.

Every refusal is an ``ArgumentError``, whose message starts with the argument's name.
"""
import contextlib
import importlib
import numbers
import re
from typing import NamedTuple

import numpy as np
import torch

from ..ops import _args
from . import _autocast, _forward_mode
from ._convert import COMPUTED_IN


class ArgumentError(ValueError, RuntimeError):
    """A wrong argument of a ``dcn_ref.torch`` function or op.

    Both a ``ValueError``, as ``dcn_ref.ops`` raises, and a ``RuntimeError``, as PyTorch's
    and torchvision's ops raise, so that code written for either catches it. The message
    starts with the argument's name, then says what was expected and what was got.
    """


class Argument(NamedTuple):
    """One argument of a registered op's schema, e.g. ("bias", "Tensor?")."""
    name: str
    type: str

    @property
    def is_tensor(self):
        return self.type in ("Tensor", "Tensor?")


_ARGUMENT = re.compile(r"^(?P<type>[\w\[\]?]+) (?P<name>\w+)$")


def parse(arguments):
    """[Argument] of a schema's argument list "Tensor input, int[] stride, ..."."""
    return [Argument(m["name"], m["type"])
            for m in (_ARGUMENT.match(item.strip()) for item in arguments.split(","))]


# -- tensors and devices -------------------------------------------------------------------

_DEVICE_TYPES = ("cpu", "cuda", "meta")


def check_tensors(schema, args):
    """Every tensor argument is a tensor, or None where the schema says ``Tensor?``."""
    for arg, value in zip(schema, args):
        if arg.is_tensor and not isinstance(value, torch.Tensor):
            if value is None and arg.type == "Tensor?":
                continue
            expected = "a torch.Tensor or None" if arg.type == "Tensor?" else "a torch.Tensor"
            raise ArgumentError(f"{arg.name}: expected {expected}, got {type(value).__name__}")


def one_device(named):
    """The device that all tensors of ``named``, [(name, tensor or None)], are on.

    A tensor on another device than the first one is an ArgumentError naming both devices
    (a meta tensor among CPU tensors too), as is a device dcn_ref has no kernels for.
    """
    first = device = None
    for name, t in named:
        if t is None:
            continue
        if t.device.type not in _DEVICE_TYPES:
            raise ArgumentError(f"{name}: expected a CPU, CUDA or meta tensor, got one on "
                                f"{t.device}")
        if device is None:
            first, device = name, t.device
        elif t.device != device:
            raise ArgumentError(f"{name}: expected a tensor on {device} (the device of {first}), "
                                f"got one on {t.device}")
    return device


# -- dtypes ---------------------------------------------------------------------------------

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
#: the dtypes the bridge takes: the ops' own, and those it computes in float32 (``_convert``)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def one_dtype(named):
    """The dtype that all tensors of ``named``, [(name, tensor or None)], reach the op in:
    one of ``_DTYPES``, the same for all, as autocast hands them on (check 3).

    A dtype the bridge does not take, or one that differs from the first tensor's, is an
    ArgumentError naming the tensor and both dtypes (and autocast's casts, if any).
    """
    first = dtype = None
    for name, t in named:
        if t is None:
            continue
        given = _autocast.dtype_of(t)
        if given not in _DTYPES:
            raise ArgumentError(f"{name}: expected dtype float16, bfloat16, float32 or float64, "
                                f"got {_dtype_name(given)}")
        if dtype is None:
            first, dtype = (name, t), given
        elif given != dtype:
            raise ArgumentError(f"{name}: expected dtype {_described(dtype, first[1])} (the "
                                f"dtype of {first[0]}), got {_described(given, t)}")
    return dtype


def _described(dtype, t):
    """``dtype``'s name, saying so where it is autocast's cast of ``t``."""
    if dtype == t.dtype:
        return _dtype_name(dtype)
    return f"{_dtype_name(dtype)} (autocast's cast of {_dtype_name(t.dtype)})"


# -- the op's own check, on stand-ins -------------------------------------------------------

def _stand_in(t, dtype):
    """A NumPy array of ``t``'s shape and the dtype ``dtype`` is computed in whose strides
    are all 0 (no memory): what the op's check reads."""
    computed_in = _NUMPY_DTYPES[COMPUTED_IN.get(dtype, dtype)]
    return np.broadcast_to(np.zeros((), computed_in), tuple(t.shape))


def _op_check(name):
    """The argument check of ``dcn_ref.ops.<name>``: ``check(*args, grad_output=None)``."""
    return importlib.import_module(f"..ops.{name}", __package__)._check


def check(name, schema, args, grad_output=None):
    """Checks 2 to 4 of the module docstring for the op ``name`` (and its backward, with
    ``grad_output``); the shape checks are left out when a shape is symbolic."""
    tensors = [(a.name, v) for a, v in zip(schema, args) if a.is_tensor and v is not None]
    if grad_output is not None:
        tensors.append(("grad_output", grad_output))
    one_device(tensors)
    dtype = one_dtype(tensors)
    if not all(type(d) is int for _, t in tensors for d in t.shape):
        return                     # symbolic shapes (torch.compile(dynamic=True))
    stand_ins = {n: _stand_in(t, dtype) for n, t in tensors}
    given = [stand_ins.get(a.name, v) if a.is_tensor else v for a, v in zip(schema, args)]
    with argument_errors():
        _op_check(name)(*given, **({} if grad_output is None else
                                   {"grad_output": stand_ins["grad_output"]}))


@contextlib.contextmanager
def argument_errors():
    """Within the block, a ValueError of ``dcn_ref.ops`` becomes an ArgumentError (with the
    same message)."""
    try:
        yield
    except ArgumentError:
        raise
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None


# -- scalars as the schema takes them ------------------------------------------------------

_SYMBOLIC = (torch.SymInt, torch.SymFloat, torch.SymBool, torch.fx.Proxy)
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _int(value, name):
    if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name}: expected an int, got {value!r}")
    if not _INT64[0] <= value <= _INT64[1]:
        raise ArgumentError(f"{name}: expected an int in [-2**63, 2**63), got {value!r}")
    return int(value)


def _float(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ArgumentError(f"{name}: expected a finite number, got {value!r}") from None


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _str(value, name):
    if not isinstance(value, str):
        raise ArgumentError(f"{name}: expected a str, got {value!r}")
    return value


def _pair(value, name):
    with argument_errors():
        return list(_args.pair(value, name, *_INT64))


_CONVERT = {"int": _int, "float": _float, "bool": _bool, "str": _str, "int[]": _pair}


def to_schema(schema, args):
    """The arguments as the op's schema takes them: pairs as lists, scalars of the schema's
    type, each refused (never converted) when it is of another type. Tensors, and the
    symbolic values of tracing, pass as they are."""
    converted = []
    for arg, value in zip(schema, args):
        optional = arg.type.endswith("?")
        convert = _CONVERT.get(arg.type.rstrip("?"))
        if convert is None or isinstance(value, _SYMBOLIC) or (optional and value is None):
            converted.append(value)
        else:
            converted.append(convert(value, arg.name))
    return converted


def traced(args):
    """Whether the call is being traced (``torch.compile`` or ``torch.fx``): then the fake
    implementation checks, or the op when the traced graph runs."""
    return torch.compiler.is_compiling() or any(isinstance(a, torch.fx.Proxy) for a in args)


def checked(name, op, arguments):
    """``op`` (the registered ``dcn_ref::<name>``) behind the checks of the module
    docstring: ``call(*args)`` with the arguments of ``dcn_ref.ops.<name>``, in its order."""
    schema = parse(arguments)

    def call(*args):
        if not traced(args):
            check_tensors(schema, args)
            _forward_mode.refuse(name, [v for a, v in zip(schema, args) if a.is_tensor])
            check(name, schema, args)
        return op(*to_schema(schema, args))

    return call
