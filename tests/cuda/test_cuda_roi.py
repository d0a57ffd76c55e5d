"""The RoI pooling ops on the CUDA target against the CPU target (float64, 1e-10), both
input-gradient modes (atomic scatter, fixed-order planes), NaN and huge offsets (the
simulator raises on any out-of-bounds index), empty RoI lists and device arrays. Tiny
shapes: the simulator runs each thread in Python."""
import numpy as np
import pytest
from numba import cuda

from dcn_ref import ops

from helpers import assert_close, assert_cuda_equals_cpu, compare
from roi_cases import psroi_case, roi_case

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30]

ROI_CASES = {
    "offset, mask, sampling 2": dict(N=2, C=2, K=3, output_size=(2, 2)),
    "adaptive, no offset, scale 0.5": dict(N=1, C=2, K=2, sampling_ratio=0, spatial_scale=0.5,
                                           offset=False, mask=False, output_size=(2, 1)),
}
PSROI_CASES = {
    "2 classes, groups 2": dict(N=2, output_dim=2, group_size=2, pooled_size=2, num_classes=2,
                                K=2),
    "parts 1, no groups, no trans": dict(N=1, output_dim=2, group_size=1, pooled_size=2,
                                         trans=False, K=2, sample_per_part=3),
}


@pytest.mark.parametrize("name", list(ROI_CASES))
def test_deform_roi_pool_equals_cpu(name):
    rng = np.random.default_rng(len(name))
    inputs, params = roi_case(rng, **ROI_CASES[name])
    assert_cuda_equals_cpu(ops.deform_roi_pool, ops.deform_roi_pool_backward, rng, **inputs, **params)


@pytest.mark.parametrize("name", list(PSROI_CASES))
def test_deform_psroi_pool_equals_cpu(name):
    rng = np.random.default_rng(len(name))
    inputs, params = psroi_case(rng, **PSROI_CASES[name])
    assert_cuda_equals_cpu(ops.deform_psroi_pool, ops.deform_psroi_pool_backward, rng, **inputs, **params)


def test_float32_equals_cpu():
    rng = np.random.default_rng(3)
    inputs, params = roi_case(rng, N=1, C=2, K=2, output_size=(2, 2), dtype=np.float32)
    cpu = ops.deform_roi_pool(**inputs, **params)
    ours = ops.deform_roi_pool(**inputs, **params, target="cuda")
    assert ours.dtype == np.float32
    assert_close(ours, cpu, 1e-5, "forward")
    g = rng.standard_normal(cpu.shape).astype(np.float32)
    compare(ops.deform_roi_pool_backward(g, **inputs, **params, target="cuda"),
                  ops.deform_roi_pool_backward(g, **inputs, **params), 1e-5, "float32")


def test_deterministic_mode_is_bitwise_reproducible_and_agrees_with_atomics():
    # several RoIs over the same pixels of one image: many atomic additions per pixel
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    rois = np.array([[0, 0.3, 0.2, 3.1, 3.3], [0, 0.5, 0.1, 2.9, 3.6],
                     [0, 0.2, 0.4, 3.4, 2.8]], np.float32)
    offset = rng.uniform(-1, 1, (3, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    args = dict(output_size=2, sampling_ratio=2, target="cuda")
    first = ops.deform_roi_pool_backward(g, x, rois, offset, **args, deterministic=True)
    second = ops.deform_roi_pool_backward(g, x, rois, offset, **args, deterministic=True)
    atomic = ops.deform_roi_pool_backward(g, x, rois, offset, **args)
    for name in ("input", "offset"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
        assert_close(getattr(atomic, name), getattr(first, name), 1e-6, name)
    ps = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    trans = rng.uniform(-1, 1, (3, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    args = dict(output_dim=1, group_size=2, pooled_size=2, sample_per_part=2, trans_std=0.2,
                target="cuda")
    first = ops.deform_psroi_pool_backward(g, ps, rois, trans, **args, deterministic=True)
    second = ops.deform_psroi_pool_backward(g, ps, rois, trans, **args, deterministic=True)
    atomic = ops.deform_psroi_pool_backward(g, ps, rois, trans, **args)
    for name in ("input", "trans"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
        assert_close(getattr(atomic, name), getattr(first, name), 1e-6, name)


def test_hostile_offsets_are_safe_on_the_gpu_path():
    rng = np.random.default_rng(5)
    inputs, params = roi_case(rng, N=1, C=1, K=3, output_size=(2, 2))
    flat = inputs["offset"].reshape(-1)
    flat[::2] = np.resize(NASTY, flat[::2].size)
    cpu = ops.deform_roi_pool(**inputs, **params)
    gpu = ops.deform_roi_pool(**inputs, **params, target="cuda")
    assert np.isfinite(gpu).all()
    assert_close(gpu, cpu, 1e-10, "forward")
    g = np.ones_like(cpu)
    cpu_grads = ops.deform_roi_pool_backward(g, **inputs, **params)
    for deterministic in (False, True):
        grads = ops.deform_roi_pool_backward(g, **inputs, **params, target="cuda",
                                             deterministic=deterministic)
        assert all(np.isfinite(a).all() for a in grads)
        compare(grads, cpu_grads, 1e-10, "roi grads")
    inputs, params = psroi_case(rng, N=1, output_dim=1, group_size=2, pooled_size=2, K=2)
    flat = inputs["trans"].reshape(-1)
    flat[::2] = np.resize(NASTY, flat[::2].size)
    cpu = ops.deform_psroi_pool(**inputs, **params)
    assert_close(ops.deform_psroi_pool(**inputs, **params, target="cuda"), cpu, 1e-10, "psroi")
    cpu_grads = ops.deform_psroi_pool_backward(np.ones_like(cpu), **inputs, **params)
    for deterministic in (False, True):
        compare(ops.deform_psroi_pool_backward(np.ones_like(cpu), **inputs, **params,
                                                     target="cuda", deterministic=deterministic),
                      cpu_grads, 1e-10, "psroi grads")


def test_empty_roi_list_on_the_gpu_path():
    x = np.ones((1, 4, 3, 3))
    rois = np.zeros((0, 5))
    out = ops.deform_roi_pool(x, rois, np.zeros((0, 2, 2, 2)), 2, target="cuda")
    assert out.shape == (0, 4, 2, 2)
    for deterministic in (False, True):
        grads = ops.deform_roi_pool_backward(out, x, rois, np.zeros((0, 2, 2, 2)), 2,
                                             target="cuda", deterministic=deterministic)
        assert not grads.input.any() and grads.offset.shape == (0, 2, 2, 2)
        grads = ops.deform_psroi_pool_backward(np.zeros((0, 1, 2, 2)), x, rois, None, 1.0, 1, 2, 2,
                                               target="cuda", deterministic=deterministic)
        assert not grads.input.any() and grads.trans is None


def test_device_arrays_in_give_device_arrays_out():
    rng = np.random.default_rng(6)
    inputs, params = roi_case(rng, N=1, C=1, K=2, output_size=(1, 2))
    on_device = {k: cuda.to_device(v) for k, v in inputs.items()}
    out = ops.deform_roi_pool(**on_device, **params)         # target=None: chosen from the arrays
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    assert_close(out.copy_to_host(), ops.deform_roi_pool(**inputs, **params), 1e-10, "forward")
    grads = ops.deform_roi_pool_backward(out, **on_device, **params)
    assert hasattr(grads.input, "copy_to_host") and hasattr(grads.offset, "copy_to_host")
