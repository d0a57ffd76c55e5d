"""What the layers compute, checked against hand computation, scipy and the slow loop
references; train/eval modes; trainable flags; Sequential's names and checkpoints; errors."""
import numpy as np
import pytest
from scipy import ndimage

from dcn_ref import reference
from dcn_ref.nn import (BatchNorm2D, Conv2D, ConvOffset2D, DeformConv2D, Dense, GlobalAvgPool2D,
                        ReLU, Sequential, SoftmaxCrossEntropy)

f32, f64 = np.float32, np.float64


# -- forward values ---------------------------------------------------------------------

def test_conv2d_same_padding_against_the_loop_reference():
    rng = np.random.default_rng(0)
    layer = Conv2D(2, 3, 3, stride=2, rng=rng, dtype=f64)
    layer.params["bias"][...] = [0.5, -1.0, 2.0]
    x = rng.standard_normal((2, 2, 7, 6))
    out = layer.forward(x)
    assert out.shape == (2, 3, 4, 3)       # ceil(7/2), ceil(6/2)
    expected = reference.conv2d(x, layer.params["weight"], layer.params["bias"], stride=2, padding=1)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_conv_offset_2d_against_scipy_map_coordinates():
    rng = np.random.default_rng(1)
    layer = ConvOffset2D(2, init_std=0.4, rng=rng, dtype=f64)
    x = rng.standard_normal((1, 2, 5, 6))
    offset = reference.conv2d(x, layer.params["weight"], None, padding=1)   # (1, 4, 5, 6)
    rows, cols = np.mgrid[0:5, 0:6].astype(f64)
    expected = np.stack([ndimage.map_coordinates(x[0, c], [rows + offset[0, 2 * c],
                                                           cols + offset[0, 2 * c + 1]],
                                                 order=1, mode="nearest") for c in range(2)])
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_conv_offset_2d_with_zero_weights_is_the_identity():
    layer = ConvOffset2D(3, init_std=0.0, dtype=f64)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(layer.forward(x), x)
    grad = np.random.default_rng(3).standard_normal(x.shape)
    # the sampling passes grad straight through; the offset conv adds W^T(...) = 0
    np.testing.assert_array_equal(layer.backward(grad), grad)


@pytest.mark.parametrize("modulated", [False, True])
def test_fresh_deform_conv_2d_is_a_plain_convolution(modulated):
    # zero offsets sample the pixel centres; a zero mask logit gives sigmoid(0) = 0.5
    rng = np.random.default_rng(4)
    layer = DeformConv2D(3, 4, 3, stride=2, padding=1, modulated=modulated, rng=rng, dtype=f64)
    layer.params["bias"][...] = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, 6, 5))
    plain = reference.conv2d(x, layer.params["weight"], None, stride=2, padding=1)
    scale = 0.5 if modulated else 1.0
    expected = scale * plain + layer.params["bias"][:, None, None]
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_deform_conv_2d_against_the_loop_reference():
    rng = np.random.default_rng(5)
    layer = DeformConv2D(4, 2, 3, offset_groups=2, modulated=True, rng=rng, dtype=f64)
    p = layer.params
    for k in ("offset_weight", "offset_bias", "mask_weight", "mask_bias"):
        p[k][...] = 0.5 * rng.standard_normal(p[k].shape)
    x = rng.standard_normal((1, 4, 5, 5))
    offset = reference.conv2d(x, p["offset_weight"], p["offset_bias"], padding=1)
    mask = 1 / (1 + np.exp(-reference.conv2d(x, p["mask_weight"], p["mask_bias"], padding=1)))
    expected = reference.deform_conv2d(x, offset, p["weight"], p["bias"], padding=1, mask=mask)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)


def test_relu_pool_dense_by_hand():
    x = np.array([[[[-1.0, 2.0], [0.0, 4.0]], [[3.0, -3.0], [1.0, 1.0]]]])    # (1, 2, 2, 2)
    relu, pool = ReLU(), GlobalAvgPool2D()
    np.testing.assert_array_equal(relu.forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), (x > 0).astype(f64))
    np.testing.assert_array_equal(pool.forward(x), [[1.25, 0.5]])
    np.testing.assert_array_equal(pool.backward(np.array([[4.0, 8.0]])),
                                  np.array([1.0, 2.0])[None, :, None, None] * np.ones((1, 2, 2, 2)))
    dense = Dense(2, 3, dtype=f64)
    dense.params["weight"][...] = [[1, 0], [0, 1], [1, -1]]
    dense.params["bias"][...] = [0, 10, 0]
    np.testing.assert_array_equal(dense.forward(np.array([[2.0, 5.0]])), [[2.0, 15.0, -3.0]])


