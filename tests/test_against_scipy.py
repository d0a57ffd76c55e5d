"""Samplers and conv2d against SciPy, an implementation that shares nothing with ours."""
import numpy as np
import pytest
from scipy import ndimage, signal

from dcn_ref import ops, reference

from helpers import assert_close

SCIPY_MODE = {"zeros": "grid-constant", "border": "nearest"}


def scipy_sample(image, coords, padding_mode):
    return np.stack([ndimage.map_coordinates(image[b], coords[b].T, order=1,
                                             mode=SCIPY_MODE[padding_mode], cval=0.0)
                     for b in range(image.shape[0])])


def edge_points(H, W):
    """Points exactly on pixel centres, on the image edge, on the -1 / H rim and just past it."""
    ys = [-1.5, -1.0, -0.999, -0.5, 0.0, 0.25, H - 1.0, H - 0.5, H - 0.001, float(H), H + 0.5]
    xs = [-1.2, -1.0, -0.3, 0.0, 1.0, W - 1.0, W - 0.75, float(W), W + 2.0]
    return np.array([(y, x) for y in ys for x in xs])


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("where", ["inside", "edge", "outside"])
def test_bilinear_sample_equals_map_coordinates(padding_mode, where):
    rng = np.random.default_rng(0)
    B, H, W = 3, 5, 7
    image = rng.standard_normal((B, H, W))
    if where == "inside":
        coords = rng.uniform(0, [H - 1, W - 1], (B, 200, 2))
    elif where == "edge":
        coords = np.broadcast_to(edge_points(H, W), (B,) + edge_points(H, W).shape).copy()
    else:
        coords = rng.uniform(-4, [H + 3, W + 3], (B, 200, 2))
        coords[:, :50, 0] = rng.uniform(-10, -1, 50)     # wholly above the image
        coords[:, 50:100, 1] = rng.uniform(W, W + 10, 50)  # wholly right of it
    ours = ops.bilinear_sample(image, coords, padding_mode)
    assert_close(ours, scipy_sample(image, coords, padding_mode), 1e-12, f"{padding_mode}/{where}")


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_bilinear_sample_float32_equals_map_coordinates(padding_mode):
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 6, 4)).astype(np.float32)
    coords = rng.uniform(-2, 7, (2, 100, 2)).astype(np.float32)
    ours = ops.bilinear_sample(image, coords, padding_mode)
    assert ours.dtype == np.float32
    reference_values = scipy_sample(image.astype(np.float64), coords.astype(np.float64), padding_mode)
    assert_close(ours, reference_values, 1e-6, padding_mode)


def test_loop_reference_bilinear_equals_map_coordinates():
    # the loop reference is itself checked against scipy, so the kernels inherit the check
    rng = np.random.default_rng(2)
    image = rng.standard_normal((2, 4, 5))
    coords = np.concatenate([rng.uniform(-2, 6, (2, 40, 2)),
                             np.broadcast_to(edge_points(4, 5), (2, 99, 2))], axis=1)
    for mode in ("zeros", "border"):
        assert_close(reference.bilinear_sample(image, coords, mode),
                     scipy_sample(image, coords, mode), 1e-12, mode)


def scipy_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """conv2d from scipy.signal.correlate: pad, dilate the kernel with zeros, correlate
    each channel pair, sum over the input channels of the group, subsample by the stride."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, C_in = x.shape[:2]
    C_out, Cg, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dilated = np.zeros((C_out, Cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    dilated[:, :, ::dh, ::dw] = weight
    outs = []
    for n in range(N):
        per_out = []
        for o in range(C_out):
            g = o // (C_out // groups)
            full = sum(signal.correlate(xp[n, g * Cg + c], dilated[o, c], mode="valid")
                       for c in range(Cg))
            per_out.append(full[::sh, ::sw] + (0 if bias is None else bias[o]))
        outs.append(per_out)
    return np.array(outs)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    ((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 2), 2), ((2, 2), (2, 2), (2, 2), 4),
])
def test_conv2d_equals_scipy_correlate(stride, padding, dilation, groups):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 8))
    weight = rng.standard_normal((8, 4 // groups, 3, 2))
    bias = rng.standard_normal(8)
    ours = ops.conv2d(x, weight, bias, stride, padding, dilation, groups)
    theirs = scipy_conv2d(x, weight, bias, stride, padding, dilation, groups)
    assert_close(ours, theirs, 1e-10, "conv2d")
    assert_close(reference.conv2d(x, weight, bias, stride, padding, dilation, groups), theirs,
                 1e-10, "reference.conv2d")
