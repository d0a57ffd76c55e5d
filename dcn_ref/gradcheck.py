"""Derivative checks by centred finite differences.

A backward pass returns the vector-Jacobian product ``J^T g``: the gradient of the scalar
``sum(g * f(x))`` for a fixed random ``g``. ``numerical_vjp`` computes the same thing by
nudging one element of ``x`` at a time,

    d/dx_i sum(g * f(x)) ~ (sum(g * f(x + eps e_i)) - sum(g * f(x - eps e_i))) / (2 eps),

which is exact up to rounding for functions that are (bi)linear on [x_i - eps, x_i + eps],
as bilinear interpolation is inside a cell. Keep sample points further than ``eps`` from
integer coordinates, where the interpolation has kinks.

The same differences check the next order: a forward mode ``f_jvp`` (the Jacobian-vector
product ``J d``) against ``(f(x + eps d) - f(x - eps d)) / (2 eps)`` for a random tangent
``d`` of one input at a time (``check_jvp``), and a double backward
``f_backward_backward`` against the gradient of ``sum(gg * f_backward(g, x))``, nudging
every element of ``g`` and of each input (``check_backward_backward``).
"""
import inspect
import math
from typing import NamedTuple

import numpy as np


def numerical_entries(f, array, index, eps=1e-6):
    """Centred differences of the scalar ``f()`` with respect to ``array.flat[index]``:
    the one finite-difference loop, under ``numerical_vjp`` and ``check_layer_gradients``.

    ``array`` (C-contiguous) is nudged in place, one entry at a time, and restored; ``f``
    reads it (a layer's parameter, or the input it is called with). Returns float64 (len(index),).
    """
    if not array.flags.c_contiguous:
        raise ValueError("array: expected a C-contiguous array (it is perturbed in place)")
    flat = array.reshape(-1)
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
    x = np.array(x, copy=True)      # C-contiguous, nudged in place by numerical_entries

    def scalar():
        return np.sum(grad_output * f(x), dtype=np.float64)

    return numerical_entries(scalar, x, np.arange(x.size), eps).reshape(x.shape)


def rel_error(a, b, scale=0.0):
    """max |a - b| / max(max |a|, max |b|, scale): an error relative to the gradient's scale.

    ``scale`` is for comparing a few entries of a gradient relative to the whole (the
    whole's max |entry|). 0 when both are all zeros; NaN anywhere gives NaN (a failure
    for any tolerance).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size == 0 and b.size == 0:
        return 0.0
    scale = max(scale, np.max(np.abs(a)), np.max(np.abs(b)))
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
    forward : callable
        An op, e.g. ``deform_conv2d``.
    backward : callable
        Its ``*_backward``, e.g. ``deform_conv2d_backward``.
    inputs : dict
        name -> ndarray or None: the op's array arguments (float64 recommended).
    params : dict or None
        Its other keyword arguments (stride, padding_mode, ...).
    wrt : list of str or None
        The names of the inputs to check; None: every gradient the backward returns.
    op : str or None
        The name shown in the rows; None: ``forward.__name__``.
    target : str or None
        Passed to both functions.
    eps : float
        The finite-difference step.
    tol : float
        The largest relative error that passes.
    seed : int
        Seeds the random ``grad_output``.

    Returns
    -------
    list of GradCheckRow(op, input, max_rel_error, passed), one per checked input.
    """
    return list(iter_gradient_checks(forward, backward, inputs, params, wrt, op=op,
                                     target=target, eps=eps, tol=tol, seed=seed))


def iter_gradient_checks(forward, backward, inputs, params=None, wrt=None, *, op=None,
                         target=None, eps=1e-6, tol=1e-6, seed=0):
    """``check_gradients`` as a generator: each row is yielded as soon as it is computed."""
    params = dict(params or {})
    params["target"] = target
    out = forward(**inputs, **params)
    rng = np.random.default_rng(seed)
    grad_output = rng.standard_normal(out.shape).astype(out.dtype)
    analytic = backward(grad_output, **inputs, **params)
    if wrt is None:
        wrt = [name for name in analytic._fields if getattr(analytic, name) is not None]
    for name in wrt:
        def f(value, name=name):
            return forward(**{**inputs, name: value}, **params)

        numeric = numerical_vjp(f, inputs[name], grad_output, eps)
        err = rel_error(getattr(analytic, name), numeric)
        yield GradCheckRow(op or forward.__name__, name, err, bool(err <= tol))


def check_jvp(forward, jvp, inputs, params=None, wrt=None, *, op=None, target=None, eps=1e-6,
              tol=1e-6, seed=0):
    """Compare an op's forward mode with centred differences of the op, one input at a time.

    For each checked input x, a random tangent d (standard normal, x's shape) is handed to
    ``jvp`` as the keyword ``<x>_dot`` (the other tangents None) and the result compared with
    ``(forward(x + eps d) - forward(x - eps d)) / (2 eps)``.

    Parameters
    ----------
    forward : callable
        An op, e.g. ``deform_conv2d``.
    jvp : callable
        Its forward mode, e.g. ``deform_conv2d_jvp``.
    inputs : dict
        name -> ndarray or None: the op's array arguments (float64 recommended).
    params : dict or None
        Its other keyword arguments.
    wrt : list of str or None
        The inputs to check; None: every input given whose tangent ``jvp`` takes.
    op : str or None
        The name shown in the rows; None: ``jvp.__name__``.
    target : str or None
        Passed to both functions.
    eps : float
        The finite-difference step.
    tol : float
        The largest relative error that passes.
    seed : int
        Seeds the random tangents.

    Returns
    -------
    list of GradCheckRow(op, input, max_rel_error, passed), one per checked input.
    """
    params = dict(params or {})
    params["target"] = target
    rng = np.random.default_rng(seed)
    takes = inspect.signature(jvp).parameters
    if wrt is None:
        wrt = [n for n, v in inputs.items() if v is not None and f"{n}_dot" in takes]
    rows = []
    for name in wrt:
        x = np.asarray(inputs[name])
        d = rng.standard_normal(x.shape).astype(x.dtype)
        plus = forward(**{**inputs, name: x + eps * d}, **params)
        minus = forward(**{**inputs, name: x - eps * d}, **params)
        numeric = (np.asarray(plus, np.float64) - minus) / (2 * eps)
        err = rel_error(jvp(**inputs, **params, **{f"{name}_dot": d}), numeric)
        rows.append(GradCheckRow(op or jvp.__name__, name, err, bool(err <= tol)))
    return rows


