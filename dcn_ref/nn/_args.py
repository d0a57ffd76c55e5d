"""Argument checks for layer constructors and inputs: every mistake is a ValueError that
names the argument, what it got and what it expected."""
import numbers

import numpy as np

from ..ops._args import FLOAT_DTYPES, pair  # noqa: F401  (one definition each, for the layers too)


def positive_int(value, name):
    """``value`` as a Python int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def float_dtype(dtype, name="dtype"):
    """``dtype`` as np.float32 or np.float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"{name}: expected float32 or float64, got {dtype!r}") from exc
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected float32 or float64, got {dtype}")
    return dtype


def unit_interval(value, name, *, closed=False):
    """A float in [0, 1) (or [0, 1] with ``closed``)."""
    ok = isinstance(value, numbers.Real) and 0 <= value and (value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{name}: expected a number in [0, {'1]' if closed else '1)'}, got {value!r}")
    return float(value)


def positive_float(value, name, *, allow_zero=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} "
                         f"number, got {value!r}")
    return float(value)
