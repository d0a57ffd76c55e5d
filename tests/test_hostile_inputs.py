"""No input can crash the process or read out of bounds: NaN, +-inf and huge offsets, empty
batches, non-contiguous arrays; and no input array is ever modified."""
import numpy as np
import pytest

from dcn_ref import ops

from helpers import deform_case

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e300, -3e9]


def nasty_offsets(rng, shape, dtype):
    offset = rng.uniform(-2, 2, shape).astype(dtype)
    flat = offset.reshape(-1)
    picks = rng.choice(flat.size, size=flat.size // 2, replace=False)
    with np.errstate(over="ignore"):  # 1e300 becomes inf in float32, which is the point
        flat[picks] = rng.choice(NASTY, size=picks.size)
    return offset


def assert_no_nan(result, what):
    arrays = result if isinstance(result, tuple) else (result,)
    for name, a in zip(getattr(result, "_fields", [what]), arrays):
        if a is not None:
            assert not np.isnan(a).any(), f"{what}.{name} has NaN"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_deform_conv2d_with_nan_inf_and_huge_offsets(dtype):
    rng = np.random.default_rng(0)
    inputs, params = deform_case(rng, N=2, C_in=4, C_out=3, G=2, dtype=dtype)
    inputs["offset"] = nasty_offsets(rng, inputs["offset"].shape, dtype)
    out = ops.deform_conv2d(**inputs, **params)
    assert_no_nan(out, "forward")
    assert np.isfinite(out).all()
    grads = ops.deform_conv2d_backward(np.ones_like(out), **inputs, **params)
    assert_no_nan(grads, "backward")
    # a NaN offset samples 0 and gets no gradient
    nan_taps = np.isnan(inputs["offset"])
    assert (grads.offset[nan_taps] == 0).all()


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_samplers_with_nan_inf_and_huge_coordinates(padding_mode):
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 4, 5))
    coords = nasty_offsets(rng, (2, 60, 2), np.float64) + 1.0
    out = ops.bilinear_sample(image, coords, padding_mode)
    assert np.isfinite(out).all()
    g = ops.bilinear_sample_backward(np.ones_like(out), image, coords, padding_mode)
    assert np.isfinite(g.image).all() and np.isfinite(g.coords).all()
    has_nan = np.isnan(coords).any(axis=2)
    assert (out[has_nan] == 0).all() and (g.coords[has_nan] == 0).all()
    far = np.abs(np.nan_to_num(coords, nan=0.0)) > 1e9          # (B, P, 2) per coordinate
    if padding_mode == "zeros":
        assert (out[far.any(axis=2)] == 0).all(), "far outside samples the zero padding"
    assert (g.coords[far] == 0).all(), "a far (or clamped) coordinate gets no gradient"
    x = rng.standard_normal((1, 2, 3, 4))
    offset = nasty_offsets(rng, (1, 4, 3, 4), np.float64)
    out = ops.offset_sample(x, offset, padding_mode)
    assert np.isfinite(out).all()
    g = ops.offset_sample_backward(np.ones_like(out), x, offset, padding_mode)
    assert np.isfinite(g.input).all() and np.isfinite(g.offset).all()


def test_border_mode_puts_infinite_points_on_the_edge():
    image = np.arange(12.0).reshape(1, 3, 4)
    coords = np.array([[[np.inf, 1.0], [-np.inf, 2.0], [1.0, np.inf], [1e30, -1e30]]])
    np.testing.assert_array_equal(ops.bilinear_sample(image, coords, "border"),
                                  [[9.0, 2.0, 7.0, 8.0]])


def test_empty_batches():
    rng = np.random.default_rng(2)
    inputs, params = deform_case(rng, N=0)
    out = ops.deform_conv2d(**inputs, **params)
    assert out.shape == (0, 6, 6, 6)
    grads = ops.deform_conv2d_backward(out, **inputs, **params)
    for name in grads._fields:
        assert getattr(grads, name).shape == inputs[name].shape
    assert not grads.weight.any() and not grads.bias.any()
    x, w = inputs["input"], inputs["weight"]
    assert ops.conv2d(x, w, padding=1).shape == (0, 6, 6, 6)
    assert ops.conv2d_backward(np.zeros((0, 6, 6, 6)), x, w, padding=1).weight.shape == w.shape
    assert ops.offset_sample(x, np.zeros((0, 8, 6, 5))).shape == x.shape
    assert ops.offset_sample_backward(x, x, np.zeros((0, 8, 6, 5))).offset.shape == (0, 8, 6, 5)
    assert ops.bilinear_sample(np.zeros((0, 3, 3)), np.zeros((0, 5, 2))).shape == (0, 5)
    no_points = ops.bilinear_sample_backward(np.zeros((2, 0)), np.ones((2, 3, 3)), np.zeros((2, 0, 2)))
    assert no_points.image.shape == (2, 3, 3) and not no_points.image.any()


def test_non_contiguous_inputs_give_the_same_results():
    rng = np.random.default_rng(3)
    inputs, params = deform_case(rng, N=2, C_in=4, C_out=3)
    strided = {}
    for name, a in inputs.items():
        big = np.repeat(a, 2, axis=-1)          # every value twice along the last axis
        strided[name] = big[..., ::2]           # a view with step 2: not contiguous
        assert not strided[name].flags.c_contiguous
    np.testing.assert_array_equal(ops.deform_conv2d(**strided, **params),
                                  ops.deform_conv2d(**inputs, **params))
    transposed = np.asfortranarray(inputs["input"])
    np.testing.assert_array_equal(ops.conv2d(transposed, inputs["weight"]),
                                  ops.conv2d(inputs["input"], inputs["weight"]))


def test_inputs_are_never_modified():
    rng = np.random.default_rng(4)
    inputs, params = deform_case(rng, N=2, C_in=4, C_out=3)
    inputs["offset"][0, 0, 0, 0] = np.nan
    before = {k: v.copy() for k, v in inputs.items()}
    out = ops.deform_conv2d(**inputs, **params)
    g = rng.standard_normal(out.shape)
    g_before = g.copy()
    ops.deform_conv2d_backward(g, **inputs, **params)
    ops.conv2d_backward(g, inputs["input"], inputs["weight"], inputs["bias"], **params)
    ops.offset_sample_backward(inputs["input"], inputs["input"], np.zeros((2, 8, 6, 5)))
    for name, value in inputs.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    np.testing.assert_array_equal(g, g_before)
