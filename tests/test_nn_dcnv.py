"""The DCNv3 and DCNv4 blocks: every gradient (input and all parameters) against centred
finite differences in float64, end to end; what a fresh block computes, against shifted sums
written out in NumPy; the packed layout of DCNv4 against DCNv3; argument checks.

Bilinear sampling has kinks at integer coordinates. The gradient checks give the blocks
offsets whose sample points stay away from integers (asserted with ``sample_points``, the
sampling formula written out from the definition), so a step of 1e-6 never crosses one.
"""
import numpy as np
import pytest
from scipy import ndimage, special, stats

from dcn_ref import ops
from dcn_ref.nn import DCNv3, DCNv4, Sequential

from nn_gradcheck import assert_gradients_match

TOL = 1e-6
MARGIN = 1e-3


def grid_points(kernel_size, remove_center):
    """The (i, j) of every point in the op's order: i over the kernel width outer, j over its
    height inner (column-major), without the centre when remove_center."""
    kh, kw = kernel_size
    return [(i, j) for i in range(kw) for j in range(kh)
            if not (remove_center and (i, j) == (kw // 2, kh // 2))]


def sample_points(block, offset):
    """(y, x) of every sample, (N, H, W, group, P) each, from offset (N, H, W, group*P*2)
    whose pairs are (x, y): y = h - pad + half + (j*dilation - half + dy) * offset_scale."""
    N, H, W, _ = offset.shape
    (kh, kw), (ph, pw), (dh, dw) = block.kernel_size, block.pad, block.dilation
    half_h, half_w = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    pts = np.array(grid_points(block.kernel_size, block.remove_center))   # (P, 2)
    pairs = offset.reshape(N, H, W, block.group, len(pts), 2)
    h = np.arange(H)[None, :, None, None, None]
    w = np.arange(W)[None, None, :, None, None]
    s = block.offset_scale
    y = h - ph + half_h + (pts[:, 1] * dh - half_h + pairs[..., 1]) * s
    x = w - pw + half_w + (pts[:, 0] * dw - half_w + pairs[..., 0]) * s
    return y, x


def distance_to_kinks(block, offset):
    y, x = sample_points(block, offset)
    both = np.concatenate([y.ravel(), x.ravel()])
    return float(np.min(np.abs(both - np.round(both))))


def off_kink(rng, shape, low, high, margin):
    """Random values in [low, high) whose fractional parts stay ``margin`` from integers."""
    return rng.integers(low, high, size=shape) + rng.uniform(margin, 1 - margin, size=shape)


def randomise(block, rng):
    """Every parameter non-trivial; offsets of about a pixel, off the kinks (small weights,
    biases with fractional parts in [0.3, 0.7]). Returns the offset bias's name."""
    p = block.params
    for name, value in p.items():
        value[...] = 0.5 * rng.standard_normal(value.shape)
    if "norm_weight" in p:
        p["norm_weight"][...] = rng.uniform(0.5, 1.5, p["norm_weight"].shape)
    weight = p["offset_weight"] if "offset_weight" in p else p["offset_mask_weight"]
    bias = p["offset_bias"] if "offset_bias" in p else p["offset_mask_bias"]
    weight[...] = 0.01 * rng.standard_normal(weight.shape)
    bias[...] = off_kink(rng, bias.shape, -2, 1, margin=0.3)


# -- gradients, end to end ----------------------------------------------------------------

DCNV3_CASES = [
    dict(channels=4, group=2, center_feature_scale=True),
    dict(channels=4, group=2, kernel_size=3, dw_kernel_size=5, pad=2, dilation=2,
         offset_scale=0.5, remove_center=True),
    dict(channels=3, group=1, kernel_size=(1, 3), pad=(0, 1)),
]


@pytest.mark.parametrize("config", DCNV3_CASES)
def test_dcnv3_block_gradients(config):
    rng = np.random.default_rng(0)
    block = DCNv3(**config, rng=rng, dtype=np.float64)
    randomise(block, rng)
    x = rng.standard_normal((2, 4, 3, block.channels))
    block.forward(x)
    offset = block._cache[6]                    # what forward fed the op (see DCNv3.forward)
    assert np.abs(offset).max() > 0.5 and distance_to_kinks(block, offset) > MARGIN
    errors = assert_gradients_match(block, x, TOL)
    assert set(errors) == {"input", *block.params}


DCNV4_CASES = [
    dict(channels=4, group=2, center_feature_scale=True),                 # D = 54 -> 56
    dict(channels=6, group=3, dw_kernel_size=3, remove_center=True, offset_scale=0.5,
         output_bias=False),                                              # D = 72, no padding
    dict(channels=4, group=1, kernel_size=(3, 1), pad=(1, 0), without_pointwise=True,
         center_feature_scale=True),                                      # D = 9 -> 16
]


@pytest.mark.parametrize("config", DCNV4_CASES)
def test_dcnv4_block_gradients(config):
    rng = np.random.default_rng(1)
    block = DCNv4(**config, rng=rng, dtype=np.float64)
    randomise(block, rng)
    x = rng.standard_normal((2, 3, 4, block.channels))
    block.forward(x)
    om = block._cache[3]                        # what forward fed the op (see DCNv4.forward)
    used = block.group * block.points * 3
    offset = om[..., :used].reshape(*om.shape[:3], block.group, 3 * block.points)
    offset = offset[..., :2 * block.points].reshape(*om.shape[:3], -1)
    assert distance_to_kinks(block, offset) > MARGIN
    errors = assert_gradients_match(block, x, TOL)
    assert set(errors) == {"input", *block.params}
    # the padding rows of the offset_mask projection feed nothing
    assert not np.any(block.grads["offset_mask_weight"][used:])
    assert not np.any(block.grads["offset_mask_bias"][used:])


# -- the forward pass, composed from independent pieces -----------------------------------

def depthwise_by_scipy(x, weight, bias):
    """Zero-padded 'same' depthwise correlation, one scipy.ndimage.correlate per plane."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[3]):
            out[n, :, :, c] = ndimage.correlate(x[n, :, :, c], weight[c, 0], mode="constant")
    return out + bias


@pytest.mark.parametrize("center_feature_scale", [False, True])
def test_dcnv3_block_forward_is_the_composition(center_feature_scale):
    rng = np.random.default_rng(6)
    block = DCNv3(channels=4, group=2, dw_kernel_size=5, offset_scale=0.8,
                  center_feature_scale=center_feature_scale, rng=rng, dtype=np.float64)
    randomise(block, rng)
    p = block.params
    x = rng.standard_normal((2, 4, 5, 4))
    x_proj = x @ p["input_proj_weight"].T + p["input_proj_bias"]
    t = depthwise_by_scipy(x, p["dw_conv_weight"], p["dw_conv_bias"])
    t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
    t = t * p["norm_weight"] + p["norm_bias"]
    x1 = t * stats.norm.cdf(t)                                          # exact GELU
    offset = x1 @ p["offset_weight"].T + p["offset_bias"]
    logits = (x1 @ p["mask_weight"].T + p["mask_bias"]).reshape(2, 4, 5, 2, 9)
    mask = special.softmax(logits, axis=-1).reshape(2, 4, 5, 18)
    y = ops.dcnv3(x_proj, offset, mask, 3, padding=1, group=2, offset_scale=0.8)
    if center_feature_scale:
        s = special.expit(x1 @ p["center_feature_scale_proj_weight"].T
                          + p["center_feature_scale_proj_bias"])        # (N, H, W, group)
        s = np.repeat(s, 2, axis=-1)
        y = y * (1 - s) + x_proj * s
    expected = y @ p["output_proj_weight"].T + p["output_proj_bias"]
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-11, atol=1e-12)


def test_dcnv4_block_forward_is_the_composition():
    rng = np.random.default_rng(7)
    block = DCNv4(channels=4, group=2, dw_kernel_size=3, center_feature_scale=True,
                  output_bias=False, rng=rng, dtype=np.float64)
    randomise(block, rng)
    p = block.params
    x = rng.standard_normal((2, 4, 5, 4))
    v = x @ p["value_proj_weight"].T + p["value_proj_bias"]
    q = depthwise_by_scipy(x, p["offset_mask_dw_weight"], p["offset_mask_dw_bias"])
    om = q @ p["offset_mask_weight"].T + p["offset_mask_bias"]          # (2, 4, 5, 56)
    y = ops.dcnv4(v, om, 3, padding=1, group=2)
    s = np.repeat(special.expit(y @ p["center_feature_scale_proj_weight"].T
                                + p["center_feature_scale_proj_bias"]), 2, axis=-1)
    expected = (y * (1 - s) + v * s) @ p["output_proj_weight"].T       # no bias
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-11, atol=1e-12)


# -- what a fresh block computes ---------------------------------------------------------

def grid_mean(x_proj, block, shift_x=0):
    """The mean of the P grid points around every pixel (moved ``shift_x`` >= 0 columns to
    the right), zero padding, by shifted sums."""
    (ph, pw), (dh, dw) = block.pad, block.dilation
    xp = np.pad(x_proj, ((0, 0), (ph, ph), (pw, pw + shift_x), (0, 0)))
    H, W = x_proj.shape[1:3]
    pts = grid_points(block.kernel_size, block.remove_center)
    return sum(xp[:, j * dh:j * dh + H, i * dw + shift_x:i * dw + shift_x + W]
               for i, j in pts) / len(pts)


@pytest.mark.parametrize("config", [dict(), dict(remove_center=True, dilation=2, pad=2),
                                    dict(center_feature_scale=True, kernel_size=5, pad=2)])
def test_fresh_dcnv3_block_averages_the_grid(config):
    # zero offset and mask projections: offsets 0 and softmax(0) = 1/P on every point
    rng = np.random.default_rng(2)
    block = DCNv3(channels=4, group=2, **config, rng=rng, dtype=np.float64)
    block.params["input_proj_bias"][...] = rng.standard_normal(4)
    block.params["output_proj_bias"][...] = rng.standard_normal(4)
    x = rng.standard_normal((2, 5, 6, 4))
    p = block.params
    x_proj = x @ p["input_proj_weight"].T + p["input_proj_bias"]
    y = grid_mean(x_proj, block)
    if block.center_feature_scale:
        y = 0.5 * y + 0.5 * x_proj                                      # sigmoid(0) = 1/2
    expected = y @ p["output_proj_weight"].T + p["output_proj_bias"]
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_dcnv4_block_with_packed_uniform_weights_equals_a_fresh_dcnv3_block():
    # offset_mask bias: each group's 2P offsets 0, then its P weights 1/P; padding junk
    rng = np.random.default_rng(3)
    v3 = DCNv3(channels=6, group=3, rng=rng, dtype=np.float64)
    v4 = DCNv4(channels=6, group=3, rng=rng, dtype=np.float64)
    v4.params["value_proj_weight"][...] = v3.params["input_proj_weight"]
    v4.params["output_proj_weight"][...] = v3.params["output_proj_weight"]
    P = v4.points
    bias = v4.params["offset_mask_bias"]
    bias[...] = 99.0                                                    # padding: ignored
    bias[:3 * 3 * P] = np.tile(np.r_[np.zeros(2 * P), np.full(P, 1 / P)], 3)
    x = rng.standard_normal((1, 4, 5, 6))
    np.testing.assert_allclose(v4.forward(x), v3.forward(x), rtol=1e-12, atol=1e-12)


def test_an_x_offset_of_one_moves_every_point_one_column():
    # offset pairs are (x, y): dx = 1 on every point shifts the grid one pixel right
    rng = np.random.default_rng(4)
    block = DCNv3(channels=2, group=1, rng=rng, dtype=np.float64)
    block.params["offset_bias"][0::2] = 1.0
    x = rng.standard_normal((1, 4, 5, 2))
    x_proj = x @ block.params["input_proj_weight"].T
    expected = grid_mean(x_proj, block, shift_x=1) @ block.params["output_proj_weight"].T
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_fresh_blocks_match_internimage_initialisation():
    block = DCNv3(channels=8, group=2, rng=0)
    p = block.params
    assert p["offset_weight"].shape == (2 * 2 * 9, 8) and p["mask_weight"].shape == (18, 8)
    for name in ("offset_weight", "offset_bias", "mask_weight", "mask_bias",
                 "input_proj_bias", "output_proj_bias", "norm_bias"):
        assert not np.any(p[name]), name
    limit = np.sqrt(6 / 16)                                             # Xavier, 8 -> 8
    assert 0.5 * limit < np.abs(p["input_proj_weight"]).max() <= limit
    v4 = DCNv4(channels=8, group=2, kernel_size=3)
    assert v4.params["offset_mask_weight"].shape == (56, 8)             # 2*9*3 = 54 -> 56
    assert set(v4.params) == {"value_proj_weight", "value_proj_bias", "offset_mask_weight",
                              "offset_mask_bias", "output_proj_weight", "output_proj_bias"}


def test_torch_names_are_the_keys_of_the_original_modules():
    # the state_dict keys of InternImage's DCNv3 (dw_conv = Sequential(Conv2d,
    # Sequential(to_channels_last, LayerNorm), GELU)) and OpenGVLab's DCNv4, from their source
    internimage = {"dw_conv.0.weight", "dw_conv.0.bias", "dw_conv.1.1.weight", "dw_conv.1.1.bias",
                   "offset.weight", "offset.bias", "mask.weight", "mask.bias",
                   "input_proj.weight", "input_proj.bias", "output_proj.weight",
                   "output_proj.bias", "center_feature_scale_proj_weight",
                   "center_feature_scale_proj_bias"}
    v3 = DCNv3(channels=4, group=2, center_feature_scale=True)
    assert {v3.TORCH_NAMES[k] for k in v3.params} == internimage
    opengvlab = {"value_proj.weight", "value_proj.bias", "offset_mask_dw.weight",
                 "offset_mask_dw.bias", "offset_mask.weight", "offset_mask.bias",
                 "output_proj.weight", "output_proj.bias", "center_feature_scale_proj_weight",
                 "center_feature_scale_proj_bias"}
    v4 = DCNv4(channels=4, group=2, dw_kernel_size=3, center_feature_scale=True)
    assert {v4.TORCH_NAMES[k] for k in v4.params} == opengvlab


def test_float32_blocks_and_training_in_a_sequential():
    rng = np.random.default_rng(5)
    model = Sequential([DCNv3(channels=4, group=2, rng=rng, name="v3"),
                        DCNv4(channels=4, group=2, rng=rng, name="v4")])
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    out = model.forward(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert model.backward(np.ones_like(out)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())
    assert "v3.offset_weight" in model.state_dict()


# -- arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=6, group=4), "group: expected a divisor of channels = 6"),
    (dict(channels=4, stride=2), "pad: expected stride 1"),
    (dict(channels=4, kernel_size=5, pad=1), "pad: expected stride 1"),
    (dict(channels=4, kernel_size=(2, 3), pad=(1, 1), dilation=(2, 1), remove_center=True),
     "remove_center: expected an odd kernel_size"),
    (dict(channels=4, dw_kernel_size=4), "dw_kernel_size: expected odd"),
    (dict(channels=4, offset_scale=float("nan")), "offset_scale"),
])
@pytest.mark.parametrize("block", [DCNv3, DCNv4])
def test_bad_arguments_are_named(block, kwargs, message):
    with pytest.raises(ValueError, match=message):
        block(**kwargs)


@pytest.mark.parametrize("block", [DCNv3, DCNv4])
def test_wrong_inputs_are_named(block):
    layer = block(channels=4, group=2)
    with pytest.raises(ValueError, match=r"4 entries on the last axis of \(N, H, W, C\)"):
        layer.forward(np.zeros((1, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        layer.forward(np.zeros((1, 3, 3, 4)))


@pytest.mark.parametrize("block", [DCNv3, DCNv4])
def test_empty_batches_and_non_finite_inputs_do_not_crash(block):
    layer = block(channels=4, group=2, center_feature_scale=True, rng=0, dtype=np.float64)
    empty = layer.forward(np.zeros((0, 3, 3, 4)))
    assert empty.shape == (0, 3, 3, 4)
    assert layer.backward(np.zeros_like(empty)).shape == (0, 3, 3, 4)
    x = np.ones((1, 3, 3, 4))
    x[0, 1, 1, 2], x[0, 0, 0, 0] = np.nan, np.inf
    with np.errstate(all="ignore"):                 # inf - inf in the layer norm: NaN
        out = layer.forward(x)
        grad = layer.backward(np.ones_like(out))
    assert out.shape == grad.shape == x.shape
