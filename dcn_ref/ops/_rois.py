"""Argument checks shared by the RoI pooling ops: the rois array and scalar parameters.

Bad RoIs are refused before any kernel runs, with the offending row in the message: a
batch index that is not a whole number in [0, N) would make a kernel read another
image's memory, and a non-finite or reversed box has no meaning.
"""
import numbers

import numpy as np

from ..targets import is_device_array
from . import _args

#: The most bilinear samples one bin may average (sampling_ratio**2, or the adaptive
#: grid of a large RoI): a bound that keeps the grid's size a safe integer.
MAX_SAMPLES_PER_BIN = 2 ** 20


def check_rois(rois, batch_size, spatial_scale):
    """``rois`` as an array (K, 5) of valid rows, and a float64 host copy of it.

    Each row is (batch_index, x1, y1, x2, y2): the batch index a whole number in
    [0, batch_size), the coordinates finite (also after multiplying by spatial_scale),
    x2 >= x1 and y2 >= y1. K = 0 is allowed.
    """
    rois = _args.float_array(rois, "rois", 2, "(K, 5)")
    if rois.shape[1] != 5:
        raise ValueError(f"rois: expected shape (K, 5), rows (batch_index, x1, y1, x2, y2), "
                         f"got {tuple(rois.shape)}")
    host = np.asarray(rois.copy_to_host() if is_device_array(rois) else rois, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(host).all(axis=1) & np.isfinite(host[:, 1:] * spatial_scale).all(axis=1)
    for r in np.flatnonzero(~finite)[:1]:
        raise ValueError(f"rois: expected finite coordinates (also times spatial_scale = "
                         f"{spatial_scale}), got row {r} = {host[r].tolist()}")
    index = host[:, 0]
    bad = (index != np.floor(index)) | (index < 0) | (index >= batch_size)
    for r in np.flatnonzero(bad)[:1]:
        raise ValueError(f"rois: expected batch indices (column 0) that are whole numbers in "
                         f"[0, {batch_size}) (N = input.shape[0]), got {float(index[r])!r} in row {r}")
    reversed_ = (host[:, 3] < host[:, 1]) | (host[:, 4] < host[:, 2])
    for r in np.flatnonzero(reversed_)[:1]:
        raise ValueError(f"rois: expected x2 >= x1 and y2 >= y1 in every row (batch_index, x1, "
                         f"y1, x2, y2), got row {r} = {host[r].tolist()}")
    return rois, host


def finite_real(value, name, *, positive=False):
    """A finite float (``positive``: > 0)."""
    ok = (isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, bool)
          and _args.is_finite(value) and (value > 0 or not positive))
    if not ok:
        raise ValueError(f"{name}: expected a finite {'positive ' if positive else ''}number, "
                         f"got {value!r}")
    return float(value)


def int_in(value, name, low, high):
    """An int in [low, high], as a Python int."""
    ok = (isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)
          and low <= value <= high)
    if not ok:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return int(value)