def test_softmax_cross_entropy_by_hand_and_with_huge_logits():
    loss = SoftmaxCrossEntropy()
    # softmax([0, ln 3]) = [1/4, 3/4]
    assert loss.forward(np.array([[0.0, np.log(3.0)]]), np.array([1])) == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(loss.backward(), [[0.25, -0.25]], rtol=1e-12)
    # shifting every logit of a row changes nothing, even by 1e4 (exp would overflow)
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = np.array([2, 0])
    small = loss.forward(logits, labels)
    big = loss.forward(logits + np.array([[1e4], [-1e4]]), labels)
    assert np.isfinite(big) and big == pytest.approx(small, rel=1e-12)
    np.testing.assert_allclose(loss.probabilities.sum(axis=1), 1.0)
    assert loss.accuracy == 1.0 and list(loss.predictions) == [2, 0]


# -- BatchNorm modes ----------------------------------------------------------------------

def test_batchnorm_train_mode_uses_and_records_batch_statistics():
    rng = np.random.default_rng(6)
    bn = BatchNorm2D(2, momentum=0.9, eps=1e-3, dtype=f64)
    bn.params["gamma"][...] = [2.0, 0.5]
    bn.params["beta"][...] = [1.0, -1.0]
    x = rng.normal(3.0, 2.0, (4, 2, 3, 3))
    out = bn.forward(x)
    for c in range(2):
        values = x[:, c].ravel()
        mean, var = values.mean(), values.var()
        expected = bn.params["gamma"][c] * (x[:, c] - mean) / np.sqrt(var + 1e-3) + bn.params["beta"][c]
        np.testing.assert_allclose(out[:, c], expected, rtol=1e-12)
        assert bn.state["running_mean"][c] == pytest.approx(0.9 * 0 + 0.1 * mean)
        assert bn.state["running_var"][c] == pytest.approx(0.9 * 1 + 0.1 * values.var(ddof=1))


def test_batchnorm_eval_mode_uses_running_statistics_and_keeps_them():
    rng = np.random.default_rng(7)
    bn = BatchNorm2D(3, dtype=f64).eval()
    bn.state["running_mean"][...] = [1.0, 2.0, 3.0]
    bn.state["running_var"][...] = [4.0, 1.0, 0.25]
    x = rng.standard_normal((2, 3, 2, 2))
    expected = (x - np.array([1.0, 2.0, 3.0])[:, None, None]) / np.sqrt(
        np.array([4.0, 1.0, 0.25]) + 1e-3)[:, None, None]
    np.testing.assert_allclose(bn.forward(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(bn.state["running_mean"], [1.0, 2.0, 3.0])
    # eval-mode backward: the statistics are constants
    grad = rng.standard_normal(x.shape)
    np.testing.assert_allclose(bn.backward(grad),
                               grad / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-3)[:, None, None])


def test_batchnorm_modes_differ_only_by_the_statistics_they_use():
    rng = np.random.default_rng(8)
    bn = BatchNorm2D(2, momentum=0.0, eps=1e-3, dtype=f64)
    x = rng.normal(2.0, 3.0, (5, 2, 4, 4))
    train_out = bn.forward(x)
    eval_out = bn.eval().forward(x)
    # momentum 0: the running statistics become this batch's, the variance unbiased
    biased, unbiased = x.var(axis=(0, 2, 3)), x.transpose(1, 0, 2, 3).reshape(2, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(bn.state["running_mean"], x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bn.state["running_var"], unbiased, rtol=1e-12)
    # so eval mode divides by sqrt(unbiased + eps) where train mode divided by sqrt(biased + eps)
    ratio = np.sqrt((biased + 1e-3) / (unbiased + 1e-3))[:, None, None]
    np.testing.assert_allclose(eval_out, train_out * ratio, rtol=1e-12)
    assert np.abs(eval_out - train_out).max() > 1e-3


# -- trainable flag, float32 ------------------------------------------------------------

def test_a_frozen_layer_passes_the_same_input_gradient_and_keeps_zero_grads():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 5, 5))
    grad = rng.standard_normal((2, 4, 5, 5))
    layer = Conv2D(3, 4, 3, rng=0, dtype=f64)
    layer.forward(x)
    trainable_grad_x = layer.backward(grad)
    assert np.abs(layer.grads["weight"]).max() > 0
    layer.trainable = False
    assert all(not g.any() for g in layer.grads.values())      # freezing clears them
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(grad), trainable_grad_x)
    assert all(not g.any() for g in layer.grads.values())
    assert layer.trainable_parameters() == []


