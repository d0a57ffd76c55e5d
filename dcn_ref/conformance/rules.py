"""The rules a deformable convolution can follow instead of the contract's, each computed
with the reference, so that a disagreement is explained by evaluation, not by guessing.

A forward rule turns a case's inputs into the inputs that make the reference compute what
an implementation following that rule computes (swapped offsets, moved sample points,
switched-off taps), or marks the outputs the rule makes NaN. A gradient rule does the
same to the reference's gradients. ``explain`` tries them in order, simplest first, and
names the first that reproduces the implementation's numbers.
"""
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from .. import ops
from .cases import grid_points


class Rule(NamedTuple):
    """A named way of computing the op; ``compute(case, arrays)`` -> the numbers it gives
    (an output, or a tuple of gradients), None where it changes nothing for this case."""
    name: str
    compute: Callable
    loose: bool = False     # judged with float32's tolerance (a float64 case computed in float32)


class Explanation(NamedTuple):
    rule: object            # the Rule's name, or None when none reproduces the numbers
    whole: bool             # it reproduces every number of the case, not only the first differing
    where: tuple            # the index of the first differing number
    got: float
    expected: float


# -- the reference, on float64 copies of a case's arrays -----------------------------------

def reference(a, offset=None, mask=None):
    """dcn_ref's deform_conv2d on the arrays ``a`` (an ``Arrays``), with offset or mask
    replaced where given (float64 results)."""
    return ops.deform_conv2d(a.input, a.offset if offset is None else offset, a.weight, a.bias,
                             a.stride, a.padding, a.dilation, a.mask if mask is None else mask)


def reference_grads(a, grad_output, offset=None):
    """dcn_ref's gradients of sum(out * grad_output): (input, offset, weight, bias, mask),
    without the absent ones."""
    grads = ops.deform_conv2d_backward(grad_output, a.input, a.offset if offset is None else offset,
                                       a.weight, a.bias, a.stride, a.padding, a.dilation, a.mask)
    return tuple(g for g in grads if g is not None)


def _sample_points(case, a):
    """(y, x), each (N, G, K, H_out, W_out): where every tap reads."""
    N, G, K = a.input.shape[0], case.offset_groups, case.kernel_size[0] * case.kernel_size[1]
    offset = a.offset.reshape(N, G, K, 2, *case.out_size)
    gy, gx = grid_points(case)
    return gy + offset[:, :, :, 0], gx + offset[:, :, :, 1]


def _with_points(case, a, y, x):
    """The reference with the taps reading at (y, x) instead."""
    gy, gx = grid_points(case)
    offset = np.stack([y - gy, x - gx], axis=3).reshape(a.offset.shape)
    return reference(a, offset=offset)


def _masked(case, a, keep):
    """The reference with the taps where ``keep`` is False switched off."""
    mask = np.ones(keep.shape) if a.mask is None else a.mask.reshape(keep.shape)
    return reference(a, mask=(mask * keep).reshape(a.input.shape[0], -1, *case.out_size))


