"""The fuzz properties of the PyTorch bridge (``dcn_ref.torch``), written once for the op
families of ``families.FAMILIES`` that the bridge offers (``BRIDGE``); their reference is
the NumPy op of the same family.

``tests_for(family)`` returns the family's Hypothesis tests:

bridge-valid    a valid call (the family's own draw) as torch tensors, float64, float32,
                float16 or bfloat16 (a half-precision call is drawn in float32 and its
                tensors rounded), all on the CPU, all on the meta device, or one on meta
                among CPU tensors;
                each tensor in a random memory layout (contiguous, channels last, a
                transposed copy's transposed view, an expanded view), a random subset
                requiring grad; the scalars in random valid types (ints or NumPy ints,
                pairs as tuples, lists or one int, floats or NumPy floats, bools or NumPy
                bools). On the CPU the result and the gradients equal those of the NumPy op
                on the same values bit for bit (so no uninitialised memory, no silent
                zeros; in half precision: the NumPy op's in float32 on the values the
                tensors hold, rounded to the dtype, the tolerance of the dtype being its
                rounding), no input is modified, and deform_conv2d equals torchvision's
                (float64, finite inputs); on meta the result and gradients are meta tensors
                of the NumPy op's shapes and of the call's dtype; with mixed devices, an
                ArgumentError naming a tensor and both devices.
bridge-invalid  a valid call in one of the four dtypes with one argument broken (a tensor
                of another dtype: float16, bfloat16, int, bool or another float; a wrong
                rank or shape, not a tensor, a tensor on meta among CPU tensors, None; a
                scalar of another type or out of range), on the CPU or on meta: an
                ArgumentError (a ValueError and a RuntimeError) whose message starts with an
                argument's name, or, where the NumPy op accepts the same arguments (in
                float32, for a half-precision call), its result (rounded). Never a result
                where the NumPy op refuses, and never a refusal where it accepts, except for
                what only the bridge refuses (a dtype the NumPy op does not take, not a
                tensor, mixed devices). On meta, the checks that read the values of ``rois``
                cannot run (there are none).
"""
import inspect

import numpy as np
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

import dcn_ref.torch as dt
from dcn_ref.gradcheck import rel_error
from properties import arrays_of, trace

#: the families the bridge offers (``dcn_ref.torch.<name>``)
BRIDGE = ["bilinear_sample", "offset_sample", "deform_conv2d", "deform_roi_pool",
          "deform_psroi_pool", "dcnv3", "dcnv4"]

LAYOUTS = ["contiguous", "channels last", "transposed", "expanded"]

#: the dtypes of a call: the NumPy op's own, and the half-precision ones the bridge computes
#: in float32 (their cases are drawn in float32)
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
HALF = (torch.float16, torch.bfloat16)

#: refusals of the NumPy op that read the values of rois, which meta tensors do not have
DATA_CHECKS = ("rois: expected finite", "rois: expected at most", "rois: expected batch",
               "rois: expected x2")


# -- tensors and scalars --------------------------------------------------------------------

def relayout(t, how):
    """``t`` in another memory layout, equal in value (expanded: its first entry along
    axis 0 repeated, a view with stride 0)."""
    if how == "channels last" and t.ndim == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if how == "transposed" and t.ndim >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if how == "expanded" and t.ndim and t.shape[0] > 1:
        return t[:1].expand(t.shape)
    return t


def spellings(value):
    """The valid ways of passing a scalar argument of a valid case."""
    if isinstance(value, bool):
        return [value, np.bool_(value)]
    if isinstance(value, int):
        return [value, np.int64(value)]
    if isinstance(value, float):
        return [value, np.float64(value)] + ([int(value)] if value.is_integer() and abs(value) < 2 ** 53 else [])
    if isinstance(value, tuple) and len(value) == 2:
        return [value, list(value), tuple(np.int64(v) for v in value)] + (
            [value[0]] if value[0] == value[1] else [])
    return [value]


def numpy_dtype(dtype):
    """The NumPy dtype a call in the torch ``dtype`` is drawn and computed in."""
    return np.float64 if dtype == torch.float64 else np.float32


def as_numpy(t):
    """The values of a CPU tensor as a C-contiguous array (a copy); half-precision values in
    float32, which holds them exactly."""
    t = t.detach()
    return np.array(t.float() if t.dtype in HALF else t)


def held(a, dtype):
    """The values the array ``a`` has as a tensor of ``dtype`` (rounded to it), as
    ``as_numpy`` gives them back."""
    return as_numpy(torch.tensor(a).to(dtype))


