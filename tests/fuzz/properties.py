"""The fuzz properties, written once for every family of ``families.FAMILIES``.

``tests_for(family)`` returns the family's Hypothesis tests (plain functions that run
their examples when called):

valid      a valid call, in random memory layouts (Fortran order, negative strides,
           broadcast views, read-only arrays), float32 or float64, with hostile
           positions (NaN, +-inf, huge, denormal), NaN and zero masks and extreme scalars
           (gamma 1e308, spatial_scale 1e-300, ...): the op and its backward run; the
           results equal those of C-contiguous copies bit for bit; no input is modified;
           when every input but the positions is finite, the outputs are finite and the
           gradients free of NaN (a gradient that truly exceeds the float range may be
           +-inf); a non-finite position gives exactly what a far-outside one gives.
reference  a valid float64 call equals the loop reference (relative error 1e-9), hostile
           positions and NaN masks included.
invalid    a valid call with one argument broken (rank, dtype, shape, None, a string,
           a non-finite or huge number): a ValueError or TypeError whose message starts
           with the name of an argument, or, where the change happens to leave the call
           valid, a result.

Before each example the case is written to the file named by ``DCN_FUZZ_TRACE`` (when
set), so that a crash of the process leaves its reproducer behind.
"""
import collections
import inspect
import os

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from dcn_ref.gradcheck import rel_error

# -- helpers ------------------------------------------------------------------------------

#: examples run per property in this process (the child prints them)
COUNTS = collections.Counter()


def trace(family, kind, case):
    COUNTS[kind.split()[0]] += 1
    path = os.environ.get("DCN_FUZZ_TRACE")
    if path:
        with open(path, "w") as f:
            f.write(f"{family.name} {kind}:\n{describe(case)}\n")
    note(describe(case))


def describe(case):
    """A case as Python that rebuilds it (arrays written out in full: they are small)."""
    with np.printoptions(threshold=10 ** 6, precision=17, floatmode="unique"):
        parts = []
        for k, v in case.items():
            if isinstance(v, np.ndarray):
                parts.append(f"{k}=np.array({np.asarray(v).tolist()!r}, dtype=np.{v.dtype.name})"
                             f".reshape({v.shape})")
            else:
                parts.append(f"{k}={v!r}")
        return "dict(" + ", ".join(parts) + ")"


def arrays_of(case):
    return {k: v for k, v in case.items() if isinstance(v, np.ndarray)}


def as_tuple(result):
    return tuple(result) if isinstance(result, tuple) else (result,)


def assert_same(a, b, what):
    """Bitwise equal, NaN where NaN, both None or neither."""
    assert (a is None) == (b is None), what
    if a is not None:
        assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
        if not np.array_equal(a, b, equal_nan=True):
            where = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))[:5]
            raise AssertionError(f"{what}: differs at flat {where.tolist()}: "
                                 f"{a.reshape(-1)[where].tolist()} vs {b.reshape(-1)[where].tolist()}")


def assert_all_same(results, expected, what):
    for i, (a, b) in enumerate(zip(results, expected)):
        assert_same(a, b, f"{what}[{i}]")


def run(family, case, grad_output):
    out = family.forward(**case)
    grads = family.backward(grad_output, **case) if grad_output is not None else None
    return out, grads


def grad_for(family, case, rng):
    shape = np.shape(family.forward(**case))
    dtype = case[next(iter(arrays_of(case)))].dtype
    return rng.standard_normal(shape).astype(dtype)


LAYOUTS = ["c", "fortran", "negative strides", "read-only", "broadcast"]


