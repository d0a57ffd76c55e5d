"""dcnv3 and dcnv4 on cases whose answers are known without the code: a layout case worked
out by hand (non-square kernel, stride and dilation), shifted copies, the collapsed grid of
offset_scale = 0, the packed layout of DCNv4 and the removed centre."""
import numpy as np

from dcn_ref import ops

from dcnv3_cases import dcnv3_case, pack, unpack
from helpers import assert_close, compare

# -- the layout, by hand ----------------------------------------------------------------------
# input (N=1, H=5, W=4, C=2): channel 0 is 10*row + col, channel 1 is 100 + 10*row + col. Both
# are linear, so inside the image bilinear interpolation returns the same formula at any
# fractional (y, x): I0(y, x) = 10*y + x.
# kernel_size (kh=2, kw=3), stride (2, 1), padding (0, 1), dilation (2, 1), group 2 (one
# channel each), offset_scale 0.5:
#   H_out = (5 + 0 - (2*1 + 1)) // 2 + 1 = 2,  W_out = (4 + 2 - (1*2 + 1)) // 1 + 1 = 4
#   half_h = 2*(2 - 1)//2 = 1,  half_w = 1*(3 - 1)//2 = 1,  P = 6
#   points, column-major (kernel column i outer, kernel row j inner):
#   p = 0 (i=0, j=0), 1 (0, 1), 2 (1, 0), 3 (1, 1), 4 (2, 0), 5 (2, 1)
# Output pixel (ho=1, wo=2): grid centre y = 1*2 - 0 + 1 = 3, x = 2*1 - 1 + 1 = 2.
#   group 0, point 3 (i=1, j=1), weight 2, offset (x, y) = (0.5, -0.4) at entries 6 and 7:
#     y = 3 + (1*2 - 1 - 0.4)*0.5 = 3.3,  x = 2 + (1*1 - 1 + 0.5)*0.5 = 2.25
#     out[0, 1, 2, 0] = 2 * (10*3.3 + 2.25) = 2 * 35.25 = 70.5
#   group 1, point 4 (i=2, j=0), weight -1, offset (x, y) = (-0.6, 0.8) at entries
#   (1*6 + 4)*2 = 20 and 21, weight entry 1*6 + 4 = 10:
#     y = 3 + (0*2 - 1 + 0.8)*0.5 = 2.9,  x = 2 + (2*1 - 1 - 0.6)*0.5 = 2.2
#     out[0, 1, 2, 1] = -(100 + 29 + 2.2) = -131.2
# Output pixel (ho=0, wo=0): centre y = 0*2 - 0 + 1 = 1, x = 0*1 - 1 + 1 = 0.
#   group 0, point 5 (i=2, j=1), weight 1, no offset:
#     y = 1 + (1*2 - 1)*0.5 = 1.5,  x = 0 + (2*1 - 1)*0.5 = 0.5,  out[0, 0, 0, 0] = 15.5
# Every other weight is 0, so every other output is 0.
# Gradients of out[0, 1, 2, 0] (grad_output one-hot there):
#   d/d weight of group 0 point 3 = the sample = 35.25
#   d/d its x offset = weight * offset_scale * dI0/dx = 2 * 0.5 * 1 = 1
#   d/d its y offset = weight * offset_scale * dI0/dy = 2 * 0.5 * 10 = 10

HAND = dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1), dilation=(2, 1), group=2,
            offset_scale=0.5)


def hand_case():
    rows, cols = np.mgrid[0:5, 0:4]
    x = np.stack([10.0 * rows + cols, 100 + 10.0 * rows + cols], -1)[None]   # (1, 5, 4, 2)
    offset = np.zeros((1, 2, 4, 2 * 6 * 2))
    mask = np.zeros((1, 2, 4, 2 * 6))
    offset[0, 1, 2, 6:8] = 0.5, -0.4
    mask[0, 1, 2, 3] = 2.0
    offset[0, 1, 2, 20:22] = -0.6, 0.8
    mask[0, 1, 2, 10] = -1.0
    mask[0, 0, 0, 5] = 1.0
    return x, offset, mask


def hand_expected():
    expected = np.zeros((1, 2, 4, 2))
    expected[0, 1, 2, 0] = 70.5
    expected[0, 1, 2, 1] = -131.2
    expected[0, 0, 0, 0] = 15.5
    return expected


def test_layout_worked_by_hand():
    x, offset, mask = hand_case()
    np.testing.assert_allclose(ops.dcnv3(x, offset, mask, **HAND), hand_expected(), atol=1e-12)
    g = np.zeros((1, 2, 4, 2))
    g[0, 1, 2, 0] = 1.0
    grads = ops.dcnv3_backward(g, x, offset, mask, **HAND)
    np.testing.assert_allclose(grads.mask[0, 1, 2, 3], 35.25, atol=1e-12)
    np.testing.assert_allclose(grads.offset[0, 1, 2, 6:8], [1.0, 10.0], atol=1e-12)


