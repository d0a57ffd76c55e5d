"""Every CUDA op and gradient against the CPU target (float64, 1e-10), on small shapes that
do not divide the block size, with groups, offset groups, masks, strides, dilations and
samples outside the image. Runs in the simulator (tiny shapes: it runs each thread in
Python) and on a real GPU."""
import numpy as np
import pytest
from numba import cuda

from dcn_ref import ops
from dcn_ref.gradcheck import off_kink

from helpers import assert_close, assert_cuda_equals_cpu, compare, deform_case

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30]


DEFORM_CASES = {
    "v2 groups 2, offset groups 2, stride (1, 2)": dict(N=2, C_in=4, C_out=4, H=5, W=4, kernel=(3, 2),
                                                       G=2, groups=2, stride=(1, 2)),
    "v1 dilation 2, padding 2, far offsets": dict(N=1, C_in=3, C_out=2, H=4, W=5, kernel=(2, 3),
                                                  padding=(2, 2), dilation=(2, 1), mask=False,
                                                  offset_scale=6.0),
}


@pytest.mark.parametrize("name", list(DEFORM_CASES))
def test_deform_conv2d_equals_cpu(name):
    rng = np.random.default_rng(len(name))
    inputs, params = deform_case(rng, **DEFORM_CASES[name])
    assert_cuda_equals_cpu(ops.deform_conv2d, ops.deform_conv2d_backward, rng, **inputs, **params)


def test_conv2d_equals_cpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    assert_cuda_equals_cpu(ops.conv2d, ops.conv2d_backward, rng, x, w, b, **params)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_samplers_equal_cpu(padding_mode):
    rng = np.random.default_rng(2)
    image = rng.standard_normal((2, 4, 5))
    coords = off_kink(rng, (2, 13, 2), -3, 7)
    assert_close(ops.bilinear_sample(image, coords, padding_mode, target="cuda"),
                 ops.bilinear_sample(image, coords, padding_mode), 1e-10, "bilinear_sample")
    g = rng.standard_normal((2, 13))
    cpu_grads = ops.bilinear_sample_backward(g, image, coords, padding_mode)
    x = rng.standard_normal((1, 2, 3, 5))
    offset = off_kink(rng, (1, 4, 3, 5), -4, 4)
    assert_close(ops.offset_sample(x, offset, padding_mode, target="cuda"),
                 ops.offset_sample(x, offset, padding_mode), 1e-10, "offset_sample")
    g2 = rng.standard_normal(x.shape)
    cpu_grads2 = ops.offset_sample_backward(g2, x, offset, padding_mode)
    for deterministic in (False, True):
        compare(ops.bilinear_sample_backward(g, image, coords, padding_mode, target="cuda",
                                                   deterministic=deterministic),
                      cpu_grads, 1e-10, "bilinear_sample_backward")
        compare(ops.offset_sample_backward(g2, x, offset, padding_mode, target="cuda",
                                                 deterministic=deterministic),
                      cpu_grads2, 1e-10, "offset_sample_backward")


def test_float32_equals_cpu():
    rng = np.random.default_rng(3)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=4, kernel=(2, 2),
                                 dtype=np.float32)
    cpu = ops.deform_conv2d(**inputs, **params)
    ours = ops.deform_conv2d(**inputs, **params, target="cuda")
    assert ours.dtype == np.float32
    assert_close(ours, cpu, 1e-5, "forward")
    g = rng.standard_normal(cpu.shape).astype(np.float32)
    compare(ops.deform_conv2d_backward(g, **inputs, **params, target="cuda"),
                  ops.deform_conv2d_backward(g, **inputs, **params), 1e-5, "float32")


def test_deterministic_mode_is_bitwise_reproducible_and_agrees_with_atomics():
    rng = np.random.default_rng(4)
    # large offsets pile many samples into the same pixels: the case atomics reorder
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=4, kernel=(3, 3),
                                 offset_scale=2.0)
    g = rng.standard_normal((1, 2, 4, 4))
    first = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
    second = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
    atomic = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda")
    for name in first._fields:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
        assert_close(getattr(atomic, name), getattr(first, name), 1e-12, name)


