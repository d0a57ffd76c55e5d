"""deform_roi_pool and deform_psroi_pool: hand-checked cases, numbers recorded from
torchvision, the loop references of dcn_ref/reference_roi.py, finite differences, and
inputs that must not crash (empty RoI lists, NaN and huge offsets)."""
import numpy as np
import pytest

from dcn_ref import ops, reference_roi
from dcn_ref.gradcheck import check_gradients

from helpers import assert_close, compare
from roi_cases import distance_to, psroi_case, psroi_sample_points, roi_case, roi_sample_points

GRAD_TOL = 1e-6
NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30]


def assert_all_pass(rows):
    assert rows, "nothing was checked"
    failed = [f"{r.input} rel. error {r.max_rel_error:.2e}" for r in rows if not r.passed]
    assert not failed, "gradients off: " + ", ".join(failed)


# -- deform_roi_pool by hand ------------------------------------------------------------

def ramp(H, W):
    """I[y, x] = 2y + 3x + 1: bilinear interpolation reproduces it exactly inside the image,
    so a bin's mean is the ramp at the mean of its samples, the bin's centre."""
    y, x = np.mgrid[0:H, 0:W]
    return (2.0 * y + 3.0 * x + 1.0)[None, None]


def test_bins_average_a_ramp_at_their_centres():
    # RoI x in [2*1 - 0.5, 6 - 0.5] = [1.5, 5.5], y in [1.5 - 0.5, 4.5 - 0.5] = [1.0, 4.0]:
    # 2x2 bins 1.5 high and 2 wide, centres y = 1.75, 3.25 and x = 2.5, 4.5
    image = ramp(6, 8)
    rois = np.array([[0.0, 2.0, 1.5, 6.0, 4.5]])
    out = ops.deform_roi_pool(image, rois, output_size=2)
    expected = [[2 * 1.75 + 3 * 2.5 + 1, 2 * 1.75 + 3 * 4.5 + 1],
                [2 * 3.25 + 3 * 2.5 + 1, 2 * 3.25 + 3 * 4.5 + 1]]
    np.testing.assert_allclose(out[0, 0], expected, rtol=0, atol=1e-12)


def test_offset_channel_0_moves_x_and_channel_1_moves_y():
    image = ramp(6, 8)
    rois = np.array([[0.0, 2.0, 1.5, 6.0, 4.5]])          # roi_w = 4, roi_h = 3
    base = ops.deform_roi_pool(image, rois, output_size=2)
    offset = np.zeros((1, 2, 2, 2))
    offset[0, 0, 1, 0] = 0.5    # bin (1, 0) moves 0.1 * 4 * 0.5 = 0.2 px right: +3 * 0.2
    offset[0, 1, 0, 1] = -1.0   # bin (0, 1) moves 0.1 * 3 * 1 = 0.3 px up: -2 * 0.3
    out = ops.deform_roi_pool(image, rois, offset, output_size=2, gamma=0.1)
    change = np.array([[0.0, -0.6], [0.6, 0.0]])
    np.testing.assert_allclose(out[0, 0] - base[0, 0], change, rtol=0, atol=1e-12)
    mask = np.array([[[[0.5, 2.0], [1.0, 0.0]]]])
    masked = ops.deform_roi_pool(image, rois, offset, output_size=2, mask=mask)
    np.testing.assert_allclose(masked, out * mask, rtol=0, atol=1e-12)


