"""dcnv3 and dcnv4 on the CUDA target against the CPU target (float64, 1e-10), both
input-gradient modes (atomic scatter, deterministic gather), NaN and huge offsets and NaN
weights (the simulator raises on any out-of-bounds index), empty batches, images with
no pixel and device arrays. Tiny shapes: the simulator runs each thread in Python; the
last two tests need a real GPU."""
import numpy as np
import pytest
from numba import cuda

from dcn_ref import ops

from dcnv3_cases import dcnv3_case, pack
from helpers import assert_close, assert_cuda_equals_cpu, compare

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30]


def test_dcnv3_equals_cpu():
    rng = np.random.default_rng(0)
    inputs, params = dcnv3_case(rng, N=1, H=4, W=5, group=2, group_channels=2, kernel=(3, 2),
                                stride=(2, 1), padding=(1, 1), dilation=(1, 2), offset_scale=0.5)
    assert_cuda_equals_cpu(ops.dcnv3, ops.dcnv3_backward, rng, **inputs, **params)


def test_dcnv4_with_remove_center_equals_cpu():
    rng = np.random.default_rng(1)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=4, group=2, group_channels=1, kernel=(3, 3),
                                remove_center=True, offset_scale=1.5)
    offset_mask = pack(inputs["offset"], inputs["mask"], 2, extra=3, fill=np.nan)
    assert_cuda_equals_cpu(ops.dcnv4, ops.dcnv4_backward, rng, input=inputs["input"],
                           offset_mask=offset_mask, **params)


def test_float32_equals_cpu():
    rng = np.random.default_rng(2)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=4, group=1, group_channels=2, kernel=(2, 2),
                                dtype=np.float32)
    cpu = ops.dcnv3(**inputs, **params)
    ours = ops.dcnv3(**inputs, **params, target="cuda")
    assert ours.dtype == np.float32
    assert_close(ours, cpu, 1e-5, "forward")
    g = rng.standard_normal(cpu.shape).astype(np.float32)
    for deterministic in (False, True):
        compare(ops.dcnv3_backward(g, **inputs, **params, target="cuda",
                                         deterministic=deterministic),
                      ops.dcnv3_backward(g, **inputs, **params), 1e-5, "float32")


def test_deterministic_mode_is_bitwise_reproducible_and_agrees_with_atomics():
    # far-reaching points in a small image: many samples share pixels, the case atomics reorder
    rng = np.random.default_rng(3)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=3, group=1, group_channels=2, kernel=(3, 3),
                                reach=2.0, dtype=np.float32)
    g = rng.standard_normal(ops.dcnv3(**inputs, **params).shape).astype(np.float32)
    first = ops.dcnv3_backward(g, **inputs, **params, target="cuda", deterministic=True)
    second = ops.dcnv3_backward(g, **inputs, **params, target="cuda", deterministic=True)
    atomic = ops.dcnv3_backward(g, **inputs, **params, target="cuda")
    for name in first._fields:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
        assert_close(getattr(atomic, name), getattr(first, name), 1e-5, name)


def test_hostile_offsets_and_weights_are_safe_on_the_gpu_path():
    rng = np.random.default_rng(4)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=4, group=2, group_channels=1, kernel=(2, 2))
    flat = inputs["offset"].reshape(-1)
    flat[::3] = np.resize(NASTY, flat[::3].size)
    inputs["mask"].reshape(-1)[::4] = np.nan
    cpu = ops.dcnv3(**inputs, **params)
    gpu = ops.dcnv3(**inputs, **params, target="cuda")
    assert np.isfinite(gpu).all()
    assert_close(gpu, cpu, 1e-10, "forward")
    g = np.ones_like(cpu)
    for deterministic in (False, True):
        grads = ops.dcnv3_backward(g, **inputs, **params, target="cuda", deterministic=deterministic)
        assert all(np.isfinite(a).all() for a in grads)
        compare(grads, ops.dcnv3_backward(g, **inputs, **params), 1e-10, "grads")