def ops_call(family, case):
    """(result, None) of the NumPy op, or (None, message) where it refuses."""
    try:
        return family.forward(**case), None
    except (ValueError, TypeError) as exc:
        return None, str(exc)


def assert_named(exc, allowed):
    message = str(exc)
    assert isinstance(exc, ValueError) and isinstance(exc, RuntimeError), type(exc)
    assert message.split(":")[0] in allowed, f"names no argument: {message}"
    assert "\n" not in message and len(message) < 2000, message


def assert_bits(out, expected, what):
    assert out.shape == expected.shape and out.dtype == expected.dtype, (what, out.shape, expected.shape)
    assert np.array_equal(out, expected, equal_nan=True), f"{what} differs from the NumPy op's"


# -- the properties -------------------------------------------------------------------------

def tests_for(family):
    """{"bridge-valid": fn, "bridge-invalid": fn} for ``family``."""
    fn = getattr(dt, family.name)
    allowed = set(inspect.signature(fn).parameters) | {"grad_output"}

    @given(st.data())
    def valid(data):
        dtype = DTYPES[data.draw(st.sampled_from(list(DTYPES)), "dtype")]
        hostile = data.draw(st.sampled_from([0.0, 0.3]), "hostile fraction")
        case = data.draw(st.composite(
            lambda draw: family.draw_case(draw, numpy_dtype(dtype), hostile))())
        arrays = arrays_of(case)
        device = data.draw(st.sampled_from(["cpu", "meta", "mixed"]), "devices")
        meta_one = data.draw(st.sampled_from(sorted(arrays)), "the one on meta") if device == "mixed" else None
        grads = {k for k in arrays                      # all but rois are differentiable
                 if k != "rois" and data.draw(st.booleans(), f"{k} requires grad")}
        layouts = {k: data.draw(st.sampled_from(LAYOUTS), f"layout of {k}") for k in arrays}
        scalars = {k: data.draw(st.sampled_from(spellings(v)), f"{k} spelled")
                   for k, v in case.items() if k not in arrays}
        trace(family, "bridge-valid", dict(case, torch=f"{dtype}, devices {device} ({meta_one} "
                                           f"on meta), layouts {layouts}, grad {sorted(grads)}, "
                                           f"scalars {scalars}"))
        bases = {k: torch.tensor(v, dtype=dtype, requires_grad=k in grads,
                                 device="meta" if device == "meta" or k == meta_one else "cpu")
                 for k, v in arrays.items()}
        tensors = {k: relayout(t, layouts[k]) for k, t in bases.items()}
        call = dict(case, **scalars, **tensors)
        if device == "mixed":
            try:
                fn(**call)
            except dt.ArgumentError as exc:
                assert_named(exc, allowed)
                assert "meta" in str(exc) and "cpu" in str(exc), str(exc)
                return
            raise AssertionError("a meta tensor among CPU tensors was accepted")
        out = fn(**call)
        # the NumPy op on the same values (an expanded view repeats its first entry; a
        # half-precision one holds rounded values, which float32 holds exactly)
        same = {k: as_numpy(t) if device == "cpu" else case[k] for k, t in tensors.items()}
        expected = family.forward(**dict(case, **same))
        wrt = sorted(grads)
        grad_output = np.random.default_rng(0).standard_normal(expected.shape)
        grad_output = grad_output.astype(numpy_dtype(dtype))
        got_grads = []
        if wrt:
            g = torch.tensor(grad_output, dtype=dtype, device=out.device)
            got_grads = torch.autograd.grad(out, [tensors[k] for k in wrt], g, allow_unused=True)
        assert out.dtype == dtype and all(g is None or g.dtype == dtype for g in got_grads)
        if device == "meta":
            assert out.device.type == "meta" and tuple(out.shape) == expected.shape
            for k, g in zip(wrt, got_grads):
                assert g.device.type == "meta" and g.shape == tensors[k].shape, k
            return
        assert_bits(as_numpy(out), held(expected, dtype), "out")
        if wrt:
            ours = family.backward(held(grad_output, dtype), **dict(case, **same))
            for k, g in zip(wrt, got_grads):
                assert g is not None, f"no gradient of {k}"
                assert_bits(as_numpy(g), held(getattr(ours, k), dtype), f"gradient of {k}")
        for k, t in bases.items():
            assert_bits(as_numpy(t), held(case[k], dtype), f"input {k} after the call")
        if family.name == "deform_conv2d" and dtype == torch.float64 and hostile == 0.0:
            theirs = torchvision.ops.deform_conv2d(**{k: tensors.get(k, case[k]) for k in case})
            err = rel_error(out.detach().numpy(), theirs.detach().numpy())
            assert err <= 1e-10, f"torchvision differs: relative error {err}"

    @given(st.data())
    def invalid(data):
        dtype = DTYPES[data.draw(st.sampled_from(list(DTYPES)), "dtype")]
        case = data.draw(st.composite(
            lambda draw: family.draw_case(draw, numpy_dtype(dtype), 0.0))())
        device = data.draw(st.sampled_from(["cpu", "meta"]), "device")
        name = data.draw(st.sampled_from(sorted(case)), "argument to break")
        how, torch_value, numpy_value, bridge_only = data.draw(breakage(case[name], device, dtype),
                                                               "broken value")
        trace(family, f"bridge-invalid ({name}: {how})",
              dict(case, torch=f"{dtype}, device {device}, {name} broken: {how}"))
        arrays = arrays_of(case)
        tensors = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in arrays.items()}
        call = {**case, **tensors, name: torch_value}
        # the NumPy op on the values the tensors hold (float32 for a half-precision call)
        numpy_case = dict(case, **{k: held(v, dtype) for k, v in arrays.items()})
        numpy_case[name] = numpy_value
        expected, refusal = ops_call(family, numpy_case) if numpy_value is not NO_NUMPY else (None, "")
        try:
            out = fn(**call)
        except (ValueError, TypeError) as exc:
            assert_named(exc, allowed)
            assert refusal is not None or bridge_only, \
                f"refused what the NumPy op accepts: {exc}"
            return
        if refusal is not None:
            assert device == "meta" and refusal.startswith(DATA_CHECKS), \
                f"accepted what the NumPy op refuses: {refusal}"
            return
        assert out.dtype == dtype
        if device == "meta":
            assert out.device.type == "meta" and tuple(out.shape) == expected.shape
        else:
            assert_bits(as_numpy(out), held(expected, dtype), "out")

    return {"bridge-valid": valid, "bridge-invalid": invalid}