def _nan_where(case, a, bad):
    """The reference, with NaN at every output that a tap where ``bad`` (N, G, K, H_out,
    W_out) reaches: that tap's output pixel, in every output channel whose input channels
    include the tap's offset group."""
    out = reference(a)
    C_in, C_out, G = case.in_channels, case.out_channels, case.offset_groups
    in_per_group, out_per_group = C_in // case.groups, C_out // case.groups
    bad_pixel = bad.any(axis=2)                                       # (N, G, H_out, W_out)
    for co in range(C_out):
        first = (co // out_per_group) * in_per_group
        groups = sorted({c // (C_in // G) for c in range(first, first + in_per_group)})
        out[:, co][bad_pixel[:, groups].any(axis=1)] = np.nan
    return out


def _swapped(case, a):
    N = a.input.shape[0]
    offset = a.offset.reshape(N, -1, 2, *case.out_size)[:, :, ::-1]
    return reference(a, offset=offset.reshape(a.offset.shape))


def _clamped(case, a):
    y, x = _sample_points(case, a)
    return _with_points(case, a, np.clip(y, 0, case.height - 1), np.clip(x, 0, case.width - 1))


def _low_band(case, a):
    y, x = _sample_points(case, a)
    with np.errstate(invalid="ignore"):
        return _masked(case, a, ~(((-1 < y) & (y < 0)) | ((-1 < x) & (x < 0))))


def _clamp_high(y, size):
    with np.errstate(invalid="ignore"):
        return np.where((size - 1 < y) & (y < size), size - 1, y)


def _high_band(case, a):
    y, x = _sample_points(case, a)
    return _with_points(case, a, _clamp_high(y, case.height), _clamp_high(x, case.width))


def _both_bands(case, a):
    y, x = _sample_points(case, a)
    with np.errstate(invalid="ignore"):
        keep = ~(((-1 < y) & (y < 0)) | ((-1 < x) & (x < 0)))
    gy, gx = grid_points(case)
    y, x = _clamp_high(y, case.height), _clamp_high(x, case.width)
    offset = np.stack([y - gy, x - gx], axis=3).reshape(a.offset.shape)
    mask = np.ones(keep.shape) if a.mask is None else a.mask.reshape(keep.shape)
    return reference(a, offset=offset,
                     mask=(mask * keep).reshape(a.input.shape[0], -1, *case.out_size))


def _offset_shape(case, a):
    return (a.input.shape[0], case.offset_groups, case.kernel_size[0] * case.kernel_size[1],
            2, *case.out_size)


def _nan_offset(case, a):
    bad = np.isnan(a.offset.reshape(_offset_shape(case, a))).any(axis=3)
    return _nan_where(case, a, bad) if bad.any() else None


def _nonfinite_offset(case, a):
    bad = ~np.isfinite(a.offset.reshape(_offset_shape(case, a))).all(axis=3)
    return _nan_where(case, a, bad) if bad.any() else None


def _nan_mask(case, a, inside_only=False):
    if a.mask is None or not np.isnan(a.mask).any():
        return None
    shape = _offset_shape(case, a)
    bad = np.isnan(a.mask.reshape(shape[:3] + shape[4:]))
    if inside_only:
        y, x = _sample_points(case, a)
        with np.errstate(invalid="ignore"):
            bad &= (-1 < y) & (y < case.height) & (-1 < x) & (x < case.width)
    return _nan_where(case, a, bad)


def _no_mask(case, a):
    return None if a.mask is None else ops.deform_conv2d(
        a.input, a.offset, a.weight, a.bias, a.stride, a.padding, a.dilation)


def _no_bias(case, a):
    return None if a.bias is None else ops.deform_conv2d(
        a.input, a.offset, a.weight, None, a.stride, a.padding, a.dilation, a.mask)


#: The forward rules, simplest first (a rule that is two others together comes after them).
FORWARD_RULES = (
    Rule("coordinate order: (dx, dy) swapped", _swapped),
    Rule("border band: samples in (-1, 0) dropped", _low_band),
    Rule("border band: samples in (H-1, H) read on the last row (and in (W-1, W) on the last "
         "column)", _high_band),
    Rule("border bands: samples in (-1, 0) dropped, in (H-1, H) read on the last row "
         "(OpenVINO's bilinear_interpolation_pad=False)", _both_bands),
    Rule("clamped border: sample points clamped into the image", _clamped),
    Rule("NaN offset -> NaN", _nan_offset),
    Rule("inf or NaN offset -> NaN", _nonfinite_offset),
    Rule("NaN mask -> NaN", _nan_mask),
    Rule("NaN mask -> NaN where its sample point is inside (-1, H) x (-1, W), 0 outside",
         lambda case, a: _nan_mask(case, a, inside_only=True)),
    Rule("mask ignored", _no_mask),
    Rule("bias ignored", _no_bias),
    Rule("float32 arithmetic on float64 inputs", lambda case, a: reference(a), loose=True),
)


# -- gradients ------------------------------------------------------------------------------

def _left_derivative(case, a, grad_output):
    # a point a hair below an integer coordinate reads the cell below it: the derivative
    # there is the left one (elsewhere the shift changes nothing measurable)
    return reference_grads(a, grad_output, offset=a.offset - 1e-12)


def _grads_swapped(case, a, grad_output):
    grads = list(reference_grads(a, grad_output))
    N = a.input.shape[0]
    grads[1] = grads[1].reshape(N, -1, 2, *case.out_size)[:, :, ::-1].reshape(a.offset.shape)
    return tuple(grads)


def _no_offset_grad(case, a, grad_output):
    grads = list(reference_grads(a, grad_output))
    grads[1] = np.zeros_like(grads[1])
    return tuple(grads)


def _nan_offset_grads(case, a, grad_output, other):
    """The reference's gradients with the offset gradient NaN where the offset is not
    finite (``other``: at the other coordinate of its (dy, dx) pair instead)."""
    bad = ~np.isfinite(a.offset)
    if not bad.any():
        return None
    if other:
        pairs = bad.reshape(a.offset.shape[0], -1, 2, *case.out_size)
        bad = pairs[:, :, ::-1].reshape(a.offset.shape)
    grads = list(reference_grads(a, grad_output))
    grads[1] = np.where(bad, np.nan, grads[1])
    return tuple(grads)


GRADIENT_RULES = (
    Rule("kink: left derivative at integer coordinates", _left_derivative),
    Rule("offset gradient: (dx, dy) swapped", _grads_swapped),
    Rule("offset gradient missing (zero)", _no_offset_grad),
    Rule("inf or NaN offset -> NaN gradient for that offset",
         lambda case, a, grad_output: _nan_offset_grads(case, a, grad_output, other=False)),
    Rule("inf or NaN offset -> NaN gradient for the other coordinate of its (dy, dx) pair",
         lambda case, a, grad_output: _nan_offset_grads(case, a, grad_output, other=True)),
    Rule("float32 arithmetic on float64 inputs",
         lambda case, a, grad_output: reference_grads(a, grad_output), loose=True),
)


# -- comparing and explaining ---------------------------------------------------------------

def max_error(got, expected):
    """The largest |got - expected| over the scale of ``expected`` (its largest finite
    magnitude, at least 1); inf where one is NaN (or inf) and the other is not."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return np.inf
    if got.size == 0:
        return 0.0
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max(initial=0.0)))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - expected) / scale)
    return float(np.nan_to_num(diff, nan=np.inf).max())


def _close(got, expected, tol):
    """Elementwise: got agrees with expected (NaN with NaN, equal infs)."""
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max(initial=0.0)))
    with np.errstate(invalid="ignore"):
        return (got == expected) | (np.isnan(got) & np.isnan(expected)) | (
            np.abs(got - expected) <= tol * scale)


def explain(rules, compute_args, got, expected, tol, loose_tol):
    """Which rule reproduces ``got`` where it departs from ``expected``.

    Parameters
    ----------
    rules : sequence of Rule
    compute_args : tuple
        What each rule's ``compute`` takes.
    got, expected : tuple of ndarray
        The implementation's numbers and the reference's (an output, or gradients).
    tol, loose_tol : float
        The tolerance of the case's dtype, and float32's (for the rules marked ``loose``).

    Returns
    -------
    Explanation
        The first rule that reproduces every number (whole=True), else the first that
        reproduces the first differing one, else rule None.
    """
    got = [np.asarray(g, np.float64) for g in got]
    flat_got = np.concatenate([g.ravel() for g in got])
    flat_expected = np.concatenate([np.asarray(e, np.float64).ravel() for e in expected])
    differs = ~np.concatenate([_close(g, np.asarray(e, np.float64), tol).ravel()
                               for g, e in zip(got, expected)])
    first = int(np.argmax(differs))
    found = partial(Explanation, whole=True, where=_index(first, [g.shape for g in got]),
                    got=flat_got[first], expected=flat_expected[first])
    computed = [(rule, rule.compute(*compute_args)) for rule in rules]
    computed = [(rule, c if isinstance(c, tuple) else (c,)) for rule, c in computed
                if c is not None]
    first_only = None
    # every rule at the case's tolerance; then, as a float64 case computed in float32
    # would need, each at float32's
    for rule_tol, suffix in ((tol, ""), (loose_tol, ", in float32 arithmetic")):
        for rule, numbers in computed:
            close = np.concatenate([
                _close(g, np.asarray(c, np.float64), loose_tol if rule.loose else rule_tol).ravel()
                for g, c in zip(got, numbers)])
            name = rule.name + ("" if rule.loose else suffix)
            if close.all():
                return found(rule=name)
            if first_only is None and close[first]:
                first_only = name
        if loose_tol <= tol:
            break
    return found(rule=first_only, whole=False)


def _index(flat, shapes):
    """(which array, its index) of element ``flat`` of arrays of ``shapes`` laid end to end."""
    for which, shape in enumerate(shapes):
        size = int(np.prod(shape))
        if flat < size:
            return (which,) + tuple(int(i) for i in np.unravel_index(flat, shape))
        flat -= size
    raise IndexError(flat)
