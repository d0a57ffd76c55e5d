"""Every gradient of every op against centred finite differences (float64, 1e-6 relative).

Sample points are kept at least 0.1 px from integer coordinates (the kinks of bilinear
interpolation), far more than the difference step of 1e-6.
"""
import numpy as np
import pytest

from dcn_ref import ops
from dcn_ref.gradcheck import check_gradients, numerical_vjp, off_kink, rel_error

from helpers import deform_case

TOL = 1e-6


def assert_all_pass(rows):
    failed = [r for r in rows if not r.passed]
    assert not failed, "gradients off: " + ", ".join(
        f"{r.op}.{r.input} rel. error {r.max_rel_error:.2e}" for r in failed)
    assert rows, "nothing was checked"


# -- the instrument itself ----------------------------------------------------------

def test_numerical_vjp_of_a_known_function():
    # f(x) = x**2 * [1, 2, 3]  =>  d sum(g f)/dx = 2 x g [1, 2, 3]
    x = np.array([0.5, -1.0, 2.0])
    g = np.array([1.0, -2.0, 0.5])
    numeric = numerical_vjp(lambda v: v ** 2 * np.array([1.0, 2.0, 3.0]), x, g)
    np.testing.assert_allclose(numeric, 2 * x * g * np.array([1.0, 2.0, 3.0]), rtol=1e-8)


def test_check_gradients_catches_a_wrong_backward():
    rng = np.random.default_rng(0)
    inputs = {"image": rng.standard_normal((1, 4, 4)), "coords": off_kink(rng, (1, 5, 2), 0, 3)}

    def wrong_backward(grad_output, image, coords, **kw):
        right = ops.bilinear_sample_backward(grad_output, image, coords, **kw)
        return right._replace(coords=right.coords * 1.001)

    rows = check_gradients(ops.bilinear_sample, wrong_backward, inputs)
    assert [r.passed for r in rows] == [True, False]


def test_rel_error_scale_and_nan():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([0.0, 4.0]), np.array([0.1, 4.0])) == pytest.approx(0.025)
    assert np.isnan(rel_error(np.array([np.nan]), np.array([1.0])))


# -- bilinear_sample and offset_sample -----------------------------------------------

@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("B,H,W", [(1, 4, 4), (3, 5, 7), (2, 1, 6)])
def test_bilinear_sample_gradients(padding_mode, B, H, W):
    rng = np.random.default_rng(B * 100 + H * 10 + W)
    # points inside, in the one-pixel rim and far outside the image
    coords = off_kink(rng, (B, 30, 2), -3, max(H, W) + 2)
    rows = check_gradients(ops.bilinear_sample, ops.bilinear_sample_backward,
                           {"image": rng.standard_normal((B, H, W)), "coords": coords},
                           {"padding_mode": padding_mode}, tol=TOL)
    assert_all_pass(rows)


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
@pytest.mark.parametrize("N,C,H,W,scale", [(1, 1, 4, 4, 0.9), (2, 3, 5, 3, 2.5), (2, 2, 3, 6, 8.0)])
def test_offset_sample_gradients(padding_mode, N, C, H, W, scale):
    rng = np.random.default_rng(N + C + H + W)
    inputs = {"input": rng.standard_normal((N, C, H, W)),
              "offset": off_kink(rng, (N, 2 * C, H, W), -scale, scale)}
    rows = check_gradients(ops.offset_sample, ops.offset_sample_backward, inputs,
                           {"padding_mode": padding_mode}, tol=TOL)
    assert_all_pass(rows)


# -- conv2d ----------------------------------------------------------------------------

CONV_CONFIGS = [
    # (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, bias)
    (1, 1, 1, 4, 4, (3, 3), 1, 0, 1, 1, False),
    (2, 3, 4, 6, 5, (3, 2), (2, 1), (1, 2), (1, 2), 1, True),
    (2, 4, 6, 7, 7, (2, 3), 2, 2, 2, 2, True),
    (1, 6, 3, 5, 8, (1, 1), 1, 0, 1, 3, True),
]


@pytest.mark.parametrize("config", CONV_CONFIGS)
def test_conv2d_gradients(config):
    N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, bias = config
    rng = np.random.default_rng(C_in * C_out)
    inputs = {"input": rng.standard_normal((N, C_in, H, W)),
              "weight": rng.standard_normal((C_out, C_in // groups) + kernel),
              "bias": rng.standard_normal(C_out) if bias else None}
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    rows = check_gradients(ops.conv2d, ops.conv2d_backward, inputs, params, tol=TOL)
    assert_all_pass(rows)
    assert {r.input for r in rows} == ({"input", "weight", "bias"} if bias else {"input", "weight"})


# -- deform_conv2d ---------------------------------------------------------------------

DEFORM_CONFIGS = {
    "v1 3x3 s1 p1": dict(N=1, C_in=2, C_out=2, H=5, W=5, kernel=(3, 3), mask=False),
    "v2 non-square s2 p0": dict(N=2, C_in=3, C_out=2, H=7, W=6, kernel=(3, 2), stride=(2, 2),
                                padding=(0, 0)),
    "v2 dilation 2 p2": dict(N=1, C_in=2, C_out=3, H=6, W=7, kernel=(3, 3), padding=(2, 2),
                             dilation=(2, 2)),
    "v2 offset groups 2 conv groups 2": dict(N=2, C_in=4, C_out=4, H=5, W=4, kernel=(2, 3),
                                             G=2, groups=2, stride=(1, 2), dilation=(2, 1)),
    "v1 offset groups 4 far outside": dict(N=1, C_in=4, C_out=2, H=4, W=5, kernel=(2, 2),
                                           G=4, mask=False, offset_scale=7.0, bias=False),
    "v2 1x1 kernel groups 3": dict(N=2, C_in=3, C_out=3, H=4, W=3, kernel=(1, 1), groups=3,
                                   padding=(0, 0)),
}


@pytest.mark.parametrize("name", list(DEFORM_CONFIGS))
def test_deform_conv2d_gradients(name):
    rng = np.random.default_rng(len(name))
    inputs, params = deform_case(rng, **DEFORM_CONFIGS[name])
    rows = check_gradients(ops.deform_conv2d, ops.deform_conv2d_backward, inputs, params, tol=TOL)
    assert_all_pass(rows)
    expected = {k for k, v in inputs.items() if v is not None}
    assert {r.input for r in rows} == expected


def test_deform_conv2d_gradients_when_most_samples_are_outside():
    # offsets of up to +-20 px on a 4x4 image: most samples read only padding
    rng = np.random.default_rng(7)
    inputs, params = deform_case(rng, N=2, C_in=2, C_out=2, H=4, W=4, kernel=(3, 3),
                                 offset_scale=20.0)
    rows = check_gradients(ops.deform_conv2d, ops.deform_conv2d_backward, inputs, params, tol=TOL)
    assert_all_pass(rows)
