"""A NaN mask value leaves its tap (deform_conv2d) or bin (deform_roi_pool) out: it adds 0,
and its offset and mask get zero gradient, exactly as a NaN offset. Checked against the
same call with a zero mask there (which adds 0 too) and against the loop reference."""
import numpy as np
import pytest

from dcn_ref import ops, reference, reference_roi

from helpers import assert_close, deform_case


def nan_mask_case(rng, N, G):
    inputs, params = deform_case(rng, N=N, C_in=2 * G, C_out=3, G=G)
    mask = inputs["mask"]
    nan = rng.random(mask.shape) < 0.3
    nan.flat[0] = True
    mask[nan] = np.nan
    zeroed = dict(inputs, mask=np.where(nan, 0.0, mask))
    return inputs, zeroed, params, nan


# N*G = 1 runs the CPU's two-pass backward, N*G = 8 its one-pass backward
@pytest.mark.parametrize("N, G", [(1, 1), (4, 2)])
def test_a_nan_mask_leaves_its_tap_out(N, G):
    rng = np.random.default_rng(10)
    inputs, zeroed, params, nan = nan_mask_case(rng, N, G)
    out = ops.deform_conv2d(**inputs, **params)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, ops.deform_conv2d(**zeroed, **params))
    g = rng.standard_normal(out.shape)
    grads = ops.deform_conv2d_backward(g, **inputs, **params)
    expected = ops.deform_conv2d_backward(g, **zeroed, **params)
    for name in ("input", "weight", "bias", "offset"):
        np.testing.assert_array_equal(getattr(grads, name), getattr(expected, name), err_msg=name)
    assert not grads.mask[nan].any(), "a NaN mask gets zero gradient"
    np.testing.assert_array_equal(grads.mask[~nan], expected.mask[~nan])
    offset_taps = np.repeat(nan, 2, axis=1)     # (dy, dx) of each tap
    assert not grads.offset[offset_taps].any()
    loops = reference.deform_conv2d_backward(g, **inputs, **params)
    for name in loops._fields:
        assert_close(getattr(grads, name), getattr(loops, name), 1e-12, name)
    assert_close(out, reference.deform_conv2d(**inputs, **params), 1e-12, "forward")


def test_an_infinite_mask_on_a_tap_outside_adds_nothing():
    rng = np.random.default_rng(11)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=3)
    inputs["mask"][0, 0] = np.inf
    inputs["offset"][0, 0] = 1e6        # tap 0 (dy) far below the image: it reads no pixel
    out = ops.deform_conv2d(**inputs, **params)
    assert np.isfinite(out).all()
    grads = ops.deform_conv2d_backward(np.ones_like(out), **inputs, **params)
    for name in grads._fields:
        assert np.isfinite(getattr(grads, name)).all(), name
    assert not grads.offset[0, :2].any() and not grads.mask[0, 0].any()


def test_a_nan_roi_pool_mask_leaves_its_bin_out():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 6, 7))
    rois = np.array([[0, 1.0, 1.0, 4.0, 5.0], [1, 0.0, 0.5, 6.0, 2.0]])
    offset = rng.uniform(-0.3, 0.3, (2, 2, 2, 2))
    mask = rng.uniform(0.2, 1.0, (2, 1, 2, 2))
    nan = np.zeros(mask.shape, bool)
    nan[0, 0, 1, 0] = nan[1, 0, 0, 1] = True
    mask[nan] = np.nan
    args = dict(output_size=2, sampling_ratio=2)
    out = ops.deform_roi_pool(x, rois, offset, mask=mask, **args)
    assert np.isfinite(out).all()
    assert not out[0, :, 1, 0].any() and not out[1, :, 0, 1].any()
    np.testing.assert_array_equal(out, ops.deform_roi_pool(x, rois, offset, mask=np.where(nan, 0, mask), **args))
    g = rng.standard_normal(out.shape)
    grads = ops.deform_roi_pool_backward(g, x, rois, offset, mask=mask, **args)
    assert not grads.mask[nan].any()
    assert not grads.offset[np.repeat(nan, 2, axis=1)].any()
    loops = reference_roi.deform_roi_pool_backward(g, x, rois, offset, mask=mask, **args)
    for name in loops._fields:
        assert_close(getattr(grads, name), getattr(loops, name), 1e-12, name)
    assert_close(out, reference_roi.deform_roi_pool(x, rois, offset, mask=mask, **args), 1e-12, "forward")