def test_device_arrays_and_an_empty_batch():
    rng = np.random.default_rng(5)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=3, group=1, group_channels=2, kernel=(2, 2))
    on_device = {k: cuda.to_device(v) for k, v in inputs.items()}
    out = ops.dcnv3(**on_device, **params)           # target=None: chosen from the arrays
    assert hasattr(out, "copy_to_host")
    assert_close(out.copy_to_host(), ops.dcnv3(**inputs, **params), 1e-10, "forward")
    grads = ops.dcnv3_backward(cuda.to_device(np.ones(out.shape)), **on_device, **params)
    assert all(hasattr(a, "copy_to_host") for a in grads)
    empty, params = dcnv3_case(rng, N=0, H=3, W=3, group=1, group_channels=2, kernel=(2, 2))
    out = ops.dcnv3(**empty, **params, target="cuda")
    assert out.shape == (0, 4, 4, 2)
    grads = ops.dcnv3_backward(out, **empty, **params, target="cuda", deterministic=True)
    assert grads.offset.shape == empty["offset"].shape


def test_an_image_with_no_pixel_reads_zero_with_zero_gradient():
    rng = np.random.default_rng(6)
    for H, W in [(0, 2), (2, 0)]:
        inputs, params = dcnv3_case(rng, N=1, H=H, W=W, group=1, group_channels=2, kernel=(3, 3),
                                    padding=(2, 2), reach=1.0)
        inputs["mask"][0, 0, 0, :2] = [np.inf, np.nan]
        out = ops.dcnv3(**inputs, **params, target="cuda")
        assert out.shape == (1, H + 2, W + 2, 2) and not out.any()
        g = rng.standard_normal(out.shape)
        for deterministic in (False, True):
            grads = ops.dcnv3_backward(g, **inputs, **params, target="cuda",
                                       deterministic=deterministic)
            assert [a.shape for a in grads] == [v.shape for v in inputs.values()]
            assert not any(a.any() for a in grads)
        packed = pack(inputs["offset"], inputs["mask"], 1, extra=1)
        assert not ops.dcnv4(inputs["input"], packed, **params, target="cuda").any()
        grads = ops.dcnv4_backward(g, inputs["input"], packed, **params, target="cuda")
        assert grads.offset_mask.shape == packed.shape and not grads.offset_mask.any()


@pytest.mark.gpu
def test_realistic_dcnv3_and_dcnv4_equal_cpu_on_hardware():
    # an InternImage-like stage, too large for the simulator: 16 channels a group, 3x3
    rng = np.random.default_rng(6)
    inputs, params = dcnv3_case(rng, N=2, H=21, W=19, group=4, group_channels=16, kernel=(3, 3),
                                offset_scale=1.0)
    assert_cuda_equals_cpu(ops.dcnv3, ops.dcnv3_backward, rng, **inputs, **params)
    offset_mask = pack(inputs["offset"], inputs["mask"], 4, extra=4)
    assert_cuda_equals_cpu(ops.dcnv4, ops.dcnv4_backward, rng, input=inputs["input"],
                           offset_mask=offset_mask, **params)


@pytest.mark.gpu
def test_deterministic_float32_is_bitwise_reproducible_on_hardware():
    rng = np.random.default_rng(7)
    inputs, params = dcnv3_case(rng, N=4, H=14, W=14, group=4, group_channels=16, kernel=(3, 3),
                                dtype=np.float32)
    g = rng.standard_normal((4, 14, 14, 64)).astype(np.float32)
    runs = [ops.dcnv3_backward(g, **inputs, **params, target="cuda", deterministic=True)
            for _ in range(3)]
    for name in runs[0]._fields:
        for other in runs[1:]:
            np.testing.assert_array_equal(getattr(runs[0], name), getattr(other, name))