def relayout(a, how):
    """``a`` in another memory layout, equal in value (broadcast: a view of its first row
    along axis 0, so the values change to that row repeated)."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative strides":
        flipped = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
        return flipped[(slice(None, None, -1),) * a.ndim]
    if how == "read-only":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how == "broadcast" and a.ndim and a.shape[0] > 1:
        return np.broadcast_to(a[:1], a.shape)
    return a


# -- the properties -----------------------------------------------------------------------

def tests_for(family):
    """The Hypothesis tests of ``family``: {"valid": fn, "reference": fn, "invalid": fn}."""

    @given(st.data())
    def valid(data):
        dtype = data.draw(st.sampled_from([np.float64, np.float32]), "dtype")
        hostile = data.draw(st.sampled_from([0.0, 0.3, 1.0]), "hostile fraction")
        case = data.draw(st.composite(lambda draw: family.draw_case(draw, dtype, hostile))())
        layouts = {k: data.draw(st.sampled_from(LAYOUTS), f"layout of {k}") for k in arrays_of(case)}
        case = {k: relayout(v, layouts[k]) if k in layouts else v for k, v in case.items()}
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), "grad seed"))
        trace(family, "valid", case)
        copies = {k: v.copy() for k, v in arrays_of(case).items()}
        grad_output = grad_for(family, case, rng)
        grad_copy = grad_output.copy()
        out, grads = run(family, case, grad_output)
        for k, v in arrays_of(case).items():
            assert_same(v, copies[k], f"input {k} was modified")
        assert_same(grad_output, grad_copy, "grad_output was modified")
        # the same call on C-contiguous, writable copies: the same bits
        out_c, grads_c = run(family, dict(case, **copies), grad_copy)
        assert_same(out, out_c, "out vs C-contiguous")
        assert_all_same(as_tuple(grads), as_tuple(grads_c), "grads vs C-contiguous")
        for name, g in zip(getattr(grads, "_fields", ()), grads):
            if name in case and g is not None:
                assert g.shape == case[name].shape and g.dtype == case[name].dtype, name
        # positions may be anything: NaN and +-inf read 0 or the edge
        finite = all(np.isfinite(v).all() for k, v in arrays_of(case).items()
                     if k not in family.positions)
        if finite:
            assert np.isfinite(out).all(), "a non-finite output from finite inputs"
            for name, g in zip(getattr(grads, "_fields", ()), grads):
                # a huge gamma can overflow a true gradient to inf; never to NaN
                assert g is None or not np.isnan(g).any(), f"NaN gradient of {name}"
        # non-finite positions act as far outside
        if family.positions and family.far_ok(case):
            far_case = dict(case)
            changed = False
            for name in family.positions:
                p = case.get(name)
                if p is None or np.isfinite(p).all():
                    continue
                big = np.asarray(1e300 if p.dtype == np.float64 else 1e30, p.dtype)
                # NaN acts as far outside, except where "border" padding clamps +-inf onto
                # the edge: there NaN reads nothing (it stays NaN in both calls)
                nan = np.isnan(p) if family.nan_is_far(case) else np.zeros(p.shape, bool)
                far_case[name] = np.where(nan | (p == np.inf), big,
                                          np.where(p == -np.inf, -big, p)).astype(p.dtype)
                changed = True
            if changed:
                out_far, grads_far = run(family, far_case, grad_output)
                assert_same(out, out_far, "a non-finite position vs a far one: out")
                assert_all_same(as_tuple(grads), as_tuple(grads_far),
                                "a non-finite position vs a far one: grads")

    @given(st.data())
    def reference(data):
        hostile = data.draw(st.sampled_from([0.0, 0.3]), "hostile fraction")   # < EXTREME
        case = data.draw(st.composite(lambda draw: family.draw_case(draw, np.float64, hostile))())
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), "grad seed"))
        trace(family, "reference", case)
        grad_output = grad_for(family, case, rng)
        out, grads = run(family, case, grad_output)
        loop_forward, loop_backward = family.reference
        with np.errstate(over="ignore", invalid="ignore"):
            loop_out = loop_forward(**case)
            loop_grads = loop_backward(grad_output, **case)
        err = rel_error(out, loop_out)
        assert err <= 1e-9, f"out: relative error {err} vs the loops"
        for name, a, b in zip(loop_grads._fields, as_tuple(grads), as_tuple(loop_grads)):
            assert (a is None) == (b is None), name
            if a is not None:
                if not (np.isfinite(a).all() and np.isfinite(b).all()):
                    assert_same(a, b.astype(a.dtype), f"gradient of {name} (non-finite)")
                    continue
                err = rel_error(a, b)
                assert err <= 1e-9, f"gradient of {name}: relative error {err} vs the loops"

    @given(st.data())
    def invalid(data):
        dtype = data.draw(st.sampled_from([np.float64, np.float32]), "dtype")
        case = data.draw(st.composite(lambda draw: family.draw_case(draw, dtype, 0.3))())
        rng = np.random.default_rng(0)
        grad_output = grad_for(family, case, rng)
        names = [k for k in case] + ["grad_output"]
        name = data.draw(st.sampled_from(names), "argument to break")
        value = case[name] if name != "grad_output" else grad_output
        broken, surely = data.draw(breakage(value), "broken value")
        if name == "grad_output":
            grad_output = broken
        else:
            case = dict(case, **{name: broken})
        trace(family, f"invalid ({name} broken, grad_output {describe({'g': grad_output})})", case)
        allowed = set(inspect.signature(family.forward).parameters) | {"grad_output"}
        allowed |= set(inspect.signature(family.backward).parameters)
        calls = [lambda: family.backward(grad_output, **case)]
        if name != "grad_output":
            calls.insert(0, lambda: family.forward(**case))
        for call in calls:
            try:
                call()
            except (ValueError, TypeError) as exc:
                message = str(exc)
                named = message.split(":")[0]
                assert named in allowed, f"{type(exc).__name__} names no argument: {message}"
                assert "\n" not in message and len(message) < 2000, message
            else:
                assert not surely, f"{name} = {broken!r} was accepted"

    return {"valid": valid, "reference": reference, "invalid": invalid}


@st.composite
def breakage(draw, value):
    """(a broken version of ``value``, whether it is surely invalid)."""
    with np.errstate(all="ignore"):           # casts of hostile values overflow, by design
        return _breakage(draw, value)


def _breakage(draw, value):
    if isinstance(value, np.ndarray):
        how = draw(st.sampled_from(["rank+", "rank-", "int", "complex", "bool", "object", "other float",
                                    "shape", "string", "list", "ragged", "hostile values"]))
        if how == "hostile values":     # NaN, inf, 1e308, denormals: RoIs, sizes, anything
            hostile = value.copy()
            if hostile.size:
                flat = hostile.reshape(-1)
                picks = draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=4))
                for i in picks:
                    flat[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 3e38,
                                                    -3e9, 5e-324, 2.0 ** 31, 1e15]))
            return hostile, False
        if how == "rank+":
            return value[..., None], True
        if how == "rank-":
            return (value.sum(axis=-1) if value.ndim > 1 else np.float64(1.0)), True
        if how == "int":
            return np.zeros(value.shape, np.int64), True
        if how == "complex":
            return value.astype(np.complex128), True
        if how == "bool":
            return value != 0, True
        if how == "object":
            return value.astype(object), True
        if how == "other float":   # refused where another array sets the dtype
            return value.astype(np.float32 if value.dtype == np.float64 else np.float64), False
        if how == "shape":
            axis = draw(st.integers(0, value.ndim - 1))
            shape = list(value.shape)
            shape[axis] += draw(st.sampled_from([1, 2]))
            return np.zeros(shape, value.dtype), False
        if how == "string":
            return "not an array", True
        if how == "list":
            return value.tolist(), False
        return [[1.0, 2.0], [3.0]], True
    if value is None:
        return draw(st.sampled_from([np.zeros((1,)), "x", 3])), False
    if isinstance(value, str):
        return draw(st.sampled_from(["", "reflect", "ZEROS", [], None, 0])), True
    bad = draw(st.sampled_from([-1, 0, 2 ** 63, 2 ** 40, -2 ** 63, 1.5, float("nan"), float("inf"),
                                -float("inf"), 1e308, True, "2", None, [], (1, 2, 3), (1,),
                                np.float64(2.0), np.int64(-3), np.array([1, 0])]))
    return bad, False