@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2D(2, 3, 3, rng=0), (2, 2, 6, 6)),
    (lambda: ConvOffset2D(2, rng=0), (2, 2, 6, 6)),
    (lambda: DeformConv2D(2, 3, modulated=True, rng=0), (2, 2, 6, 6)),
    (lambda: BatchNorm2D(2), (2, 2, 6, 6)),
    (lambda: ReLU(), (2, 2, 6, 6)),
    (lambda: GlobalAvgPool2D(), (2, 2, 6, 6)),
    (lambda: Dense(2, 3, rng=0), (2, 2)),
])
def test_float32_by_default_in_and_out(make, shape):
    layer = make()
    x = np.random.default_rng(0).standard_normal(shape).astype(f32)
    out = layer.forward(x)
    grad_x = layer.backward(np.ones_like(out))
    assert out.dtype == f32 and grad_x.dtype == f32 and grad_x.shape == shape
    assert all(p.dtype == f32 for p in layer.params.values())
    assert all(g.dtype == f32 for g in layer.grads.values())


# -- Sequential -------------------------------------------------------------------------

def small_model(seed=0):
    return Sequential([Conv2D(1, 4, 3, rng=seed, name="conv"), ReLU(name="relu"),
                       BatchNorm2D(4, name="bn"), GlobalAvgPool2D(name="pool"),
                       Dense(4, 3, rng=seed, name="fc")], name="small")


def test_sequential_names_counts_and_chain():
    model = small_model()
    assert list(model.params) == ["conv.weight", "conv.bias", "bn.gamma", "bn.beta",
                                  "fc.weight", "fc.bias"]
    assert model.num_params() == (4 * 9 + 4) + (4 + 4) + (3 * 4 + 3)
    assert set(model.state_dict()) == set(model.params) | {"bn.running_mean", "bn.running_var"}
    x = np.random.default_rng(1).standard_normal((2, 1, 5, 5)).astype(f32)
    by_hand = x
    for layer in model:
        by_hand = layer.forward(by_hand)
    np.testing.assert_array_equal(model.forward(x), by_hand)


def test_sequential_set_trainable_by_name_and_predicate():
    model = small_model()
    assert model.set_trainable(["conv", "fc"], False) == ["conv", "fc"]
    assert model.num_params(trainable_only=True) == 8
    assert model.set_trainable(lambda layer: isinstance(layer, Dense), True) == ["fc"]
    assert [n for n, _, _ in model.trainable_parameters()] == ["bn.gamma", "bn.beta", "fc.weight",
                                                              "fc.bias"]
    with pytest.raises(ValueError, match=r"which: expected layer names from .*got unknown \['nope'\]"):
        model.set_trainable("nope", False)


def test_sequential_train_and_eval_reach_every_layer():
    model = small_model().eval()
    assert not any(layer.training for layer in model)
    assert all(layer.training for layer in model.train())


def test_checkpoint_round_trip_through_npz(tmp_path):
    x = np.random.default_rng(2).standard_normal((3, 1, 5, 5)).astype(f32)
    trained = small_model(seed=1)
    trained.forward(x)                                  # moves the running statistics
    trained.save(tmp_path / "model.npz")
    fresh = small_model(seed=2)
    assert not np.array_equal(fresh.eval().forward(x), trained.eval().forward(x))
    assert fresh.load(tmp_path / "model.npz") == ([], [])
    np.testing.assert_array_equal(fresh.forward(x), trained.forward(x))


def test_load_state_dict_strict_and_partial():
    model = small_model()
    state = model.state_dict()
    del state["fc.bias"]
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing \['fc.bias'\] and unexpected \['extra.weight'\]"):
        model.load_state_dict(state)
    before = model.params["fc.bias"].copy()
    state["conv.weight"] = np.ones((4, 1, 3, 3))
    assert model.load_state_dict(state, strict=False) == (["fc.bias"], ["extra.weight"])
    np.testing.assert_array_equal(model.params["conv.weight"], 1.0)
    np.testing.assert_array_equal(model.params["fc.bias"], before)
    with pytest.raises(ValueError, match=r"expected shape \(4, 1, 3, 3\) for conv.weight, got \(4, 1, 3\)"):
        model.load_state_dict({"conv.weight": np.ones((4, 1, 3))}, strict=False)


