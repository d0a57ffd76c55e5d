"""Every layer's backward (input and every parameter) against centred finite differences,
in float64; then each whole model, end to end through the loss.

Bilinear sampling has kinks at integer coordinates, where a difference step across one
would disagree with the (right) derivative. The layer tests give the deformable layers
non-zero offsets whose fractional parts stay at least MARGIN from integers, and assert it,
so the step of 1e-6 never crosses a kink.
"""
import numba
import numpy as np
import pytest

from dcn_ref import models, ops
from dcn_ref.gradcheck import check_layer_gradients, numerical_vjp, off_kink, rel_error
from dcn_ref.nn import (BatchNorm2D, Conv2D, ConvOffset2D, DeformConv2D, Dense, GlobalAvgPool2D,
                        ReLU, SoftmaxCrossEntropy)

TOL = 1e-6
MARGIN = 1e-4  # a step of 1e-6 moves any offset by < 1e-5 here (|weights|, |inputs| < 5)


def assert_all_pass(rows, expected_names):
    failed = [r for r in rows if not r.passed]
    assert not failed, "gradients off: " + ", ".join(
        f"{r.op}.{r.input} rel. error {r.max_rel_error:.2e}" for r in failed)
    assert {r.input for r in rows} == set(expected_names), "not every gradient was checked"


def distance_to_kinks(offset):
    """Smallest distance of any offset to an integer. The base points of every sample (pixel
    centres, taps) are integers, so this is the distance of any sample point to a kink."""
    return float(np.min(np.abs(offset - np.round(offset))))


# -- plain layers ------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding="same"),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0),
         dilation=2, bias=False),
])
def test_conv2d_layer(config):
    rng = np.random.default_rng(0)
    layer = Conv2D(**config, rng=rng, dtype=np.float64)
    if "bias" in layer.params:
        layer.params["bias"][...] = rng.standard_normal(layer.out_channels)
    x = rng.standard_normal((2, config["in_channels"], 6, 7))
    assert_all_pass(check_layer_gradients(layer, x, tol=TOL), ["input", *layer.params])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d(training):
    rng = np.random.default_rng(1)
    layer = BatchNorm2D(3, dtype=np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, 3)
    layer.params["beta"][...] = rng.standard_normal(3)
    layer.state["running_mean"][...] = rng.standard_normal(3)
    layer.state["running_var"][...] = rng.uniform(0.5, 2.0, 3)
    layer.train(training)
    x = 2 * rng.standard_normal((2, 3, 4, 5)) + 1
    assert_all_pass(check_layer_gradients(layer, x, tol=TOL), ["input", "gamma", "beta"])


def test_relu():
    rng = np.random.default_rng(2)
    x = off_kink(rng, (2, 3, 4, 4), -3, 3)       # no value within 0.1 of the kink at 0
    assert_all_pass(check_layer_gradients(ReLU(), x, tol=TOL), ["input"])


def test_global_avg_pool():
    x = np.random.default_rng(3).standard_normal((2, 5, 3, 4))
    assert_all_pass(check_layer_gradients(GlobalAvgPool2D(), x, tol=TOL), ["input"])


def test_dense():
    rng = np.random.default_rng(4)
    layer = Dense(6, 4, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(4)
    assert_all_pass(check_layer_gradients(layer, rng.standard_normal((3, 6)), tol=TOL),
                    ["input", "weight", "bias"])


def test_softmax_cross_entropy():
    rng = np.random.default_rng(5)
    logits = 3 * rng.standard_normal((4, 6))
    labels = np.array([0, 5, 2, 2])
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, labels)
    analytic = loss.backward()
    numeric = numerical_vjp(lambda z: np.array(loss.forward(z, labels)), logits, np.array(1.0))
    assert rel_error(analytic, numeric) <= TOL


# -- the deformable layers ---------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_conv_offset_2d(padding_mode):
    rng = np.random.default_rng(6)
    # init_std 0.3 gives offsets of a pixel or two, spread over many cells
    layer = ConvOffset2D(3, init_std=0.3, padding_mode=padding_mode, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 5, 6))
    offset = ops.conv2d(x, layer.params["weight"], padding=1)
    assert np.abs(offset).max() > 1.5, "offsets too small to test anything"
    assert distance_to_kinks(offset) > MARGIN
    assert_all_pass(check_layer_gradients(layer, x, tol=TOL), ["input", "weight"])


