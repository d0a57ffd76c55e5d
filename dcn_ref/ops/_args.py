"""Argument checks shared by the ops: every mistake is a ValueError that names the
argument, what it got and what it expected."""
import math
import numbers

import numpy as np

from ..targets import is_device_array

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The largest stride, padding, dilation or kernel size the ops take: every index the
#: kernels compute from them (a product of two such numbers plus a few more) then fits in
#: int64 arithmetic with room to spare.
MAX_GRID_PARAM = 2 ** 31 - 1

#: The most output pixels times taps one image plane may have: far beyond any memory, yet
#: small enough that every element index is a safe int64.
MAX_PLANE_ELEMENTS = 2 ** 48


def float_array(x, name, ndim, layout):
    """``x`` as an array (NumPy, or left on the device) of ``ndim`` dims and a float dtype.

    ``layout`` names the dimensions for messages, e.g. "(N, C, H, W)".
    """
    if x is None:
        raise ValueError(f"{name}: expected an array of shape {layout}, got None")
    if not is_device_array(x):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name}: expected an array of shape {layout}, got {type(x).__name__} "
                             f"that NumPy cannot convert ({exc})") from exc
    if len(x.shape) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}, got shape {tuple(x.shape)}")
    if np.dtype(x.dtype) not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {np.dtype(x.dtype)}")
    return x


def is_finite(value):
    """``math.isfinite(value)`` for a real number, with an int beyond the float range
    (``10**400``) infinite rather than an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def same_dtype(**arrays):
    """Check that the float arrays of one call share a dtype; return it."""
    given = {name: np.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    names = list(given)
    first = names[0]
    for name in names[1:]:
        if given[name] != given[first]:
            raise ValueError(f"{name}: expected dtype {given[first]} (the dtype of {first}), "
                             f"got {given[name]}")
    return given[first]


def expect_shape(x, name, expected, layout):
    """Check ``x.shape == expected``; ``layout`` names the dimensions for the message."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)} {layout}, got {tuple(x.shape)}")


def pair(value, name, minimum, maximum=MAX_GRID_PARAM):
    """An int or a pair of ints in [minimum, maximum], as a (h, w) tuple of Python ints."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool)
                  for v in value))
    if not ok:
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if value[0] < minimum or value[1] < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {tuple(int(v) for v in value)}")
    if value[0] > maximum or value[1] > maximum:
        raise ValueError(f"{name}: expected values <= {maximum}, got "
                         f"{tuple(int(v) for v in value)}")
    return int(value[0]), int(value[1])


def padding_mode(value, modes):
    """The integer code of a padding mode name from ``modes`` (a dict name -> code)."""
    if not isinstance(value, str) or value not in modes:
        raise ValueError(f"padding_mode: expected one of {sorted(modes)}, got {value!r}")
    return modes[value]


def conv_output_size(height, width, kh, kw, stride, padding, dilation):
    """H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1, and W_out alike."""
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"input: expected an image at least as large as the dilated kernel after padding, got "
            f"{height}x{width} with kernel {kh}x{kw}, padding {padding}, dilation {dilation}, "
            f"stride {stride} (output would be {out_h}x{out_w})")
    if out_h * out_w * kh * kw > MAX_PLANE_ELEMENTS:
        raise ValueError(
            f"padding: expected an output of at most 2**48 pixels times taps a plane, got "
            f"{out_h}x{out_w} pixels and a {kh}x{kw} kernel from a {height}x{width} image with "
            f"padding {padding}, stride {stride}")
    return out_h, out_w