def check_backward_backward(forward, backward, backward_backward, inputs, params=None, *,
                            op=None, target=None, eps=1e-6, tol=1e-6, seed=0):
    """Compare an op's double backward with centred differences of its backward.

    With a random ``grad_output`` g and random cotangents gg of the backward's outputs
    (each shaped like its gradient), the scalar is ``S = sum over the fields of
    gg.<field> * f_backward(g, **inputs).<field>``; every element of g and of each input is
    nudged (``numerical_entries``) and dS compared with ``f_backward_backward(gg, g, ...)``.

    Parameters
    ----------
    forward : callable
        The op (for the shape of g).
    backward : callable
        Its backward, e.g. ``deform_conv2d_backward``.
    backward_backward : callable
        The backward's gradient, e.g. ``deform_conv2d_backward_backward``.
    inputs : dict
        name -> ndarray or None: the op's array arguments (float64 recommended).
    params : dict or None
        Its other keyword arguments.
    op : str or None
        The name shown in the rows; None: ``backward.__name__``.
    target : str or None
        Passed to every function.
    eps : float
        The finite-difference step.
    tol : float
        The largest relative error that passes.
    seed : int
        Seeds g and gg.

    Returns
    -------
    list of GradCheckRow(op, input, max_rel_error, passed): grad_output first, then every
    input the double backward returns a gradient for.
    """
    params = dict(params or {})
    params["target"] = target
    rng = np.random.default_rng(seed)
    out = forward(**inputs, **params)
    arguments = {"grad_output": rng.standard_normal(out.shape).astype(out.dtype), **inputs}
    grads = backward(**arguments, **params)
    gg = type(grads)(*(None if a is None else rng.standard_normal(a.shape).astype(a.dtype)
                       for a in grads))
    analytic = backward_backward(gg, **arguments, **params)
    rows = []
    for name in analytic._fields:
        if getattr(analytic, name) is None:
            continue
        x = np.array(arguments[name], copy=True)       # nudged in place by numerical_entries

        def scalar(x=x, name=name):
            result = backward(**{**arguments, name: x}, **params)
            return sum(np.sum(c * r, dtype=np.float64) for c, r in zip(gg, result)
                       if c is not None)

        numeric = numerical_entries(scalar, x, np.arange(x.size), eps).reshape(x.shape)
        err = rel_error(getattr(analytic, name), numeric)
        rows.append(GradCheckRow(op or backward.__name__, name, err, bool(err <= tol)))
    return rows


def off_kink(rng, shape, low, high, margin=0.1):
    """Random values in [low, high) whose fractional part stays ``margin`` from integers."""
    whole = rng.integers(math.floor(low), math.ceil(high), size=shape)
    return whole + rng.uniform(margin, 1 - margin, size=shape)


def table_header():
    """The header line of a table of GradCheckRow."""
    return f"{'op':<32} {'input':<12} {'max rel. error':>15}  result"


def format_row(row):
    """One GradCheckRow as a line of the table."""
    return (f"{row.op:<32} {row.input:<12} {row.max_rel_error:>15.2e}  "
            f"{'pass' if row.passed else 'FAIL'}")


def format_table(rows):
    """The rows as a plain-text table."""
    return "\n".join([table_header()] + [format_row(r) for r in rows])


# -- layers and models (dcn_ref.nn) ------------------------------------------------------

def check_layer_gradients(layer, x, loss=None, labels=None, *, entries=None, eps=1e-6,
                          tol=1e-6, seed=0):
    """Compare a layer's (or a model's) backward with centred finite differences.

    The scalar is ``sum(g * layer.forward(x))`` for a fixed random ``g``, or, with ``loss``
    (e.g. SoftmaxCrossEntropy), ``loss.forward(layer.forward(x), labels)``, checking the
    loss's backward too. Use float64 parameters and input.

    Parameters
    ----------
    layer : Layer
        A dcn_ref.nn Layer or Sequential; its mode (train/eval) is used as it is, and its
        parameters and state are restored afterwards.
    x : ndarray
        The input.
    loss : Layer or None
        E.g. SoftmaxCrossEntropy (see above).
    labels : ndarray or None
        The labels the loss takes.
    entries : int or None
        None to check every entry of the input and of every parameter, or k to check k
        entries of each, drawn at random (for whole models, where every entry would take too
        long).
    eps : float
        The finite-difference step.
    tol : float
        The largest relative error that passes.
    seed : int
        Seeds the random ``g`` and the drawn entries.

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
        err = rel_error(chosen, numeric, scale=np.max(np.abs(analytic[name])))
        rows.append(GradCheckRow(layer.name, name, err, bool(err <= tol)))
    layer.load_state_dict(saved_state)
    return rows