# -- broken arguments -----------------------------------------------------------------------

NO_NUMPY = object()        # a broken value the NumPy op has no counterpart of (bfloat16)

SCALARS = [-1, 0, 2 ** 63, 2 ** 40, -2 ** 63, 10 ** 400, 1.5, 2.5, float("nan"), float("inf"),
           1e308, True, False, "2", "a", None, [], (1, 2, 3), (1,), np.float64(2.0),
           np.int64(-3), np.array([1, 0])]


@st.composite
def breakage(draw, value, device, dtype):
    """(how, the broken value for the bridge, the same for the NumPy op, whether only the
    bridge refuses it), for an argument of a call in the torch ``dtype``."""
    if isinstance(value, np.ndarray):
        hows = [n for n in ("float16", "bfloat16") if DTYPES[n] != dtype] + [
            "int64", "bool", "other float", "rank+", "shape", "not a tensor", "list",
            "None"] + (["meta"] if device == "cpu" else [])
        how = draw(st.sampled_from(hows))
        if how == "bfloat16" or (dtype in HALF and how in ("float16", "other float")):
            # a tensor of another dtype than the others' that the NumPy op has no
            # counterpart of: float32 among half-precision tensors (which the op sees as
            # float32), or a half-precision dtype other than float16 among float32 ones
            other = DTYPES.get(how, torch.float32)
            return how, torch.tensor(value, device=device).to(other), NO_NUMPY, True
        if how in ("not a tensor", "list"):
            v = held(value, dtype) if how == "not a tensor" else held(value, dtype).tolist()
            return how, v, v, True
        if how == "None":
            return how, None, None, False
        if how == "meta":
            return how, torch.tensor(value, dtype=dtype, device="meta"), held(value, dtype), True
        if how in ("rank+", "shape"):
            if how == "rank+":
                broken = value[..., None]
            else:
                shape = list(value.shape)
                shape[draw(st.integers(0, value.ndim - 1))] += draw(st.sampled_from([1, 2]))
                broken = np.zeros(shape, value.dtype)
            return how, torch.tensor(broken, dtype=dtype, device=device), held(broken, dtype), False
        other = {"float16": np.float16, "int64": np.int64, "bool": np.bool_,
                 "other float": np.float32 if value.dtype == np.float64 else np.float64}[how]
        broken = value.astype(other)
        return how, torch.tensor(broken, device=device), broken, False
    if isinstance(value, str):
        bad = draw(st.sampled_from(["", "reflect", "ZEROS", [], None, 0, 1]))
    else:
        bad = draw(st.sampled_from(SCALARS))
    return repr(bad), bad, bad, False
