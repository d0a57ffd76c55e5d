"""The Keras models: layer names and order, sizes, parameter counts by hand, and starting a
deformable model from a plain one by layer name."""
import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.nn import ConvOffset2D, DeformConv2D

CNN_NAMES = ["conv11", "conv11_relu", "conv11_bn", "conv12", "conv12_relu", "conv12_bn",
             "conv21", "conv21_relu", "conv21_bn", "conv22", "conv22_relu", "conv22_bn",
             "avg_pool", "fc1"]


def conv_params(c_in, c_out):
    return c_out * c_in * 9 + c_out


# conv11..conv22 with biases, four BatchNorms (gamma, beta), fc1
CNN_PARAMS = (conv_params(1, 32) + conv_params(32, 64) + conv_params(64, 128)
              + conv_params(128, 128) + 2 * (32 + 64 + 128 + 128) + 128 * 10 + 10)


def test_cnn_layers_and_size():
    model = models.cnn()
    assert [layer.name for layer in model] == CNN_NAMES
    assert model.num_params() == CNN_PARAMS == 242250
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert model.forward(x).shape == (3, 10) and model.dtype == np.float32
    shapes = []
    for layer in model:
        x = layer.forward(x)
        shapes.append(x.shape[1:])
    assert shapes[2] == (32, 28, 28) and shapes[5] == (64, 14, 14)
    assert shapes[8] == (128, 14, 14) and shapes[11] == (128, 7, 7)


def test_deform_cnn_offset_inserts_conv_offset_layers():
    model = models.deform_cnn("offset")
    names = [layer.name for layer in model]
    expected = list(CNN_NAMES)
    for conv in ("conv22", "conv21", "conv12"):
        expected.insert(expected.index(conv), f"{conv}_offset")
    assert names == expected
    # a 3x3 'same' convolution without bias from C to 2C channels for each
    extra = sum(2 * c * c * 9 for c in (32, 64, 128))
    assert model.num_params() == CNN_PARAMS + extra
    assert all(isinstance(model[f"{c}_offset"], ConvOffset2D) for c in models.DEFORMED)
    assert model.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_cnn_dcn_swaps_the_convolutions(modulated):
    model = models.deform_cnn("dcn", modulated=modulated)
    assert [layer.name for layer in model] == CNN_NAMES
    # offset conv: 2*9 channels with bias; mask conv: 9 channels with bias
    per_input = (2 * 9 + (9 if modulated else 0))
    extra = sum(per_input * (c_in * 9 + 1) for c_in in (32, 64, 128))
    assert model.num_params() == CNN_PARAMS + extra
    for name in models.DEFORMED:
        assert isinstance(model[name], DeformConv2D) and model[name].modulated == modulated
    assert model.forward(np.zeros((2, 1, 20, 20), np.float32)).shape == (2, 10)


def test_same_seed_same_initial_weights_in_shared_layers():
    plain, offset, dcn = models.cnn(seed=3), models.deform_cnn("offset", seed=3), \
        models.deform_cnn("dcn", seed=3)
    for key, value in plain.params.items():
        np.testing.assert_array_equal(offset.params[key], value)
        np.testing.assert_array_equal(dcn.params[key], value)
    assert not np.array_equal(models.cnn(seed=4).params["conv11.weight"], plain.params["conv11.weight"])


@pytest.mark.parametrize("kind", ["offset", "dcn"])
def test_a_trained_cnn_starts_a_deform_cnn(kind):
    rng = np.random.default_rng(0)
    trained = models.cnn(seed=1)
    for p in trained.params.values():                    # "train" it: any other values
        p[...] = rng.standard_normal(p.shape)
    for name in ("conv11_bn", "conv22_bn"):
        trained[name].state["running_mean"][...] = rng.standard_normal(trained[name].channels)
    fresh = models.deform_cnn(kind, seed=2)
    deform = models.deform_cnn(kind, seed=2)
    missing, unexpected = deform.load_state_dict(trained.state_dict(), strict=False)
    assert unexpected == []
    if kind == "offset":
        assert set(missing) == {f"{c}_offset.weight" for c in models.DEFORMED}
    else:
        assert set(missing) == {f"{c}.offset_{p}" for c in models.DEFORMED for p in ("weight", "bias")}
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(deform.state_dict()[key], value)
    for key in missing:                                   # the offset layers keep their init
        np.testing.assert_array_equal(deform.state_dict()[key], fresh.state_dict()[key])


def test_dcn_started_from_a_cnn_computes_the_cnn():
    # zero offsets sample the pixel centres, so the deformable model is the plain one
    x = np.random.default_rng(1).standard_normal((2, 1, 12, 12))
    plain = models.cnn(seed=5, dtype=np.float64)
    deform = models.deform_cnn("dcn", seed=6, dtype=np.float64)
    deform.load_state_dict(plain.state_dict(), strict=False)
    np.testing.assert_allclose(deform.forward(x), plain.forward(x), rtol=1e-10, atol=1e-12)


def test_offset_model_with_zero_offsets_computes_the_cnn():
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12))
    plain = models.cnn(seed=5, dtype=np.float64)
    deform = models.deform_cnn("offset", seed=6, dtype=np.float64)
    deform.load_state_dict(plain.state_dict(), strict=False)
    assert not np.allclose(deform.forward(x), plain.forward(x))
    for name in models.DEFORMED:
        deform[f"{name}_offset"].params["weight"][...] = 0
    np.testing.assert_allclose(deform.forward(x), plain.forward(x), rtol=1e-10, atol=1e-12)


def test_model_arguments():
    with pytest.raises(ValueError, match=r"kind: expected one of \['offset', 'dcn'\], got 'dcnv2'"):
        models.deform_cnn("dcnv2")
    with pytest.raises(ValueError, match=r"modulated: expected False for kind 'offset'"):
        models.deform_cnn("offset", modulated=True)
    assert models.cnn(dtype=np.float64).dtype == np.float64