@pytest.mark.parametrize("centre, expected", [
    ((0.5, 1.5), (2 + 3 + 5 + 6) / 4),   # between four pixels
    ((-0.5, 0.5), (1 + 2) / 2),          # y in [-1, 0): clamped onto row 0
    ((1.7, 2.4), 6.0),                   # y in [H-1, H], x in [W-1, W]: the corner pixel
    ((-1.0, 1.0), 2.0),                  # y = -1 exactly still reads row 0
    ((-1.5, 1.0), 0.0),                  # y < -1: nothing
    ((2.5, 1.0), 0.0),                   # y > H: nothing
    ((0.0, 3.25), 0.0),                  # x > W: nothing
])
def test_roi_align_boundary_rule_on_single_samples(centre, expected):
    # one bin, one sample at the RoI's centre: x1*s - 0.5 + roi_w / 2 = cx
    image = np.array([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    cy, cx = centre
    rois = np.array([[0.0, cx + 0.25, cy + 0.25, cx + 0.75, cy + 0.75]])
    out = ops.deform_roi_pool(image, rois, output_size=1, sampling_ratio=1)
    assert out[0, 0, 0, 0] == pytest.approx(expected, abs=1e-12)


def test_adaptive_grid_is_ceil_of_the_bin_size():
    # a 1-pixel-high row: bins of roi_w / 2 = 2.5 px take ceil(2.5) = 3 samples across, at
    # x = -0.5 + (ix + 0.5) * 2.5 / 3 in the first bin, and ceil(0.25) = 1 down
    image = np.arange(8.0).reshape(1, 1, 1, 8) ** 2
    rois = np.array([[0.0, 0.0, 0.0, 5.0, 0.25]])
    out = ops.deform_roi_pool(image, rois, output_size=(1, 2), sampling_ratio=0)
    xs = -0.5 + (np.arange(3) + 0.5) * 2.5 / 3
    expected = np.mean(np.interp(xs, np.arange(8.0), np.arange(8.0) ** 2))
    assert out[0, 0, 0, 0] == pytest.approx(expected, abs=1e-12)


def test_a_zero_size_roi_with_adaptive_sampling_is_zero():
    # ceil(0 / ph) = 0 samples: torchvision's and mmcv's count max(0, 1) gives 0
    image = np.ones((1, 1, 4, 4))
    rois = np.array([[0.0, 1.0, 1.0, 1.0, 3.0]])
    assert not ops.deform_roi_pool(image, rois, output_size=2).any()


# -- torchvision.ops.roi_align, recorded ---------------------------------------------------
# torchvision 0.29.1 (torch 2.14.1), float64, aligned=True, output_size (2, 2), computed by
#   y, x = np.mgrid[0:4, 0:5]; image = ((3*y + 7*x) % 11)[None, None]
#   out = roi_align(image, rois, (2, 2), scale, sr, aligned=True); g = arange(1, 13) in out's
#   shape; (out * g).sum().backward() -> image.grad

TV_ROIS = np.array([[0, 0.3, -0.8, 4.6, 3.9], [0, 2.2, 1.1, 7.0, 5.5], [0, -3.0, -3.0, -1.2, -1.6]])
TV_RECORDED = {
    (1.0, 0): (
        [[[4.61388888888889, 6.781751543209875], [5.434058641975309, 5.054266975308642]],
         [[5.135555555555555, 1.6222222222222222], [3.1555555555555563, 0.8888888888888888]],
         [[0.0, 0.0], [0.0, 0.0]]],
        [[0.2515123456790124, 0.3751003086419753, 0.5323842592592595, 0.8263117283950617, 0.4341358024691357],
         [0.25061728395061733, 0.3737654320987654, 1.1299228395061724, 1.5229166666666667, 1.6394444444444445],
         [0.392037037037037, 0.5846759259259259, 1.3176697530864196, 1.7484567901234567, 1.7516049382716048],
         [0.39472222222222225, 0.5886805555555555, 2.414467592592592, 3.1745370370370383, 3.741481481481482]]),
    (0.5, 2): (
        [[[1.5968749999999998, 5.9156249999999995], [3.988330078125, 7.87470703125]],
         [[7.450000000000001, 4.96], [5.359999999999999, 6.5]],
         [[0.0, 0.0], [0.0, 0.0]]],
        [[1.3801269531249998, 3.8688964843749996, 2.700351562499999, 0.9600000000000002, 0.0],
         [1.89923828125, 6.11912109375, 5.625390624999998, 2.4000000000000004, 0.0],
         [0.4268847656249998, 3.7119824218750015, 4.6680078125, 2.240000000000001, 0.0],
         [0.0, 0.0, 0.0, 0.0, 0.0]]),
}


@pytest.mark.parametrize("scale, sampling_ratio", list(TV_RECORDED))
def test_equals_torchvision_roi_align_recorded(scale, sampling_ratio):
    y, x = np.mgrid[0:4, 0:5]
    image = ((3 * y + 7 * x) % 11).astype(np.float64)[None, None]
    out_tv, grad_tv = TV_RECORDED[scale, sampling_ratio]
    out = ops.deform_roi_pool(image, TV_ROIS, None, 2, scale, sampling_ratio)
    np.testing.assert_allclose(out[:, 0], out_tv, rtol=0, atol=1e-13)
    g = np.arange(1.0, 13.0).reshape(out.shape)
    grads = ops.deform_roi_pool_backward(g, image, TV_ROIS, None, 2, scale, sampling_ratio)
    np.testing.assert_allclose(grads.input[0, 0], grad_tv, rtol=0, atol=1e-13)
    assert grads.offset is None and grads.mask is None
    assert_close(reference_roi.deform_roi_pool(image, TV_ROIS, None, 2, scale, sampling_ratio)[:, 0],
                 np.array(out_tv), 1e-14, "the loop reference vs torchvision")


# -- deform_psroi_pool by hand ----------------------------------------------------------

def test_position_sensitive_channels():
    # channel c is constant c: bin (i, j) of output channel ctop reads channel (ctop*2 + i)*2 + j
    input = np.broadcast_to(np.arange(8.0)[None, :, None, None], (1, 8, 5, 5)).copy()
    rois = np.array([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = ops.deform_psroi_pool(input, rois, None, 1.0, 2, 2, 2, sample_per_part=2)
    expected = [[[(ctop * 2 + i) * 2 + j for j in range(2)] for i in range(2)] for ctop in range(2)]
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("x1, x2, sample_per_part, expected", [
    # round(2.5) = 3 (away from zero; NumPy would say 2): x_start = 2.5, x_end = 5 + 1 - 0.5,
    # samples at the sub-bin corners 2.5 and 2.5 + 3/2 of the ramp 10 + x
    (2.5, 4.5, 2, (12.5 + 14.0) / 2),
    # round(-0.5) = -1: x_start = -1.5, roi_w = 4, samples -1.5 (skipped, not counted),
    # -0.5 (clamped to 0), 0.5, 1.5
    (-0.5, 2.0, 4, (10.0 + 10.5 + 11.5) / 3),
])
def test_psroi_rounding_sub_bin_corners_and_skipped_samples(x1, x2, sample_per_part, expected):
    input = np.broadcast_to(10.0 + np.arange(8.0), (1, 1, 3, 8)).copy()
    rois = np.array([[0.0, x1, 1.0, x2, 1.0]])
    out = ops.deform_psroi_pool(input, rois, None, 1.0, 1, 1, 1, sample_per_part=sample_per_part)
    assert out[0, 0, 0, 0] == pytest.approx(expected, abs=1e-12)


def test_psroi_trans_channels_and_classes():
    # ramp 2y + 3x; two classes of one output channel each; trans 2*cls is x, 2*cls+1 is y
    image = np.repeat(ramp(8, 9), 2, axis=1)                # (1, 2, 8, 9): output_dim 2, G = 1
    rois = np.array([[0.0, 2.0, 1.0, 5.0, 4.0]])              # roi_w = roi_h = 4
    base = ops.deform_psroi_pool(image, rois, None, 1.0, 2, 1, 2, sample_per_part=2)
    trans = np.zeros((1, 4, 2, 2))
    trans[0, 0, 1, 1] = 1.0       # class 0 (channel 0), part (1, 1): x += 0.1 * 4
    trans[0, 3, 0, 0] = -1.0      # class 1 (channel 1), part (0, 0): y -= 0.1 * 4
    out = ops.deform_psroi_pool(image, rois, trans, 1.0, 2, 1, 2, sample_per_part=2,
                                trans_std=0.1)
    change = np.zeros((2, 2, 2))
    change[0, 1, 1] = 3 * 0.4
    change[1, 0, 0] = -2 * 0.4
    np.testing.assert_allclose(out[0] - base[0], change, rtol=0, atol=1e-12)


def test_zero_offsets_are_no_offsets():
    rng = np.random.default_rng(10)
    inputs, params = roi_case(rng, mask=False)
    inputs["offset"] = np.zeros_like(inputs["offset"])
    plain = reference_roi.deform_roi_pool(inputs["input"], inputs["rois"], None, **params)
    assert_close(ops.deform_roi_pool(**inputs, **params), plain, 1e-14, "deform_roi_pool")
    inputs, params = psroi_case(rng, num_classes=2)
    inputs["trans"] = np.zeros_like(inputs["trans"])
    plain = reference_roi.deform_psroi_pool(inputs["input"], inputs["rois"], None, **params)
    assert_close(ops.deform_psroi_pool(**inputs, **params), plain, 1e-14, "deform_psroi_pool")


# -- against the loop references -------------------------------------------------------

ROI_CONFIGS = {
    "offset, mask, sampling 2": dict(),
    "adaptive, offset, scale 0.5": dict(sampling_ratio=0, spatial_scale=0.5, mask=False, K=3),
    "no offset, mask, 1x1 bins": dict(output_size=(1, 1), offset=False, sampling_ratio=3),
    "roi_align, 3x2 bins, one image": dict(N=1, output_size=(3, 2), offset=False, mask=False),
    "one-pixel image": dict(H=1, W=1, N=1, K=2, sampling_ratio=0),
}
PSROI_CONFIGS = {
    "R-FCN 3x3, 2 classes": dict(group_size=3, pooled_size=3, num_classes=2),
    "parts 2 of 3 bins, groups 1": dict(group_size=1, pooled_size=3, part_size=2, output_dim=3,
                                        sample_per_part=3, spatial_scale=0.5),
    "groups 2 of 3 bins, no trans": dict(group_size=2, pooled_size=3, trans=False),
    "big offsets, scale 0.3": dict(trans_std=0.5, spatial_scale=0.3, pooled_size=2, group_size=2),
}


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", list(ROI_CONFIGS))
def test_deform_roi_pool_matches_loop_reference(name, dtype, tol):
    rng = np.random.default_rng(len(name))
    inputs, params = roi_case(rng, **ROI_CONFIGS[name], dtype=dtype)
    out = ops.deform_roi_pool(**inputs, **params)
    assert out.dtype == dtype
    assert_close(out, reference_roi.deform_roi_pool(**inputs, **params), tol, "forward")
    g = rng.standard_normal(out.shape).astype(dtype)
    compare(ops.deform_roi_pool_backward(g, **inputs, **params),
            reference_roi.deform_roi_pool_backward(g, **inputs, **params), tol, "backward")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", list(PSROI_CONFIGS))
def test_deform_psroi_pool_matches_loop_reference(name, dtype, tol):
    rng = np.random.default_rng(len(name))
    inputs, params = psroi_case(rng, **PSROI_CONFIGS[name], dtype=dtype)
    out = ops.deform_psroi_pool(**inputs, **params)
    assert out.dtype == dtype
    assert_close(out, reference_roi.deform_psroi_pool(**inputs, **params), tol, "forward")
    g = rng.standard_normal(out.shape).astype(dtype)
    compare(ops.deform_psroi_pool_backward(g, **inputs, **params),
            reference_roi.deform_psroi_pool_backward(g, **inputs, **params), tol, "backward")


def test_parallel_kernels_match_loop_reference():
    # enough samples (>= PARALLEL_MIN_WORK) for the parallel builds of every kernel
    rng = np.random.default_rng(11)
    inputs, params = roi_case(rng, N=2, C=8, K=8, output_size=(4, 4), sampling_ratio=4)
    out = ops.deform_roi_pool(**inputs, **params)
    assert_close(out, reference_roi.deform_roi_pool(**inputs, **params), 1e-12, "roi forward")
    g = rng.standard_normal(out.shape)
    compare(ops.deform_roi_pool_backward(g, **inputs, **params),
            reference_roi.deform_roi_pool_backward(g, **inputs, **params), 1e-12, "roi backward")
    inputs, params = psroi_case(rng, output_dim=8, group_size=2, pooled_size=4, K=8,
                                sample_per_part=4, num_classes=2)
    out = ops.deform_psroi_pool(**inputs, **params)
    assert_close(out, reference_roi.deform_psroi_pool(**inputs, **params), 1e-12, "psroi forward")
    g = rng.standard_normal(out.shape)
    compare(ops.deform_psroi_pool_backward(g, **inputs, **params),
            reference_roi.deform_psroi_pool_backward(g, **inputs, **params), 1e-12,
            "psroi backward")


# -- finite differences -----------------------------------------------------------------
# The difference step moves a sample by at most gamma * roi_w * 1e-6 (trans_std * roi_w *
# 1e-6): each case first checks that no sample point is within 1e-4 of a kink (an integer,
# where interpolation bends or the clamp starts; for PS-RoI pooling also -0.5, H - 0.5 and
# W - 0.5, where samples stop being counted).

@pytest.mark.parametrize("name", ["offset, mask, sampling 2", "adaptive, offset, scale 0.5",
                                  "no offset, mask, 1x1 bins", "one-pixel image"])
def test_deform_roi_pool_gradients(name):
    rng = np.random.default_rng(20 + len(name))
    inputs, params = roi_case(rng, **ROI_CONFIGS[name])
    if inputs["offset"] is not None:
        assert distance_to(roi_sample_points(inputs, params), ([], [])) > 1e-4
    assert_all_pass(check_gradients(ops.deform_roi_pool, ops.deform_roi_pool_backward, inputs,
                                    params, tol=GRAD_TOL))


@pytest.mark.parametrize("name", list(PSROI_CONFIGS))
def test_deform_psroi_pool_gradients(name):
    rng = np.random.default_rng(30 + len(name))
    inputs, params = psroi_case(rng, **PSROI_CONFIGS[name])
    H, W = inputs["input"].shape[2:]
    if inputs["trans"] is not None:
        points = psroi_sample_points(inputs, params)
        assert distance_to(points, ([-0.5, H - 0.5], [-0.5, W - 0.5])) > 1e-4
    assert_all_pass(check_gradients(ops.deform_psroi_pool, ops.deform_psroi_pool_backward,
                                    inputs, params, tol=GRAD_TOL))


# -- inputs that must not crash ----------------------------------------------------------

def test_empty_roi_list():
    x = np.ones((2, 3, 4, 5))
    rois = np.zeros((0, 5))
    out = ops.deform_roi_pool(x, rois, np.zeros((0, 2, 2, 2)), output_size=2,
                              mask=np.zeros((0, 1, 2, 2)))
    assert out.shape == (0, 3, 2, 2)
    grads = ops.deform_roi_pool_backward(out, x, rois, np.zeros((0, 2, 2, 2)), output_size=2,
                                         mask=np.zeros((0, 1, 2, 2)))
    assert not grads.input.any() and grads.input.shape == x.shape
    assert grads.offset.shape == (0, 2, 2, 2) and grads.mask.shape == (0, 1, 2, 2)
    x = np.ones((1, 8, 4, 5))
    out = ops.deform_psroi_pool(x, rois, np.zeros((0, 2, 2, 2)), 1.0, 2, 2, 2)
    assert out.shape == (0, 2, 2, 2)
    grads = ops.deform_psroi_pool_backward(out, x, rois, np.zeros((0, 2, 2, 2)), 1.0, 2, 2, 2)
    assert not grads.input.any() and grads.trans.shape == (0, 2, 2, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_inf_and_huge_offsets(dtype):
    rng = np.random.default_rng(40)
    inputs, params = roi_case(rng, K=6, dtype=dtype)
    flat = inputs["offset"].reshape(-1)
    flat[::3] = np.resize(NASTY, flat[::3].size)
    out = ops.deform_roi_pool(**inputs, **params)
    assert np.isfinite(out).all()
    assert_close(out, reference_roi.deform_roi_pool(**inputs, **params), 1e-5, "forward")
    grads = ops.deform_roi_pool_backward(np.ones_like(out), **inputs, **params)
    assert all(np.isfinite(a).all() for a in grads)
    # a bin with a non-finite or huge offset reads nothing and gets no gradient
    far = ~(np.abs(inputs["offset"]) < 1e3).all(axis=1)         # (K, ph, pw)
    assert far.any()
    assert not out.transpose(0, 2, 3, 1)[far].any()
    assert not grads.offset.transpose(0, 2, 3, 1)[far].any()
    assert not grads.mask[:, 0][far].any()

    inputs, params = psroi_case(rng, K=4, num_classes=2, dtype=dtype)
    flat = inputs["trans"].reshape(-1)
    flat[::3] = np.resize(NASTY, flat[::3].size)
    out = ops.deform_psroi_pool(**inputs, **params)
    assert np.isfinite(out).all()
    assert_close(out, reference_roi.deform_psroi_pool(**inputs, **params), 1e-5, "psroi forward")
    grads = ops.deform_psroi_pool_backward(np.ones_like(out), **inputs, **params)
    assert np.isfinite(grads.input).all() and np.isfinite(grads.trans).all()
    far = ~(np.abs(inputs["trans"]) < 1e3)
    assert not grads.trans[far].any()


def test_non_contiguous_inputs_are_read_right_and_left_alone():
    rng = np.random.default_rng(50)
    inputs, params = roi_case(rng)
    strided = {k: np.asfortranarray(v) for k, v in inputs.items()}
    strided["input"] = np.repeat(inputs["input"], 2, axis=3)[..., ::2]
    saved = {k: v.copy() for k, v in strided.items()}
    assert_close(ops.deform_roi_pool(**strided, **params), ops.deform_roi_pool(**inputs, **params),
                 0, "forward")
    g = rng.standard_normal((4, 3, 2, 3))
    compare(ops.deform_roi_pool_backward(g[..., ::-1], **strided, **params),
            ops.deform_roi_pool_backward(np.ascontiguousarray(g[..., ::-1]), **inputs, **params),
            0, "backward")
    for k, v in strided.items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    inputs, params = psroi_case(rng)
    strided = {k: np.asfortranarray(v) for k, v in inputs.items()}
    assert_close(ops.deform_psroi_pool(**strided, **params),
                 ops.deform_psroi_pool(**inputs, **params), 0, "psroi forward")
