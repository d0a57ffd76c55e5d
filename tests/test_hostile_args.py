"""Hostile arguments found by fuzzing: each gets a ValueError naming the argument (or a
defined result), never a ZeroDivisionError, OverflowError, TypeError or NumPy's own message;
and huge RoIs, gammas and empty images get defined values and gradients."""
import numpy as np
import pytest

from dcn_ref import ops, reference_roi

from helpers import assert_close


def test_deform_conv2d_with_zero_input_channels_names_input():
    with pytest.raises(ValueError, match=r"input: expected at least one channel .* got shape \(1, 0, 4, 4\)"):
        ops.deform_conv2d(np.zeros((1, 0, 4, 4)), np.zeros((1, 18, 2, 2)), np.zeros((2, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"input: expected at least one channel"):
        ops.deform_conv2d_backward(np.zeros((1, 2, 2, 2)), np.zeros((1, 0, 4, 4)),
                                   np.zeros((1, 18, 2, 2)), np.zeros((2, 1, 3, 3)))


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("value", [2 ** 63, 2 ** 40, (1, 2 ** 31)])
def test_huge_stride_padding_dilation_name_the_argument(name, value):
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((2, 2, 3, 3))
    offset = np.zeros((1, 18, 2, 2))
    for call in (lambda: ops.conv2d(x, w, **{name: value}),
                 lambda: ops.deform_conv2d(x, offset, w, **{name: value}),
                 lambda: ops.im2col(x, 3, **{name: value})):
        with pytest.raises(ValueError, match=rf"^{name}: expected values <= 2147483647, got"):
            call()


def test_an_output_too_large_to_index_names_padding():
    # each value is allowed, but the output plane would have 2**64 pixels
    with pytest.raises(ValueError, match=r"^padding: expected an output of at most 2\*\*48"):
        ops.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 1, 1)), padding=2 ** 31 - 1)


@pytest.mark.parametrize("mode", [[], {}, None, 0])
def test_an_unhashable_or_non_string_padding_mode_names_padding_mode(mode):
    with pytest.raises(ValueError, match=r"^padding_mode: expected one of \['border', 'zeros'\]"):
        ops.bilinear_sample(np.zeros((1, 2, 2)), np.zeros((1, 1, 2)), padding_mode=mode)
    with pytest.raises(ValueError, match=r"^padding_mode: expected one of"):
        ops.offset_sample(np.zeros((1, 1, 2, 2)), np.zeros((1, 2, 2, 2)), padding_mode=mode)


@pytest.mark.parametrize("no_trans", [np.array([1, 0]), 1, "yes", np.array(True)])
def test_no_trans_must_be_a_bool_or_none(no_trans):
    with pytest.raises(ValueError, match=r"^no_trans: expected True, False or None"):
        ops.deform_psroi_pool(np.zeros((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 2.0]]),
                              no_trans=no_trans)


def test_numpy_bools_are_bools_for_no_trans():
    x, rois = np.ones((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 2.0]])
    np.testing.assert_array_equal(ops.deform_psroi_pool(x, rois, no_trans=np.True_, pooled_size=2),
                                  ops.deform_psroi_pool(x, rois, no_trans=True, pooled_size=2))


@pytest.mark.parametrize("rois, scale", [
    ([[0, -1e308, 0, 1e308, 2]], 1.0),     # the width overflows to inf
    ([[0, 0, 0, 3, 2]], 1e300),            # a finite, astronomically large grid
])
def test_an_adaptive_grid_too_large_is_a_value_error_naming_rois(rois, scale):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^rois: expected at most 1048576 samples a bin, got row 0 .* "
                                         r"has inf; pass a positive sampling_ratio"):
        ops.deform_roi_pool(x, np.array(rois, float), spatial_scale=scale, sampling_ratio=0)


def _roi_grads(rois, offset, **kwargs):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4, 4))
    grad_out = rng.standard_normal((len(rois), 2, 2, 2))
    args = (x, np.array(rois, float), offset)
    ours = ops.deform_roi_pool_backward(grad_out, *args, output_size=2, **kwargs)
    with np.errstate(over="ignore"):   # the loops' infinite gradient of an unmoved bin
        loops = reference_roi.deform_roi_pool_backward(grad_out, *args, output_size=2, **kwargs)
    return ours, loops


def test_a_huge_roi_with_sampling_ratio_1_gets_zero_offset_gradient():
    # the RoI's width overflows to inf: its bins lie beyond any pixel, as far outside
    ours, loops = _roi_grads([[0, -1e308, 0, 1e308, 2]], np.full((1, 2, 2, 2), 0.3),
                             sampling_ratio=1)
    assert np.isfinite(ours.offset).all() and np.isfinite(ours.input).all()
    assert not ours.offset[:, 0].any()          # x: every sample beyond the image
    for name in ("input", "offset"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(loops, name), err_msg=name)


def test_a_huge_gamma_moves_bins_far_outside_with_zero_gradient():
    offset = np.full((1, 2, 2, 2), 0.5)
    offset[0, :, 0, 0] = 0.0                      # this bin stays where it is
    ours, loops = _roi_grads([[0, 0.5, 0.5, 3, 2.5]], offset, sampling_ratio=2, gamma=1e308)
    assert not np.isnan(ours.offset).any()
    assert not ours.offset[0, :, 1:, :].any() and not ours.offset[0, :, 0, 1].any()
    np.testing.assert_array_equal(ours.offset[0, :, 1:], 0.0)
    assert ours.input.any()                       # the unmoved bin still reads the image
    assert_close(ours.input, loops.input, 1e-12, "input")
    moved = offset != 0
    np.testing.assert_array_equal(ours.offset[moved], loops.offset[moved])


