"""dcnv3 and dcnv4 against the loop reference (float64 1e-10, float32 1e-4), every gradient
against centred finite differences, and hostile inputs (NaN, inf, huge offsets, NaN
weights, empty batches, images with no pixel, non-contiguous arrays, inputs left untouched)."""
import numpy as np
import pytest

from dcn_ref import ops
from dcn_ref import reference_dcnv3 as ref
from dcn_ref.gradcheck import check_gradients

from dcnv3_cases import dcnv3_case, pack
from helpers import assert_close, compare

CASES = {
    "3x2 kernel, stride (2, 1), dilation (1, 2), 2 groups, scale 0.5":
        dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), offset_scale=0.5),
    "3x3 remove_center, 3 groups of 2, scale 1.5":
        dict(kernel=(3, 3), group=3, group_channels=2, offset_scale=1.5, remove_center=True),
    "1x4 kernel, one group of 5, padding (0, 2), far points":
        dict(N=1, H=3, W=4, kernel=(1, 4), group=1, group_channels=5, padding=(0, 2), reach=6.0),
    "5x3 remove_center, stride 2, dilation 2, negative scale":
        dict(N=1, H=7, W=6, kernel=(5, 3), stride=(2, 2), padding=(2, 1), dilation=(2, 2),
             group=2, group_channels=1, offset_scale=-0.75, remove_center=True),
    # the CPU kernels take a group's channels eight at a time, then one by one
    "3x3, 2 groups of 19 (two lanes of eight and three more)":
        dict(N=1, H=5, W=5, kernel=(3, 3), group=2, group_channels=19),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dcnv3_equals_the_loop_reference(name):
    rng = np.random.default_rng(len(name))
    inputs, params = dcnv3_case(rng, **CASES[name])
    out = ops.dcnv3(**inputs, **params)
    assert_close(out, ref.dcnv3(**inputs, **params), 1e-10, "forward")
    g = rng.standard_normal(out.shape)
    grads = ops.dcnv3_backward(g, **inputs, **params)
    compare(grads, ref.dcnv3_backward(g, **inputs, **params), 1e-10, "backward")
    # the CPU is always deterministic: the flag is accepted and changes nothing
    compare(ops.dcnv3_backward(g, **inputs, **params, deterministic=True), grads, 0.0,
                  "deterministic=True")


@pytest.mark.parametrize("name", list(CASES)[:2])
def test_dcnv4_equals_the_loop_reference(name):
    rng = np.random.default_rng(len(name) + 1)
    inputs, params = dcnv3_case(rng, **CASES[name])
    offset_mask = pack(inputs["offset"], inputs["mask"], params["group"], extra=3, fill=0.5)
    out = ops.dcnv4(inputs["input"], offset_mask, **params)
    assert_close(out, ref.dcnv4(inputs["input"], offset_mask, **params), 1e-10, "forward")
    g = rng.standard_normal(out.shape)
    compare(ops.dcnv4_backward(g, inputs["input"], offset_mask, **params),
                  ref.dcnv4_backward(g, inputs["input"], offset_mask, **params), 1e-10, "backward")


@pytest.mark.parametrize("name", [list(CASES)[0], list(CASES)[4]])
def test_float32_equals_the_loop_reference(name):
    rng = np.random.default_rng(7)
    inputs, params = dcnv3_case(rng, **CASES[name], dtype=np.float32)
    out = ops.dcnv3(**inputs, **params)
    assert out.dtype == np.float32
    assert_close(out, ref.dcnv3(**{k: v.astype(np.float64) for k, v in inputs.items()}, **params),
                 1e-4, "forward")
    g = rng.standard_normal(out.shape).astype(np.float32)
    grads = ops.dcnv3_backward(g, **inputs, **params)
    expected = ref.dcnv3_backward(g.astype(np.float64),
                                  **{k: v.astype(np.float64) for k, v in inputs.items()}, **params)
    for name in grads._fields:
        assert getattr(grads, name).dtype == np.float32
        assert_close(getattr(grads, name), getattr(expected, name), 1e-4, name)


# -- gradients against centred differences ------------------------------------------------

def assert_all_pass(rows, names):
    assert [r.input for r in rows] == names
    failed = [f"{r.op}.{r.input} {r.max_rel_error:.2e}" for r in rows if not r.passed]
    assert not failed, "gradients off: " + ", ".join(failed)


@pytest.mark.parametrize("name", [list(CASES)[0], list(CASES)[3], list(CASES)[4]])
def test_dcnv3_gradients(name):
    rng = np.random.default_rng(len(name) + 2)
    inputs, params = dcnv3_case(rng, **CASES[name])
    rows = check_gradients(ops.dcnv3, ops.dcnv3_backward, inputs, params, tol=1e-6)
    assert_all_pass(rows, ["input", "offset", "mask"])


def test_dcnv4_gradients_including_the_padding_entries():
    rng = np.random.default_rng(11)
    inputs, params = dcnv3_case(rng, **CASES["3x3 remove_center, 3 groups of 2, scale 1.5"])
    offset_mask = pack(inputs["offset"], inputs["mask"], params["group"], extra=4, fill=0.3)
    rows = check_gradients(ops.dcnv4, ops.dcnv4_backward,
                           {"input": inputs["input"], "offset_mask": offset_mask}, params, tol=1e-6)
    assert_all_pass(rows, ["input", "offset_mask"])