def test_astype_float64():
    model = small_model().astype(f64)
    x = np.random.default_rng(3).standard_normal((2, 1, 5, 5))
    assert model.forward(x).dtype == f64 and model.dtype == f64
    assert all(v.dtype == f64 for v in model.state_dict().values())


# -- errors -------------------------------------------------------------------------------

ERRORS = {
    "channels": (lambda: Conv2D(3, 4, 3, rng=0).forward(np.zeros((1, 2, 5, 5), f32)),
                 r"conv: input: expected 3 channels \(axis 1\) in \(N, C_in, H, W\), got shape \(1, 2, 5, 5\)"),
    "rank": (lambda: BatchNorm2D(2).forward(np.zeros((2, 5, 5), f32)),
             r"bn: input: expected an ndarray of shape \(N, C, H, W\), got \(2, 5, 5\)"),
    "dtype": (lambda: Dense(2, 3, rng=0).forward(np.zeros((1, 2), f64)),
              r"dense: input: expected dtype float32 \(the layer's parameters; see astype\), got float64"),
    "int input": (lambda: ReLU().forward(np.zeros((2, 2), int)),
                  r"relu: input: expected dtype float32 or float64, got int64"),
    "list input": (lambda: GlobalAvgPool2D().forward([[1.0]]),
                   r"avg_pool: input: expected an ndarray of shape \(N, C, H, W\), got list"),
    "in_channels": (lambda: Conv2D(0, 4, 3), r"in_channels: expected a positive int, got 0"),
    "kernel_size": (lambda: Conv2D(1, 4, (3, 0)), r"kernel_size: expected values >= 1, got \(3, 0\)"),
    "same, even kernel": (lambda: Conv2D(1, 4, 2), r"padding: expected an odd kernel_size for 'same', got \(2, 2\)"),
    "padding word": (lambda: Conv2D(1, 4, 3, padding="valid"), r"padding: expected 'same', an int or a pair of ints, got 'valid'"),
    "init": (lambda: Dense(2, 3, init="xavier"), r"init: expected one of \['glorot_uniform', 'he_normal'\], got 'xavier'"),
    "dtype arg": (lambda: Dense(2, 3, dtype=np.float16), r"dtype: expected float32 or float64, got float16"),
    "momentum": (lambda: BatchNorm2D(2, momentum=1.0), r"momentum: expected a number in \[0, 1\), got 1.0"),
    "eps": (lambda: BatchNorm2D(2, eps=0), r"eps: expected a positive number, got 0"),
    "offset_groups": (lambda: DeformConv2D(6, 4, offset_groups=4), r"offset_groups: expected a divisor of in_channels = 6, got 4"),
    "padding_mode": (lambda: ConvOffset2D(2, padding_mode="reflect"), r"padding_mode: expected one of \['border', 'zeros'\], got 'reflect'"),
    "name": (lambda: ReLU(name="a.b"), r"name: expected a non-empty string without '.', got 'a.b'"),
    "duplicate names": (lambda: Sequential([ReLU(), ReLU()]), r"layers: expected unique names, got 'relu' twice"),
    "not a layer": (lambda: Sequential([ReLU(), np.tanh]), r"layers: expected Layer objects, got ufunc at position 1"),
    "labels range": (lambda: SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0, 3])),
                     r"labels: expected values in \[0, 3\), got values in \[0, 3\]"),
    "labels dtype": (lambda: SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0.0, 1.0])),
                     r"labels: expected integers of shape \(2,\), got float64 of shape \(2,\)"),
    "logits rank": (lambda: SoftmaxCrossEntropy().forward(np.zeros(3), np.array([0])),
                    r"logits: expected a float32 or float64 ndarray of shape \(N, K\), got shape \(3,\) dtype float64"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_name_the_argument(name):
    call, message = ERRORS[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_backward_checks_the_gradient_and_the_order():
    layer = Conv2D(1, 2, 3, rng=0)
    with pytest.raises(RuntimeError, match="conv: backward called before forward"):
        layer.backward(np.zeros((1, 2, 4, 4), f32))
    layer.forward(np.zeros((1, 1, 4, 4), f32))
    with pytest.raises(ValueError, match=r"conv: grad: expected an ndarray of shape \(1, 2, 4, 4\) "
                                         r"\(the last output's\), got \(1, 2, 4, 3\)"):
        layer.backward(np.zeros((1, 2, 4, 3), f32))
    with pytest.raises(ValueError, match=r"conv: grad: expected dtype float32 \(the last output's\), got float64"):
        layer.backward(np.zeros((1, 2, 4, 4), f64))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        SoftmaxCrossEntropy().backward()
