"""Gradient checks by centred finite differences.

A backward pass returns the vector-Jacobian product ``J^T g``: the gradient of the scalar
``sum(g * f(x))`` for a fixed random ``g``. ``numerical_vjp`` computes the same thing by
nudging one element of ``x`` at a time,

    d/dx_i sum(g * f(x)) ~ (sum(g * f(x + eps e_i)) - sum(g * f(x - eps e_i))) / (2 eps),

which is exact up to rounding for functions that are (bi)linear on [x_i - eps, x_i + eps],
as bilinear interpolation is inside a cell. Keep sample points further than ``eps`` from
integer coordinates, where the interpolation has kinks.
"""
import math
from typing import NamedTuple

import numpy as np


def numerical_vjp(f, x, grad_output, eps=1e-6):
    """Centred-difference gradient of ``sum(grad_output * f(x))`` with respect to ``x``.

    Parameters
    ----------
    f : callable taking an array shaped like ``x`` and returning an array shaped like
        ``grad_output``.
    x : ndarray (float64 recommended)
    grad_output : ndarray
    eps : float

    Returns
    -------
    ndarray shaped like ``x``, float64.
    """
    x = np.array(x, copy=True)
    flat = x.reshape(-1)
    grad = np.zeros(x.shape, np.float64)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = np.sum(grad_output * f(x), dtype=np.float64)
        flat[i] = saved - eps
        minus = np.sum(grad_output * f(x), dtype=np.float64)
        flat[i] = saved
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(a, b):
    """max |a - b| / max(max |a|, max |b|): an error relative to the gradient's scale.

    0 when both are all zeros; NaN anywhere gives NaN (a failure for any tolerance).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size == 0 and b.size == 0:
        return 0.0
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    diff = np.max(np.abs(a - b))
    if math.isnan(scale) or math.isnan(diff):
        return math.nan
    return 0.0 if scale == 0 else float(diff / scale)


class GradCheckRow(NamedTuple):
    op: str
    input: str
    max_rel_error: float
    passed: bool


def check_gradients(forward, backward, inputs, params=None, wrt=None, *, op=None, target=None,
                    eps=1e-6, tol=1e-6, seed=0):
    """Compare every gradient of ``backward`` with ``numerical_vjp`` of ``forward``.

    Parameters
    ----------
    forward, backward : an op and its ``*_backward`` (e.g. ``deform_conv2d`` and
        ``deform_conv2d_backward``).
    inputs : dict name -> ndarray or None, the op's array arguments (float64 recommended).
    params : dict of its other keyword arguments (stride, padding_mode, ...).
    wrt : names of the inputs to check; default: every gradient the backward returns.
    op : the name shown in the rows; default ``forward.__name__``.
    target : passed to both functions.

    Returns
    -------
    list of GradCheckRow(op, input, max_rel_error, passed), one per checked input.
    """
    params = dict(params or {})
    params["target"] = target
    out = forward(**inputs, **params)
    rng = np.random.default_rng(seed)
    grad_output = rng.standard_normal(out.shape).astype(out.dtype)
    analytic = backward(grad_output, **inputs, **params)
    if wrt is None:
        wrt = [name for name in analytic._fields if getattr(analytic, name) is not None]
    rows = []
    for name in wrt:
        def f(value, name=name):
            return forward(**{**inputs, name: value}, **params)

        numeric = numerical_vjp(f, inputs[name], grad_output, eps)
        err = rel_error(getattr(analytic, name), numeric)
        rows.append(GradCheckRow(op or forward.__name__, name, err, bool(err <= tol)))
    return rows


# -- the standard cases of `dcn-ref gradcheck` ------------------------------------------

def off_kink(rng, shape, low, high, margin=0.1):
    """Random values in [low, high) whose fractional part stays ``margin`` from integers."""
    whole = rng.integers(math.floor(low), math.ceil(high), size=shape)
    return whole + rng.uniform(margin, 1 - margin, size=shape)


def standard_cases(seed=0):
    """[(op name, forward, backward, inputs, params)]: one small float64 case per op and
    mode, with groups, offset groups, masks, strides and samples outside the image."""
    from . import ops

    rng = np.random.default_rng(seed)
    cases = []
    image = rng.standard_normal((2, 5, 6))
    coords = off_kink(rng, (2, 24, 2), -2.5, 7.5)
    for mode in ("zeros", "border"):
        cases.append((f"bilinear_sample[{mode}]", ops.bilinear_sample, ops.bilinear_sample_backward,
                      {"image": image, "coords": coords}, {"padding_mode": mode}))
    x = rng.standard_normal((2, 3, 5, 4))
    offset = off_kink(rng, (2, 6, 5, 4), -3, 3)
    for mode in ("border", "zeros"):
        cases.append((f"offset_sample[{mode}]", ops.offset_sample, ops.offset_sample_backward,
                      {"input": x, "offset": offset}, {"padding_mode": mode}))
    x = rng.standard_normal((2, 4, 6, 5))
    weight = rng.standard_normal((6, 2, 3, 2))
    bias = rng.standard_normal(6)
    conv = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}
    cases.append(("conv2d", ops.conv2d, ops.conv2d_backward,
                  {"input": x, "weight": weight, "bias": bias}, {**conv, "groups": 2}))
    out_h, out_w = ops.conv2d(x, weight, None, groups=2, **conv).shape[2:]
    G, K = 2, 6
    offset = off_kink(rng, (2, 2 * G * K, out_h, out_w), -2.5, 2.5)
    mask = rng.uniform(0.2, 1.0, (2, G * K, out_h, out_w))
    cases.append(("deform_conv2d[v1]", ops.deform_conv2d, ops.deform_conv2d_backward,
                  {"input": x, "offset": offset, "weight": weight, "bias": bias}, conv))
    cases.append(("deform_conv2d[v2]", ops.deform_conv2d, ops.deform_conv2d_backward,
                  {"input": x, "offset": offset, "weight": weight, "bias": bias, "mask": mask},
                  conv))
    cases += _roi_cases(rng)
    return cases


def _roi_cases(rng):
    """The RoI pooling ops, with sample points kept off the kinks by construction."""
    from . import ops

    # 2x2 RoIs in 2x2 bins: bins 1 px wide, samples at x1 + j -/+ 0.25 + dx with x1 = k + 0.5
    # and |dx| = gamma * 2 * |offset| < 0.2. The last two RoIs stick out of the 5x6 image.
    rois = np.array([[0, 1.5, 0.5, 3.5, 2.5], [1, -1.5, 2.5, 0.5, 4.5], [1, 4.5, 3.5, 6.5, 5.5]])
    inputs = {"input": rng.standard_normal((2, 3, 5, 6)), "rois": rois,
              "offset": rng.uniform(-1, 1, (3, 2, 2, 2)), "mask": rng.uniform(0.2, 1, (3, 1, 2, 2))}
    cases = [("deform_roi_pool", ops.deform_roi_pool, ops.deform_roi_pool_backward, inputs,
              {"output_size": 2, "sampling_ratio": 2, "gamma": 0.1})]
    # whole-pixel RoIs 4 px wide: samples on half-integers (where samples start being
    # skipped) moved by trans_std * 4 * |trans|, between 0.04 and 0.2 px
    rois = np.array([[0, 1, 0, 4, 3], [1, -2, 1, 1, 4]], np.float64)
    trans = rng.uniform(0.1, 0.5, (2, 4, 2, 2)) * rng.choice([-1, 1], (2, 4, 2, 2))
    inputs = {"input": rng.standard_normal((2, 8, 5, 6)), "rois": rois, "trans": trans}
    cases.append(("deform_psroi_pool", ops.deform_psroi_pool, ops.deform_psroi_pool_backward,
                  inputs, {"output_dim": 2, "group_size": 2, "pooled_size": 2,
                           "sample_per_part": 2, "trans_std": 0.1}))
    return cases


def check_all(target="cpu", tol=1e-6, seed=0):
    """Run ``check_gradients`` on every standard case; a list of GradCheckRow."""
    rows = []
    for name, forward, backward, inputs, params in standard_cases(seed):
        rows += check_gradients(forward, backward, inputs, params, op=name, target=target, tol=tol)
    return rows


def format_table(rows):
    """The rows as a plain-text table."""
    lines = [f"{'op':<24} {'input':<8} {'max rel. error':>15}  result"]
    for r in rows:
        lines.append(f"{r.op:<24} {r.input:<8} {r.max_rel_error:>15.2e}  "
                     f"{'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)


# -- layers and models (dcn_ref.nn) ------------------------------------------------------

def numerical_entries(f, array, index, eps=1e-6):
    """Centred differences of the scalar ``f()`` with respect to ``array.flat[index]``.

    ``array`` (C-contiguous) is nudged in place, one entry at a time, and restored; ``f``
    reads it (a layer's parameter, or the input it is called with). Returns float64 (len(index),).
    """
    flat = array.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ValueError("array: expected a C-contiguous array (it is perturbed in place)")
    grad = np.zeros(len(index), np.float64)
    for n, i in enumerate(index):
        saved = flat[i]
        flat[i] = saved + eps
        plus = f()
        flat[i] = saved - eps
        minus = f()
        flat[i] = saved
        grad[n] = (plus - minus) / (2 * eps)
    return grad


def check_layer_gradients(layer, x, loss=None, labels=None, *, entries=None, eps=1e-6,
                          tol=1e-6, seed=0):
    """Compare a layer's (or a model's) backward with centred finite differences.

    The scalar is ``sum(g * layer.forward(x))`` for a fixed random ``g``, or, with ``loss``
    (e.g. SoftmaxCrossEntropy), ``loss.forward(layer.forward(x), labels)``, checking the
    loss's backward too. Use float64 parameters and input.

    Parameters
    ----------
    layer : a dcn_ref.nn Layer or Sequential; its mode (train/eval) is used as it is,
        and its parameters and state are restored afterwards.
    x : ndarray, the input.
    entries : None to check every entry of the input and of every parameter, or k to
        check k entries of each, drawn at random (for whole models, where every entry
        would take too long).
    eps, tol, seed : the step, the largest relative error that passes, the random seed.

    Returns
    -------
    list of GradCheckRow(op=layer name, input="input" or the parameter's name,
    max_rel_error, passed). The error is max |analytic - numeric| over the checked entries,
    over the largest |gradient| of the whole array (or of the numeric values if larger).
    """
    rng = np.random.default_rng(seed)
    saved_state = layer.state_dict()
    x = np.array(x, copy=True)
    out = layer.forward(x)
    if loss is None:
        g = rng.standard_normal(out.shape).astype(out.dtype)

        def scalar():
            return np.sum(g * layer.forward(x), dtype=np.float64)

        grad_x = layer.backward(g)
    else:
        def scalar():
            return loss.forward(layer.forward(x), labels)

        loss.forward(out, labels)
        grad_x = layer.backward(loss.backward())
    analytic = {"input": np.array(grad_x, copy=True)}
    analytic.update({k: v.copy() for k, v in layer.grads.items()})
    arrays = {"input": x, **layer.params}
    rows = []
    for name, array in arrays.items():
        index = (np.arange(array.size) if entries is None
                 else rng.choice(array.size, min(entries, array.size), replace=False))
        numeric = numerical_entries(scalar, array, index, eps)
        chosen = analytic[name].reshape(-1)[index]
        scale = max(np.max(np.abs(analytic[name])), np.max(np.abs(numeric)))
        diff = np.max(np.abs(chosen - numeric))
        err = math.nan if math.isnan(scale) or math.isnan(diff) else (
            0.0 if scale == 0 else float(diff / scale))
        rows.append(GradCheckRow(layer.name, name, err, bool(err <= tol)))
    layer.load_state_dict(saved_state)
    return rows