def test_hostile_offsets_are_safe_on_the_gpu_path():
    # the simulator raises IndexError on any out-of-bounds access, so this also proves
    # that no NaN or huge offset is turned into an index
    rng = np.random.default_rng(5)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=3, kernel=(2, 2))
    flat = inputs["offset"].reshape(-1)
    flat[::2] = np.resize(NASTY, flat[::2].size)
    cpu = ops.deform_conv2d(**inputs, **params)
    gpu = ops.deform_conv2d(**inputs, **params, target="cuda")
    assert np.isfinite(gpu).all()
    assert_close(gpu, cpu, 1e-10, "forward")
    g = np.ones_like(cpu)
    for deterministic in (False, True):
        grads = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda",
                                           deterministic=deterministic)
        assert all(np.isfinite(a).all() for a in grads if a is not None)
        compare(grads, ops.deform_conv2d_backward(g, **inputs, **params), 1e-10, "grads")
    coords = np.array([[[np.nan, 1.0], [np.inf, 0.5], [-1e30, 1.0], [1.5, -np.inf]]])
    image = rng.standard_normal((1, 3, 3))
    for mode in ("zeros", "border"):
        assert_close(ops.bilinear_sample(image, coords, mode, target="cuda"),
                     ops.bilinear_sample(image, coords, mode), 0, mode)
        ours = ops.bilinear_sample_backward(np.ones((1, 4)), image, coords, mode, target="cuda",
                                            deterministic=True)
        compare(ours, ops.bilinear_sample_backward(np.ones((1, 4)), image, coords, mode),
                      0, mode)


def test_device_arrays_in_give_device_arrays_out():
    rng = np.random.default_rng(6)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=3, W=3, kernel=(2, 2), bias=False)
    on_device = {k: cuda.to_device(v) for k, v in inputs.items() if v is not None}
    out = ops.deform_conv2d(**on_device, **params)   # target=None: chosen from the arrays
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    assert_close(out.copy_to_host(), ops.deform_conv2d(**inputs, **params), 1e-10, "forward")
    grads = ops.deform_conv2d_backward(cuda.to_device(np.ones(out.shape)), **on_device, **params)
    assert all(hasattr(getattr(grads, n), "copy_to_host") for n in ("input", "offset", "weight", "mask"))
    assert grads.bias is None
    with pytest.raises(ValueError, match="target: expected 'cuda' or None for CUDA device arrays"):
        ops.deform_conv2d(**on_device, **params, target="cpu")


def test_non_contiguous_device_arrays():
    rng = np.random.default_rng(7)
    image = rng.standard_normal((2, 4, 6))
    coords = rng.uniform(-1, 4, (2, 5, 2))
    strided = cuda.to_device(np.repeat(image, 2, axis=2))[:, :, ::2]
    assert not strided.is_c_contiguous()
    out = ops.bilinear_sample(strided, cuda.to_device(coords))
    assert_close(out.copy_to_host(), ops.bilinear_sample(image, coords), 1e-12, "strided")


def test_empty_batch_on_the_gpu():
    rng = np.random.default_rng(8)
    inputs, params = deform_case(rng, N=0, C_in=2, C_out=2, H=3, W=3, kernel=(2, 2))
    out = ops.deform_conv2d(**inputs, **params, target="cuda")
    assert out.shape == (0, 2, 4, 4)
    grads = ops.deform_conv2d_backward(out, **inputs, **params, target="cuda", deterministic=True)
    assert grads.weight.shape == inputs["weight"].shape and not grads.weight.any()


def test_im2col_and_col2im_equal_cpu():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 5, 4))
    columns = ops.im2col(x, (3, 2), (2, 1), 1, (1, 2), target="cuda")
    assert_close(columns, ops.im2col(x, (3, 2), (2, 1), 1, (1, 2)), 0, "im2col")
    y = rng.standard_normal(columns.shape)
    assert_close(ops.col2im(y, x.shape, (3, 2), (2, 1), 1, (1, 2), target="cuda"),
                 ops.col2im(y, x.shape, (3, 2), (2, 1), 1, (1, 2)), 1e-12, "col2im")
