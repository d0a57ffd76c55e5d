"""The RoI layers: a fresh layer pools without offsets, the predicted offsets land in the
right bins, and every gradient (input and parameters) agrees with central differences."""
import numpy as np
import pytest

from dcn_ref import ops, reference_roi
from dcn_ref.gradcheck import numerical_entries, rel_error
from dcn_ref.nn import DeformPSRoIPool, DeformRoIPool

from helpers import assert_close
from roi_cases import distance_to, psroi_sample_points, random_rois, roi_sample_points


def check_layer_gradients(layer, x, rois, seed=0, tol=1e-6):
    """Every entry of the input and of every parameter against centred differences of
    sum(g * layer.forward(x, rois)); returns the relative errors by name."""
    rng = np.random.default_rng(seed)
    out = layer.forward(x, rois)
    g = rng.standard_normal(out.shape)
    analytic = {"input": layer.backward(g), **{k: v.copy() for k, v in layer.grads.items()}}

    def scalar():
        return np.sum(g * layer.forward(x, rois))

    errors = {}
    for name, array in {"input": x, **layer.params}.items():
        numeric = numerical_entries(scalar, array, np.arange(array.size))
        errors[name] = rel_error(analytic[name].reshape(-1), numeric)
    assert all(e <= tol for e in errors.values()), errors
    return errors


def test_a_fresh_deform_roi_pool_layer_pools_without_offsets():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 7))
    rois = random_rois(rng, 4, 2, 6, 7, 0.5).astype(np.float32)       # cast to the layer's dtype
    args = dict(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=2)
    plain = reference_roi.deform_roi_pool(x, rois.astype(np.float64), None, **args)
    layer = DeformRoIPool(3, **args, dtype=np.float64)
    assert_close(layer.forward(x, rois), plain, 1e-12, "fresh layer")
    modulated = DeformRoIPool(3, **args, modulated=True, dtype=np.float64)
    assert_close(modulated.forward(x, rois), 0.5 * plain, 1e-12, "fresh modulated layer (mask 0.5)")


def test_the_offset_predictor_fills_offset_k_xy_i_j():
    # the fc output of bin (i, j) in channel 0 (x) is entry i*pw + j, channel 1 (y) ph*pw + i*pw + j
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 7))
    rois = random_rois(rng, 2, 1, 6, 7, 1.0)
    layer = DeformRoIPool(2, output_size=(2, 3), sampling_ratio=2, dtype=np.float64)
    bias = rng.uniform(-1, 1, 12)
    layer.params["offset_bias"][...] = bias
    offset = np.broadcast_to(bias.reshape(1, 2, 2, 3), (2, 2, 2, 3))
    expected = reference_roi.deform_roi_pool(x, rois, offset, (2, 3), 1.0, 2, 0.1)
    assert_close(layer.forward(x, rois), expected, 1e-12, "offsets from the bias")


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_roi_pool_layer_gradients(modulated):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 5, 6))
    rois = random_rois(rng, 3, 2, 5, 6, 1.0)
    layer = DeformRoIPool(2, output_size=2, sampling_ratio=2, modulated=modulated,
                          dtype=np.float64)
    for param in layer.params.values():
        param[...] = rng.normal(0, 0.3, param.shape)
    layer.forward(x, rois)
    _, _, _, offset, mask = layer._cache
    points = roi_sample_points({"rois": rois, "offset": offset, "mask": mask},
                               dict(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2,
                                    gamma=0.1))
    assert distance_to(points, ([], [])) > 1e-4, "a sample sits on a kink: pick another seed"
    check_layer_gradients(layer, x, rois)


def test_a_fresh_deform_psroi_pool_layer_pools_its_score_maps_without_offsets():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 6, 7))
    rois = random_rois(rng, 3, 1, 6, 7, 1.0, min_size=1.0)
    layer = DeformPSRoIPool(3, output_dim=2, group_size=2, pooled_size=2, sample_per_part=2,
                            rng=0, dtype=np.float64)
    score = ops.conv2d(x, layer.params["score_weight"])
    expected = reference_roi.deform_psroi_pool(score, rois, None, 1.0, 2, 2, 2, sample_per_part=2)
    assert_close(layer.forward(x, rois), expected, 1e-12, "fresh layer")


def test_deform_psroi_pool_layer_gradients():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 5, 6))
    rois = random_rois(rng, 2, 1, 5, 6, 1.0, min_size=1.0)
    layer = DeformPSRoIPool(2, output_dim=2, group_size=2, pooled_size=2, part_size=2,
                            sample_per_part=2, trans_std=0.1, rng=0, dtype=np.float64)
    for param in layer.params.values():
        param[...] = rng.normal(0, 0.5, param.shape)
    layer.forward(x, rois)
    _, _, score, _, trans = layer._cache
    params = dict(spatial_scale=1.0, output_dim=2, group_size=2, pooled_size=2, part_size=2,
                  sample_per_part=2, trans_std=0.1)
    points = psroi_sample_points({"input": score, "rois": rois, "trans": trans}, params)
    bounds = ([-0.5, 4.5], [-0.5, 5.5])
    assert distance_to(points, bounds, window=bounds) > 1e-4, "pick another seed"
    assert np.abs(trans).max() > 0.1, "the offsets should move the samples"
    check_layer_gradients(layer, x, rois)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match=r"channels: expected a positive int, got 0"):
        DeformRoIPool(0)
    with pytest.raises(ValueError, match=r"sampling_ratio: expected an int in \[0, 1024\], got -2"):
        DeformRoIPool(3, sampling_ratio=-2)
    with pytest.raises(ValueError, match=r"sample_per_part: expected an int in \[1, 1024\], got 0"):
        DeformPSRoIPool(3, 2, sample_per_part=0)
    layer = DeformRoIPool(3, output_size=2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"deform_roi_pool: input: expected 3 channels"):
        layer.forward(np.zeros((1, 2, 4, 4)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"rois: expected an ndarray of shape \(K, 5\), got list"):
        layer.forward(np.zeros((1, 3, 4, 4)), [[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"rois: expected batch indices"):
        layer.forward(np.zeros((1, 3, 4, 4)), np.array([[1.0, 0, 0, 1, 1]]))
