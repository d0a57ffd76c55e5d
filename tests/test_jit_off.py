"""With the JIT off (``NUMBA_DISABLE_JIT=1``, how one steps through a Numba kernel in a
debugger) every op runs, as plain Python, and gives the compiled kernels' numbers.

``every_op`` runs each op forward and backward (and, where it has them, its forward mode
and double backward) on tiny arrays; a subprocess runs it with
the JIT off and saves the arrays, and this process runs it compiled and compares."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcn_ref import ops

from helpers import assert_close

ROOT = Path(__file__).resolve().parent.parent


def op_cases(dtype):
    """[(name, forward, backward, inputs, params)]: every differentiable op on tiny arrays of
    ``dtype``."""
    rng = np.random.default_rng(0)

    def arr(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    rois = np.array([[0, 0.5, 1.0, 4.0, 3.5], [1, -1.0, 2.0, 3.0, 6.0]], dtype)
    grid = {"kernel_size": 3, "padding": 1, "group": 2, "offset_scale": 1.5}
    x = arr(1, 4, 5, 2 * 9)               # 9 channels a group: eight lanes and one more
    return [
        ("bilinear_sample", ops.bilinear_sample, ops.bilinear_sample_backward,
         {"image": arr(2, 4, 5), "coords": arr(2, 7, 2, scale=3.0)}, {"padding_mode": "border"}),
        ("offset_sample", ops.offset_sample, ops.offset_sample_backward,
         {"input": arr(1, 2, 4, 5), "offset": arr(1, 4, 4, 5, scale=2.0)},
         {"padding_mode": "zeros"}),
        ("conv2d", ops.conv2d, ops.conv2d_backward,
         {"input": arr(2, 4, 5, 5), "weight": arr(6, 2, 3, 3), "bias": arr(6)},
         {"padding": 1, "groups": 2}),
        ("deform_conv2d", ops.deform_conv2d, ops.deform_conv2d_backward,
         {"input": arr(2, 4, 5, 5), "offset": arr(2, 2 * 2 * 9, 5, 5, scale=2.0),
          "weight": arr(3, 4, 3, 3), "bias": arr(3), "mask": arr(2, 2 * 9, 5, 5)},
         {"padding": 1}),
        ("deform_roi_pool", ops.deform_roi_pool, ops.deform_roi_pool_backward,
         {"input": arr(2, 3, 6, 5), "rois": rois, "offset": arr(2, 2, 2, 3, scale=0.1),
          "mask": arr(2, 1, 2, 3)}, {"output_size": (2, 3), "sampling_ratio": 2, "gamma": 0.5}),
        ("deform_psroi_pool", ops.deform_psroi_pool, ops.deform_psroi_pool_backward,
         {"input": arr(2, 2 * 2 * 2, 6, 5), "rois": rois, "trans": arr(2, 2, 2, 2, scale=0.1)},
         {"spatial_scale": 1.0, "output_dim": 2, "group_size": 2, "pooled_size": 2,
          "part_size": 2, "sample_per_part": 2, "trans_std": 0.1}),
        ("dcnv3", ops.dcnv3, ops.dcnv3_backward,
         {"input": x, "offset": arr(1, 4, 5, 2 * 9 * 2), "mask": arr(1, 4, 5, 2 * 9)}, grid),
        ("dcnv4", ops.dcnv4, ops.dcnv4_backward,
         {"input": x, "offset_mask": arr(1, 4, 5, 2 * 9 * 3 + 2)}, grid),
    ]


def every_op(dtype):
    """{name: array} of every op's output and gradients on tiny arrays of ``dtype``, and of
    im2col and col2im."""
    results = {}
    for name, forward, backward, inputs, params in op_cases(dtype):
        out = forward(**inputs, **params)
        results[name] = out
        grads = backward(np.ones_like(out), **inputs, **params)
        for field, grad in grads._asdict().items():
            if grad is not None:
                results[f"{name}.{field}"] = grad
        jvp = getattr(ops, f"{name}_jvp", None)
        if jvp is None:
            continue
        # forward mode along the inputs' own values; second derivatives along the gradients
        results[f"{name}_jvp"] = jvp(**inputs, **params, **{
            f"{field}_dot": inputs[field] for field in grads._fields})
        second = getattr(ops, f"{name}_backward_backward")(grads, np.ones_like(out), **inputs,
                                                           **params)
        for field, grad in second._asdict().items():
            if grad is not None:
                results[f"{name}_backward_backward.{field}"] = grad
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4)).astype(dtype)
    results["im2col"] = columns = ops.im2col(x, 3, padding=1)
    results["col2im"] = ops.col2im(columns, x.shape, 3, padding=1)
    return results


SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_jit_off import every_op
np.savez(sys.argv[2], **every_op(np.float64))
np.savez(sys.argv[3], **every_op(np.float32))
"""


@pytest.fixture(scope="module")
def jit_off(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jit_off")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "tests"),
                             str(folder / "f64.npz"), str(folder / "f32.npz")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return {np.float64: np.load(folder / "f64.npz"), np.float32: np.load(folder / "f32.npz")}


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_every_op_runs_with_the_jit_off_and_equals_the_compiled_kernels(jit_off, dtype, tol):
    compiled = every_op(dtype)
    plain = jit_off[dtype]
    assert sorted(plain.files) == sorted(compiled), "the two runs computed different arrays"
    for name, array in compiled.items():
        assert plain[name].dtype == array.dtype, name
        assert_close(plain[name], array, tol, f"{name} with NUMBA_DISABLE_JIT=1")
