"""What the bridge checks before anything is dispatched, and how it hands arguments to the
registered ops.

A function of ``dcn_ref.torch`` checks its arguments the way ``dcn_ref.ops`` does, before
the call reaches PyTorch's dispatcher:

1. every tensor argument is a tensor (or None where the op takes None);
2. all tensors are on one device, a CPU, CUDA or meta device;
3. everything the op in ``dcn_ref.ops`` checks (ranks, shapes, dtypes, the scalar
   arguments as given): the op's own check runs on stand-ins of the tensors, NumPy arrays
   of their shape and dtype without memory, so meta and fake tensors are checked as real
   ones are.

Then the scalar arguments are handed to the op's schema as they are: PyTorch's schemas
convert (an ``int`` argument takes 2.5 as 2), so a value of the wrong type is refused
here instead of converted. The fake implementations run checks 2 and 3 too, so tracing
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
from . import _forward_mode


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


# -- the op's own check, on stand-ins -------------------------------------------------------

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _stand_in(t, name):
    """A NumPy array of ``t``'s shape and dtype whose strides are all 0 (no memory): what
    the op's check reads. Dtypes NumPy lacks (bfloat16, ...) are refused here, as the op
    refuses every dtype but float32 and float64."""
    dtype = _NUMPY_DTYPES.get(t.dtype)
    if dtype is None:
        raise ArgumentError(f"{name}: expected dtype float32 or float64, got "
                            f"{str(t.dtype).replace('torch.', '')}")
    return np.broadcast_to(np.zeros((), dtype), tuple(t.shape))


def _op_check(name):
    """The argument check of ``dcn_ref.ops.<name>``: ``check(*args, grad_output=None)``."""
    return importlib.import_module(f"..ops.{name}", __package__)._check


def check(name, schema, args, grad_output=None):
    """Checks 2 and 3 of the module docstring for the op ``name`` (and its backward, with
    ``grad_output``); the shape checks are left out when a shape is symbolic."""
    tensors = [(a.name, v) for a, v in zip(schema, args) if a.is_tensor and v is not None]
    if grad_output is not None:
        tensors.append(("grad_output", grad_output))
    one_device(tensors)
    if not all(type(d) is int for _, t in tensors for d in t.shape):
        return                     # symbolic shapes (torch.compile(dynamic=True))
    stand_ins = {n: _stand_in(t, n) for n, t in tensors}
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
