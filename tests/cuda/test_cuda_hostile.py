"""The CUDA kernels under hostile values, against the CPU (which the CPU tests check
against the loop reference): NaN masks, huge RoIs and gammas, images without pixels, and
the index width of the deterministic backward."""
import numpy as np
import pytest

from dcn_ref import ops

from helpers import assert_close, assert_cuda_equals_cpu, compare, deform_case


def test_a_nan_mask_leaves_its_tap_out_on_the_gpu():
    rng = np.random.default_rng(20)
    inputs, params = deform_case(rng, N=2, C_in=2, C_out=2, H=4, W=4, kernel=(2, 2), G=2)
    nan = rng.random(inputs["mask"].shape) < 0.3
    nan.flat[0] = True
    inputs["mask"][nan] = np.nan
    # each result once, compared with the CPU's and checked finite (the simulator is slow)
    out = ops.deform_conv2d(**inputs, **params, target="cuda")
    assert np.isfinite(out).all()
    assert_close(out, ops.deform_conv2d(**inputs, **params), 1e-10, "forward")
    g = rng.standard_normal(out.shape)
    cpu = ops.deform_conv2d_backward(g, **inputs, **params)
    for deterministic in (False, True):
        grads = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda",
                                           deterministic=deterministic)
        compare(grads, cpu, 1e-10, f"deterministic={deterministic}")
        assert not grads.mask[nan].any() and np.isfinite(grads.input).all()


@pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")  # the simulator's inf
def test_a_nan_roi_pool_mask_and_huge_values_on_the_gpu():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 2, 5, 5))
    rois = np.array([[0, 0.5, 0.5, 3.0, 2.5], [0, -1e308, 0.0, 1e308, 2.0]])
    offset = rng.uniform(-0.3, 0.3, (2, 2, 2, 2))
    mask = rng.uniform(0.2, 1.0, (2, 1, 2, 2))
    mask[0, 0, 1, 0] = np.nan
    assert_cuda_equals_cpu(ops.deform_roi_pool, ops.deform_roi_pool_backward, rng, x, rois,
                           offset, 2, 1.0, 1, 0.1, mask)
    grads = ops.deform_roi_pool_backward(np.ones((2, 2, 2, 2)), x, rois, offset, 2,
                                         sampling_ratio=1, mask=mask, target="cuda")
    assert not np.isnan(grads.offset).any() and not grads.offset[1, 0].any()
    assert not grads.mask[0, 0, 1, 0].any()
    huge_gamma = ops.deform_roi_pool_backward(np.ones((1, 2, 2, 2)), x, rois[:1], offset[:1], 2,
                                              sampling_ratio=2, gamma=1e308, target="cuda")
    assert not np.isnan(huge_gamma.offset).any() and not huge_gamma.offset.any()


def test_images_without_pixels_on_the_gpu():
    rng = np.random.default_rng(22)
    coords = rng.uniform(-1, 2, (2, 3, 2))
    out = ops.bilinear_sample(np.zeros((2, 0, 3)), coords, "border", target="cuda")
    assert out.shape == (2, 3) and not out.any()
    rois = np.array([[0, 0.0, 0.0, 2.0, 2.0]])
    x = np.ones((1, 1, 3, 0))
    assert not ops.deform_roi_pool(x, rois, output_size=2, target="cuda").any()
    g = ops.deform_roi_pool_backward(np.ones((1, 1, 2, 2)), x, rois, output_size=2, target="cuda",
                                     deterministic=True)
    assert g.input.shape == x.shape


def test_the_deterministic_backward_widens_its_indices_for_huge_planes(monkeypatch):
    from dcn_ref.cuda import deterministic
    assert deterministic.index_dtype(2 ** 31 - 1, 10) == np.int32
    assert deterministic.index_dtype(2 ** 31, 10) == np.int64     # K*L samples of one plane
    assert deterministic.index_dtype(10, 2 ** 31) == np.int64     # (H+1)*(W+1) cells
    # the int64 build gives the same bits as the int32 one
    rng = np.random.default_rng(23)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=4, kernel=(2, 2))
    g = rng.standard_normal((1, 2, 5, 5))
    narrow = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
    monkeypatch.setattr(deterministic, "index_dtype", lambda n_samples, n_cells: np.int64)
    wide = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
    for name in narrow._fields:
        np.testing.assert_array_equal(getattr(wide, name), getattr(narrow, name), err_msg=name)
    assert_close(wide.input, ops.deform_conv2d_backward(g, **inputs, **params).input, 1e-12, "input")
