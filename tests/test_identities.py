"""Cases whose answer is known without any implementation of the op."""
import numpy as np
import pytest

from dcn_ref import ops

from helpers import assert_close


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("G,groups,stride,padding,dilation", [
    (1, 1, 1, 1, 1), (2, 2, (2, 1), (0, 2), (2, 1)), (4, 1, 2, 2, 2)])
def test_zero_offsets_and_unit_mask_give_conv2d(dtype, tol, G, groups, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    weight = rng.standard_normal((6, 4 // groups, 3, 2)).astype(dtype)
    bias = rng.standard_normal(6).astype(dtype)
    expected = ops.conv2d(x, weight, bias, stride, padding, dilation, groups)
    out_h, out_w = expected.shape[2:]
    offset = np.zeros((2, 2 * G * 6, out_h, out_w), dtype)
    mask = np.ones((2, G * 6, out_h, out_w), dtype)
    assert_close(ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation), expected,
                 tol, "v1")
    assert_close(ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask),
                 expected, tol, "v2")
    # and the same for every gradient the two ops share
    g = rng.standard_normal(expected.shape).astype(dtype)
    plain = ops.conv2d_backward(g, x, weight, bias, stride, padding, dilation, groups)
    deform = ops.deform_conv2d_backward(g, x, offset, weight, bias, stride, padding, dilation, mask)
    for name in ("input", "weight", "bias"):
        assert_close(getattr(deform, name), getattr(plain, name), tol, name)


def shifted(x, dy, dx):
    """x moved so that shifted[..., y, x] = x[..., y + dy, x + dx], zero where that is outside."""
    out = np.zeros_like(x)
    H, W = x.shape[-2:]
    ys = slice(max(0, -dy), min(H, H - dy))
    xs = slice(max(0, -dx), min(W, W - dx))
    out[..., ys, xs] = x[..., ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    return out


@pytest.mark.parametrize("dy,dx", [(1, 0), (0, -2), (-1, 3), (2, 2)])
def test_integer_offsets_give_a_shifted_convolution_exactly(dy, dx):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7))
    weight = rng.standard_normal((4, 3, 3, 3))
    # no padding: conv2d's zero padding would hide pixels that the shifted taps do read
    out_h, out_w = ops.conv2d(x, weight).shape[2:]
    offset = np.zeros((2, 2 * 9, out_h, out_w))
    offset[:, 0::2] = dy
    offset[:, 1::2] = dx
    np.testing.assert_array_equal(ops.deform_conv2d(x, offset, weight),
                                  ops.conv2d(shifted(x, dy, dx), weight))


def test_half_pixel_offset_averages_two_neighbours():
    image = np.array([[[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]]])
    coords = np.array([[[0.0, 0.5], [0.5, 1.0], [0.5, 0.5], [-0.5, 0.0], [1.0, 2.5]]])
    # (0, .5): mean of 0, 10; (.5, 1): mean of 10, 40; (.5, .5): mean of 0, 10, 30, 40;
    # (-.5, 0): half of 0 (zeros above); (1, 2.5): half of 50 (zeros right)
    np.testing.assert_allclose(ops.bilinear_sample(image, coords), [[5.0, 25.0, 20.0, 0.0, 25.0]])
    np.testing.assert_allclose(ops.bilinear_sample(image, coords, "border"),
                               [[5.0, 25.0, 20.0, 0.0, 50.0]])


def test_gradient_at_integer_points_is_the_right_derivative():
    # on the kink at x = 1 the derivative is taken inside the cell [1, 2]: 20 - 10 = 10
    image = np.array([[[0.0, 10.0, 20.0, 25.0]]])
    coords = np.array([[[0.0, 1.0], [0.0, 3.0], [0.0, -1.0], [0.0, 0.0]]])
    g = ops.bilinear_sample_backward(np.ones((1, 4)), image, coords).coords
    # x=1 -> 20-10; x=3 -> cell [3, 4]: 0 - 25 (zeros right); x=-1 -> cell [-1, 0]: 0 - 0;
    # x=0 -> 10 - 0
    np.testing.assert_allclose(g[0, :, 1], [10.0, -25.0, 0.0, 10.0])
    gb = ops.bilinear_sample_backward(np.ones((1, 4)), image, coords, "border").coords
    # border: right derivative of the clamp is 0 at x = W-1 = 3 and below 0
    np.testing.assert_allclose(gb[0, :, 1], [10.0, 0.0, 0.0, 10.0])


def test_offset_sample_moves_each_channel_by_its_own_offset():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(1, 2, 3, 4)
    offset = np.zeros((1, 4, 3, 4))
    offset[0, 1] = 1.0     # channel 0: dx = +1 (read one pixel to the right)
    offset[0, 2] = -1.0    # channel 1: dy = -1 (read one row up)
    out = ops.offset_sample(x, offset, "zeros")
    np.testing.assert_array_equal(out[0, 0, :, :3], x[0, 0, :, 1:])
    np.testing.assert_array_equal(out[0, 0, :, 3], 0.0)
    np.testing.assert_array_equal(out[0, 1, 1:], x[0, 1, :2])
    np.testing.assert_array_equal(out[0, 1, 0], 0.0)
    border = ops.offset_sample(x, offset)  # default "border" repeats the edge instead
    np.testing.assert_array_equal(border[0, 0, :, 3], x[0, 0, :, 3])
    np.testing.assert_array_equal(border[0, 1, 0], x[0, 1, 0])