def test_dcnv4_layout_worked_by_hand():
    # the same case packed by hand: group g's block is [18g, 18g + 18), 12 offsets then 6
    # weights, and D = 40 leaves 4 padding entries (filled with junk that must be ignored)
    x, _, _ = hand_case()
    offset_mask = np.zeros((1, 2, 4, 40))
    offset_mask[..., 36:] = 1e3
    offset_mask[0, 1, 2, 6:8] = 0.5, -0.4      # group 0, point 3: x at 2*3, y next
    offset_mask[0, 1, 2, 12 + 3] = 2.0         # its weight at 12 + 3
    offset_mask[0, 1, 2, 18 + 8:18 + 10] = -0.6, 0.8   # group 1, point 4: x at 18 + 2*4
    offset_mask[0, 1, 2, 18 + 12 + 4] = -1.0   # its weight at 18 + 12 + 4
    offset_mask[0, 0, 0, 12 + 5] = 1.0         # group 0, point 5's weight
    np.testing.assert_allclose(ops.dcnv4(x, offset_mask, **HAND), hand_expected(), atol=1e-12)


# -- identities -------------------------------------------------------------------------------

def test_zero_offsets_and_one_hot_weights_give_shifted_copies():
    # 3x3, stride 1, padding 1: point p = (i, j) = divmod(p, 3) reads pixel (ho - 1 + j, wo - 1 + i)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 4))                    # 2 groups of 2 channels
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for p0, p1 in [(0, 8), (5, 1), (4, 7)]:                   # (group 0's point, group 1's)
        mask = np.zeros((2, 4, 5, 18))
        mask[..., p0] = 1.0
        mask[..., 9 + p1] = 1.0
        out = ops.dcnv3(x, np.zeros((2, 4, 5, 36)), mask, 3, padding=1, group=2)
        for g, p in ((0, p0), (1, p1)):
            i, j = divmod(p, 3)
            np.testing.assert_array_equal(out[..., 2 * g:2 * g + 2],
                                          padded[:, j:j + 4, i:i + 5, 2 * g:2 * g + 2])


def test_offset_scale_zero_collapses_every_point_onto_the_grid_centre():
    # kernel (3, 5), stride (2, 1), padding (1, 2): half = (1, 2), so every point of (ho, wo)
    # sits at y = 2*ho - 1 + 1 = 2*ho, x = wo - 2 + 2 = wo, whatever its offset
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 5, 3))
    offset = rng.uniform(-3, 3, (1, 3, 5, 3 * 15 * 2))
    mask = rng.standard_normal((1, 3, 5, 3 * 15))
    out = ops.dcnv3(x, offset, mask, (3, 5), stride=(2, 1), padding=(1, 2), group=3,
                    offset_scale=0.0)
    weight_sums = mask.reshape(1, 3, 5, 3, 15).sum(-1)       # (N, H_out, W_out, group)
    expected = x[:, 0:6:2, :, :] * weight_sums               # one channel per group
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_dcnv4_is_dcnv3_on_the_unpacked_pair_and_its_padding_gets_zero_gradient():
    rng = np.random.default_rng(2)
    inputs, params = dcnv3_case(rng, kernel=(3, 3), group=2, group_channels=2, remove_center=True,
                                offset_scale=0.8)
    offset_mask = pack(inputs["offset"], inputs["mask"], 2, extra=5, fill=np.nan)
    offset, mask = unpack(offset_mask, 2, 8)
    np.testing.assert_array_equal(offset, inputs["offset"])
    out = ops.dcnv4(inputs["input"], offset_mask, **params)
    assert_close(out, ops.dcnv3(**inputs, **params), 0.0, "forward")
    g = rng.standard_normal(out.shape)
    v4 = ops.dcnv4_backward(g, inputs["input"], offset_mask, **params)
    v3 = ops.dcnv3_backward(g, **inputs, **params)
    assert_close(v4.input, v3.input, 0.0, "input")
    got_offset, got_mask = unpack(v4.offset_mask, 2, 8)
    assert_close(got_offset, v3.offset, 0.0, "offset")
    assert_close(got_mask, v3.mask, 0.0, "mask")
    assert (v4.offset_mask[..., 2 * 8 * 3:] == 0).all()


def test_remove_center_drops_exactly_the_centre_point():
    # kernel (kh=3, kw=5): the centre (i=2, j=1) is point 2*3 + 1 = 7 of the full 15
    rng = np.random.default_rng(3)
    inputs, params = dcnv3_case(rng, kernel=(3, 5), padding=(1, 2), group=2, group_channels=2,
                                remove_center=True)
    params["remove_center"] = False
    G, P, centre = 2, 14, 7
    offset = inputs["offset"].reshape(inputs["offset"].shape[:3] + (G, P, 2))
    mask = inputs["mask"].reshape(inputs["mask"].shape[:3] + (G, P))
    full_offset = np.insert(offset, centre, 0.3, axis=4).reshape(offset.shape[:3] + (-1,))
    full_mask = np.insert(mask, centre, 0.0, axis=4).reshape(mask.shape[:3] + (-1,))
    without = ops.dcnv3(**inputs, **{**params, "remove_center": True})
    assert_close(without, ops.dcnv3(inputs["input"], full_offset, full_mask, **params), 1e-12,
                 "forward")
    g = rng.standard_normal(without.shape)
    removed = ops.dcnv3_backward(g, **inputs, **{**params, "remove_center": True})
    full = ops.dcnv3_backward(g, inputs["input"], full_offset, full_mask, **params)
    keep = np.arange(15) != centre
    compare(removed._replace(offset=None, mask=None), full._replace(offset=None, mask=None),
                  1e-12, "input")
    assert_close(removed.mask, full.mask.reshape(mask.shape[:3] + (G, 15))[..., keep]
                 .reshape(removed.mask.shape), 1e-12, "mask")
    assert_close(removed.offset, full.offset.reshape(offset.shape[:3] + (G, 15, 2))[..., keep, :]
                 .reshape(removed.offset.shape), 1e-12, "offset")