# -- hostile inputs -----------------------------------------------------------------------

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e300, -3e9]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_inf_and_huge_offsets_and_nan_weights(dtype):
    rng = np.random.default_rng(3)
    inputs, params = dcnv3_case(rng, **CASES["3x2 kernel, stride (2, 1), dilation (1, 2), 2 groups, scale 0.5"])
    offset, mask = inputs["offset"], inputs["mask"]
    pairs = offset.reshape(-1, 2)                     # (x, y) of every point
    picks = rng.choice(len(pairs), len(pairs) // 2, replace=False)
    with np.errstate(over="ignore", invalid="ignore"):
        pairs[picks, rng.integers(0, 2, picks.size)] = rng.choice(NASTY, picks.size)
        nan_weights = rng.random(mask.shape) < 0.2
        mask[nan_weights] = np.nan
        inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    out = ops.dcnv3(**inputs, **params)
    assert np.isfinite(out).all()
    # every point with a non-finite or huge offset is far outside, a NaN weight adds nothing:
    # the loop reference, with those points' weights set to 0, gives the same numbers
    bad_point = (~np.isfinite(inputs["offset"]) | (np.abs(inputs["offset"]) > 1e3)).reshape(
        mask.shape + (2,)).any(-1) | np.isnan(inputs["mask"])
    clean = {"input": inputs["input"].astype(np.float64),
             "offset": np.where(np.repeat(bad_point, 2, -1), 0.0, inputs["offset"]).astype(np.float64),
             "mask": np.where(bad_point, 0.0, inputs["mask"]).astype(np.float64)}
    assert_close(out, ref.dcnv3(**clean, **params), 1e-10 if dtype == np.float64 else 1e-5, "forward")
    g = rng.standard_normal(out.shape).astype(dtype)
    grads = ops.dcnv3_backward(g, **inputs, **params)
    for name in grads._fields:
        assert np.isfinite(getattr(grads, name)).all(), name
    assert (grads.mask[bad_point] == 0).all()
    assert (grads.offset[np.repeat(bad_point, 2, -1)] == 0).all()
    expected = ref.dcnv3_backward(g.astype(np.float64), **clean, **params)
    assert_close(grads.input, expected.input, 1e-10 if dtype == np.float64 else 1e-4, "input")


def test_empty_batch():
    rng = np.random.default_rng(4)
    inputs, params = dcnv3_case(rng, N=0)
    out = ops.dcnv3(**inputs, **params)
    assert out.shape == (0,) + inputs["offset"].shape[1:3] + (6,)
    grads = ops.dcnv3_backward(out, **inputs, **params)
    assert [getattr(grads, n).shape for n in grads._fields] == [v.shape for v in inputs.values()]
    packed = pack(inputs["offset"], inputs["mask"], 2, extra=2)
    assert ops.dcnv4(inputs["input"], packed, **params).shape == out.shape
    assert ops.dcnv4_backward(out, inputs["input"], packed, **params).offset_mask.shape == packed.shape


@pytest.mark.parametrize("H, W", [(0, 4), (3, 0), (0, 0)])
def test_an_image_with_no_pixel_reads_zero_with_zero_gradient(H, W):
    # padding 2 keeps the output non-empty; every point of it (even one within a pixel of
    # the empty image, even with an infinite weight) reads 0 and gets zero gradient
    rng = np.random.default_rng(H + 2 * W)
    inputs, params = dcnv3_case(rng, N=2, H=H, W=W, kernel=(3, 3), padding=(2, 2), reach=1.0)
    inputs["mask"][0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    out = ops.dcnv3(**inputs, **params)
    assert out.shape == (2, H + 2, W + 2, 6)
    assert_close(out, ref.dcnv3(**inputs, **params), 0.0, "forward")
    assert not out.any()
    g = rng.standard_normal(out.shape)
    grads = ops.dcnv3_backward(g, **inputs, **params)
    compare(grads, ref.dcnv3_backward(g, **inputs, **params), 0.0, "backward")
    assert [getattr(grads, n).shape for n in grads._fields] == [v.shape for v in inputs.values()]
    assert not any(getattr(grads, n).any() for n in grads._fields)
    packed = pack(inputs["offset"], inputs["mask"], 2, extra=2, fill=np.inf)
    assert_close(ops.dcnv4(inputs["input"], packed, **params),
                 ref.dcnv4(inputs["input"], packed, **params), 0.0, "dcnv4")
    grads4 = ops.dcnv4_backward(g, inputs["input"], packed, **params)
    compare(grads4, ref.dcnv4_backward(g, inputs["input"], packed, **params), 0.0, "dcnv4")
    assert grads4.offset_mask.shape == packed.shape and not grads4.offset_mask.any()


def test_non_contiguous_inputs_are_accepted_and_no_input_is_modified():
    rng = np.random.default_rng(5)
    inputs, params = dcnv3_case(rng, **CASES["3x3 remove_center, 3 groups of 2, scale 1.5"])
    # views with every other element of a larger array: same values, odd strides
    strided = {k: np.repeat(v, 2, axis=-1)[..., ::2] for k, v in inputs.items()}
    assert not any(v.flags.c_contiguous for v in strided.values())
    saved = {k: v.copy() for k, v in strided.items()}
    out = ops.dcnv3(**strided, **params)
    assert_close(out, ops.dcnv3(**inputs, **params), 0.0, "forward")
    g = np.repeat(rng.standard_normal(out.shape), 2, axis=1)[:, ::2]
    compare(ops.dcnv3_backward(g, **strided, **params),
                  ops.dcnv3_backward(np.ascontiguousarray(g), **inputs, **params), 0.0, "backward")
    packed = pack(strided["offset"], strided["mask"], 3, extra=1)[:, :, :, :]
    packed_view = np.repeat(packed, 2, axis=0)[::2]
    saved_packed = packed_view.copy()
    ops.dcnv4_backward(g, strided["input"], packed_view, **params)
    for k, v in strided.items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    np.testing.assert_array_equal(packed_view, saved_packed)