def move_offsets_off_kinks(layer, rng):
    """Give a DeformConv2D non-zero offsets away from the kinks (fractional biases in
    [0.3, 0.7] plus small weights), a non-trivial mask and a bias, in place."""
    p = layer.params
    p["bias"][...] = rng.standard_normal(p["bias"].shape)
    p["offset_weight"][...] = 0.01 * rng.standard_normal(p["offset_weight"].shape)
    p["offset_bias"][...] = off_kink(rng, p["offset_bias"].shape, -2, 2, margin=0.3)
    if layer.modulated:
        p["mask_weight"][...] = 0.3 * rng.standard_normal(p["mask_weight"].shape)
        p["mask_bias"][...] = rng.standard_normal(p["mask_bias"].shape)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("offset_groups,stride", [(1, 1), (2, 2)])
def test_deform_conv_2d(modulated, offset_groups, stride):
    # every entry of the simplest case; 48 random entries of each array of the others (their
    # offset weights alone have 1,296 entries, and every entry costs two forward passes)
    entries = None if offset_groups == 1 and not modulated else 48
    rng = np.random.default_rng(7)
    layer = DeformConv2D(4, 3, 3, stride=stride, padding=1, offset_groups=offset_groups,
                         modulated=modulated, rng=rng, dtype=np.float64)
    move_offsets_off_kinks(layer, rng)
    x = rng.standard_normal((2, 4, 5, 6))
    offset = ops.conv2d(x, layer.params["offset_weight"], layer.params["offset_bias"],
                        stride=stride, padding=1)
    assert distance_to_kinks(offset) > MARGIN
    names = ["input", "weight", "bias", "offset_weight", "offset_bias"]
    names += ["mask_weight", "mask_bias"] if modulated else []
    assert_all_pass(check_layer_gradients(layer, x, entries=entries, tol=TOL), names)


# -- whole models, end to end through the loss -----------------------------------------
#
# Each check nudges 8 random entries of the input and of every parameter array. A model
# runs on two 8x8 images (the smallest size with 2x2 pixels left for the last BatchNorm).
# The DeformConv2D layers get offsets off the kinks as above. The ConvOffset2D layers have
# no bias to do that with: they start with offsets of about N(0, 0.15^2), so some of their
# ~20000 sample points lie within 1e-5 of an integer, and a nudge to a weight that moves
# them all can carry one across a kink. With a step of 1e-6 that happened in 1 of 12 seeds
# tried (an error of 2e-3 on conv11.bias); with 1e-7, in none of 12 (largest error 6e-8,
# rounding), so the step here is 1e-7.

MODEL_EPS = 1e-7


@pytest.fixture
def one_thread():
    """Run on one Numba thread: on these tiny images the parallel kernels gain nothing, and
    on a 2-core machine their idle threads contend with BLAS's, making the ~500 forward
    passes of a check several times slower. The numbers are the same either way."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def model_under_test(kind, rng):
    if kind == "cnn":
        return models.cnn(seed=1, dtype=np.float64)
    if kind == "offset":
        return models.deform_cnn("offset", seed=1, dtype=np.float64)
    model = models.deform_cnn("dcn", modulated=kind == "dcn v2", seed=1, dtype=np.float64)
    for name in models.DEFORMED:
        move_offsets_off_kinks(model[name], rng)
    return model


@pytest.mark.parametrize("kind", ["cnn", "offset", "dcn", "dcn v2"])
def test_whole_model(kind, one_thread):
    rng = np.random.default_rng(8)
    model = model_under_test(kind, rng)
    x = rng.standard_normal((2, 1, 8, 8))
    rows = check_layer_gradients(model, x, SoftmaxCrossEntropy(), np.array([3, 7]), entries=8,
                                 eps=MODEL_EPS, tol=TOL, seed=9)
    assert_all_pass(rows, ["input", *model.params])
