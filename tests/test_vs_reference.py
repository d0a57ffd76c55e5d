"""The fast kernels against the slow loop references on random configurations."""
import numpy as np
import pytest

from dcn_ref import ops, reference
from dcn_ref.gradcheck import off_kink

from helpers import compare, deform_case, random_deform_case

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(8))
def test_deform_conv2d_matches_loop_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    inputs, params = random_deform_case(rng, dtype)
    out = ops.deform_conv2d(**inputs, **params)
    compare(out, reference.deform_conv2d(**inputs, **params), TOLERANCE[dtype], f"seed {seed}")
    g = rng.standard_normal(out.shape).astype(dtype)
    compare(ops.deform_conv2d_backward(g, **inputs, **params),
            reference.deform_conv2d_backward(g, **inputs, **params), TOLERANCE[dtype],
            f"seed {seed} backward")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(4))
def test_conv2d_matches_loop_reference(seed, dtype):
    rng = np.random.default_rng(100 + seed)
    inputs, params = random_deform_case(rng, dtype)
    groups = inputs["input"].shape[1] // inputs["weight"].shape[1]
    args = dict(input=inputs["input"], weight=inputs["weight"], bias=inputs["bias"], **params,
                groups=groups)
    out = ops.conv2d(**args)
    compare(out, reference.conv2d(**args), TOLERANCE[dtype], f"seed {seed}")
    g = rng.standard_normal(out.shape).astype(dtype)
    compare(ops.conv2d_backward(g, **args), reference.conv2d_backward(g, **args),
            TOLERANCE[dtype], f"seed {seed} backward")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_samplers_match_loop_reference(padding_mode, dtype):
    rng = np.random.default_rng(5)
    tol = TOLERANCE[dtype]
    image = rng.standard_normal((3, 4, 6)).astype(dtype)
    coords = rng.uniform(-3, 8, (3, 50, 2)).astype(dtype)
    compare(ops.bilinear_sample(image, coords, padding_mode),
            reference.bilinear_sample(image, coords, padding_mode), tol, "bilinear_sample")
    g = rng.standard_normal((3, 50)).astype(dtype)
    compare(ops.bilinear_sample_backward(g, image, coords, padding_mode),
            reference.bilinear_sample_backward(g, image, coords, padding_mode), tol,
            "bilinear_sample_backward")
    x = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    offset = off_kink(rng, (2, 6, 5, 4), -4, 4).astype(dtype)
    compare(ops.offset_sample(x, offset, padding_mode),
            reference.offset_sample(x, offset, padding_mode), tol, "offset_sample")
    g = rng.standard_normal(x.shape).astype(dtype)
    compare(ops.offset_sample_backward(g, x, offset, padding_mode),
            reference.offset_sample_backward(g, x, offset, padding_mode), tol,
            "offset_sample_backward")