def test_a_huge_gamma_with_zero_offsets_is_roi_align():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 5, 5))
    rois = np.array([[0, 0.5, 0.5, 3, 2.5]])
    plain = ops.deform_roi_pool(x, rois, None, 2, sampling_ratio=2)
    moved = ops.deform_roi_pool(x, rois, np.zeros((1, 2, 2, 2)), 2, sampling_ratio=2, gamma=1e308)
    np.testing.assert_array_equal(moved, plain)


# -- zero-sized images: an image with no pixel reads 0 everywhere, in every op ---------------

@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_bilinear_sample_of_an_image_without_pixels_is_zero(padding_mode):
    for shape in ((0, 0, 3), (2, 0, 3), (2, 3, 0)):
        image = np.zeros(shape)
        coords = np.full((shape[0], 4, 2), 0.25)
        out = ops.bilinear_sample(image, coords, padding_mode)
        assert out.shape == (shape[0], 4) and not out.any()
        grads = ops.bilinear_sample_backward(np.ones_like(out), image, coords, padding_mode)
        assert grads.image.shape == shape and grads.coords.shape == coords.shape
        assert not grads.coords.any()


def test_roi_pools_of_an_image_without_pixels_are_zero():
    rois = np.array([[0, 0.0, 0.0, 2.0, 2.0], [1, -1.0, -0.5, 0.0, 0.0]])
    for shape in ((2, 4, 0, 3), (2, 4, 3, 0)):
        x = np.ones(shape)
        out = ops.deform_roi_pool(x, rois, np.zeros((2, 2, 2, 2)), 2, sampling_ratio=2)
        assert out.shape == (2, 4, 2, 2) and not out.any()
        g = ops.deform_roi_pool_backward(np.ones_like(out), x, rois, np.zeros((2, 2, 2, 2)), 2,
                                         sampling_ratio=2)
        assert g.input.shape == shape and not g.offset.any()
        ps = ops.deform_psroi_pool(x, rois, np.zeros((2, 2, 2, 2)), pooled_size=2, trans_std=0.1)
        assert ps.shape == (2, 4, 2, 2) and not ps.any()
        np.testing.assert_array_equal(
            ps, reference_roi.deform_psroi_pool(x, rois, np.zeros((2, 2, 2, 2)), pooled_size=2,
                                                trans_std=0.1))
    assert ops.deform_roi_pool(np.ones((0, 1, 0, 0)), np.zeros((0, 5)), output_size=2).shape == (0, 1, 2, 2)


def test_col2im_accepts_what_im2col_accepts():
    x = np.zeros((1, 2, 0, 3))
    cols = ops.im2col(x, 1, padding=1)
    assert cols.shape == (1, 2, 2 * 5)
    back = ops.col2im(np.ones_like(cols), x.shape, 1, padding=1)
    assert back.shape == x.shape
    assert ops.col2im(np.ones((1, 0, 9)), (1, 0, 3, 3), 1).shape == (1, 0, 3, 3)


def test_read_only_inputs_reuse_the_compiled_kernels():
    # Numba types a read-only array apart from a writable one: passed on as is, every
    # read-only mix of arguments would compile every kernel again
    from dcn_ref.cpu import planar
    rng = np.random.default_rng(7)
    image, coords = rng.standard_normal((2, 3, 4)), rng.uniform(-1, 4, (2, 5, 2))
    expected = ops.bilinear_sample(image, coords)
    before = list(planar.deform_im2col.serial.signatures)
    for a in (image, coords):
        a.flags.writeable = False
    np.testing.assert_array_equal(ops.bilinear_sample(image, coords), expected)
    np.testing.assert_array_equal(ops.bilinear_sample(np.broadcast_to(image[:1], image.shape), coords),
                                  ops.bilinear_sample(np.repeat(image[:1], 2, axis=0), coords))
    assert list(planar.deform_im2col.serial.signatures) == before


def test_a_zero_mask_with_a_huge_gamma_gives_zero_gradient_not_nan():
    # the bin stays inside (zero offset) but counts for nothing: d out / d offset is 0 * huge
    offset = np.zeros((1, 2, 2, 2))
    mask = np.zeros((1, 1, 2, 2))
    ours, loops = _roi_grads([[0, 0.5, 0.5, 3, 2.5]], offset, sampling_ratio=2, gamma=1e308,
                             mask=mask)
    np.testing.assert_array_equal(ours.offset, 0.0)
    np.testing.assert_array_equal(loops.offset, 0.0)


@pytest.mark.parametrize("call, name", [
    (lambda v: ops.dcnv3(np.zeros((1, 3, 3, 2)), np.zeros((1, 3, 3, 18)), np.zeros((1, 3, 3, 9)),
                         padding=1, offset_scale=v), "offset_scale"),
    (lambda v: ops.dcnv4(np.zeros((1, 3, 3, 2)), np.zeros((1, 3, 3, 27)), padding=1,
                         offset_scale=v), "offset_scale"),
    (lambda v: ops.deform_roi_pool(np.zeros((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 2.0]]),
                                   spatial_scale=v), "spatial_scale"),
    (lambda v: ops.deform_roi_pool(np.zeros((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 2.0]]),
                                   gamma=v), "gamma"),
    (lambda v: ops.deform_psroi_pool(np.zeros((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 2.0]]),
                                     trans_std=v), "trans_std"),
], ids=["dcnv3", "dcnv4", "roi_spatial_scale", "roi_gamma", "psroi_trans_std"])
@pytest.mark.parametrize("value", [10 ** 400, -10 ** 400], ids=["1e400", "-1e400"])
def test_an_int_too_large_for_a_float_names_the_argument(call, name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected a finite .*number, got -?1000"):
        call(value)
