"""The channels-last layers of the DCNv3/DCNv4 blocks (Linear, LayerNorm, GELU,
DepthwiseConv2D, and the softmax over the last axis): values against independent
computations (einsum, scipy, conv2d with groups=C), gradients against centred finite
differences in float64."""
import numpy as np
import pytest
from scipy import ndimage, stats

from dcn_ref import ops
from dcn_ref.gradcheck import numerical_vjp, rel_error
from dcn_ref.nn import GELU, DepthwiseConv2D, LayerNorm, Linear
from dcn_ref.nn.activation import softmax, softmax_backward

from nn_gradcheck import assert_gradients_match

TOL = 1e-6


# -- values -----------------------------------------------------------------------------

def test_linear_is_a_contraction_over_the_last_axis():
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = [1.0, -2.0, 0.5]
    x = rng.standard_normal((2, 3, 5, 4))
    expected = np.einsum("nhwi,oi->nhwo", x, layer.params["weight"]) + [1.0, -2.0, 0.5]
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-13, atol=1e-13)


def test_layer_norm_by_hand():
    # values (1, 2, 3, 6): mean 3, var (4 + 1 + 0 + 9)/4 = 3.5, sqrt(3.5 + eps) = 2 with
    # eps = 0.5, so xhat = (-1, -0.5, 0, 1.5); then weight * xhat + bias
    layer = LayerNorm(4, eps=0.5, dtype=np.float64)
    layer.params["weight"][...] = [1.0, 2.0, 1.0, 1.0]
    layer.params["bias"][...] = [0.0, 0.0, 0.0, 10.0]
    out = layer.forward(np.array([[1.0, 2.0, 3.0, 6.0]]))
    np.testing.assert_allclose(out[0], [-1.0, -1.0, 0.0, 11.5], rtol=0, atol=1e-14)


def test_gelu_is_x_times_the_normal_cdf():
    x = np.linspace(-6, 6, 121)
    np.testing.assert_allclose(GELU().forward(x), x * stats.norm.cdf(x), rtol=1e-14, atol=1e-15)
    assert GELU().forward(np.zeros(1, np.float32)).dtype == np.float32


def test_depthwise_conv_equals_conv2d_with_groups_and_scipy():
    rng = np.random.default_rng(1)
    layer = DepthwiseConv2D(3, (3, 2), padding=(1, 0), rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 5, 6, 3))
    out = layer.forward(x)
    assert out.shape == (2, 5, 5, 3)
    chw = ops.conv2d(x.transpose(0, 3, 1, 2), layer.params["weight"], layer.params["bias"],
                     padding=(1, 0), groups=3)
    np.testing.assert_allclose(out, chw.transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)
    # one plane against scipy's correlate, zero padding: scipy anchors a kernel of size k at
    # index k//2 + origin, so origin (0, -1) makes output (y, x) read rows y-1..y+1 and
    # columns x, x+1; the last column, which would read past the edge, is not ours
    plane = ndimage.correlate(x[0, :, :, 2], layer.params["weight"][2, 0], mode="constant",
                              origin=(0, -1))[:, :5] + layer.params["bias"][2]
    np.testing.assert_allclose(out[0, :, :, 2], plane, rtol=1e-12, atol=1e-12)


def test_default_padding_keeps_the_size_of_odd_kernels():
    layer = DepthwiseConv2D(2, 5, dtype=np.float64)
    assert layer.forward(np.zeros((1, 7, 4, 2))).shape == (1, 7, 4, 2)


def test_softmax_sums_to_one_and_survives_large_logits():
    z = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]])
    s = softmax(z)
    np.testing.assert_allclose(s, [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]], rtol=0, atol=1e-15)


# -- gradients --------------------------------------------------------------------------

def test_linear_gradients():
    rng = np.random.default_rng(2)
    layer = Linear(5, 3, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(3)
    assert_gradients_match(layer, rng.standard_normal((2, 3, 4, 5)), TOL)
    assert_gradients_match(Linear(4, 2, bias=False, rng=rng, dtype=np.float64),
                           rng.standard_normal((3, 4)), TOL)


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_layer_norm_gradients(eps):
    rng = np.random.default_rng(3)
    layer = LayerNorm(6, eps=eps, dtype=np.float64)
    layer.params["weight"][...] = rng.uniform(0.5, 2.0, 6)
    layer.params["bias"][...] = rng.standard_normal(6)
    assert_gradients_match(layer, 2 * rng.standard_normal((2, 3, 2, 6)) + 1, TOL)


def test_gelu_gradient():
    x = np.random.default_rng(4).uniform(-4, 4, (3, 4, 5))
    assert_gradients_match(GELU(), x, TOL)


@pytest.mark.parametrize("kernel_size, padding", [(3, None), ((2, 3), (0, 2))])
def test_depthwise_conv_gradients(kernel_size, padding):
    rng = np.random.default_rng(5)
    layer = DepthwiseConv2D(3, kernel_size, padding, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(3)
    assert_gradients_match(layer, rng.standard_normal((2, 4, 5, 3)), TOL)


def test_softmax_gradient():
    rng = np.random.default_rng(6)
    z = 2 * rng.standard_normal((3, 2, 5))
    g = rng.standard_normal(z.shape)
    numeric = numerical_vjp(softmax, z, g)
    assert rel_error(softmax_backward(g, softmax(z)), numeric) <= TOL


# -- modes, dtypes, errors ----------------------------------------------------------------

def test_float32_layers_keep_float32():
    x = np.ones((1, 2, 2, 4), np.float32)
    for layer in (Linear(4, 3), LayerNorm(4), GELU(), DepthwiseConv2D(4)):
        out = layer.forward(x)
        assert out.dtype == np.float32
        assert layer.backward(np.ones_like(out)).dtype == np.float32
        assert all(g.dtype == np.float32 for g in layer.grads.values())


@pytest.mark.parametrize("layer, x, message", [
    (Linear(4, 3), np.ones((2, 5), np.float32), "in_features = 4"),
    (LayerNorm(4), np.ones((2, 3), np.float32), "channels = 4"),
    (DepthwiseConv2D(2), np.ones((2, 3, 2), np.float32), r"\(N, H, W, C\)"),
    (DepthwiseConv2D(2, padding=0), np.ones((1, 2, 5, 2), np.float32), "kernel size"),
    (LayerNorm(4), np.ones((2, 4)), "dtype float32"),
    (GELU(), np.ones(3, np.int64), "float32 or float64"),
])
def test_wrong_inputs_are_named(layer, x, message):
    with pytest.raises(ValueError, match=message):
        layer.forward(x)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(4, eps=0)
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv2D(4, kernel_size=0)
    with pytest.raises(ValueError, match="out_features"):
        Linear(4, 0)
