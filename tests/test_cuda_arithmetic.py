"""The CUDA sampling kernels compute in float32 for float32 arrays: their PTX, as NVIDIA's
compiler (NVVM) emits it for a real GPU, has no float64 instruction. No GPU is needed to
compile; Numba's simulator, which runs kernels as Python, cannot show this."""
import os
import re
import types

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")
pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                                reason="compiles with NVVM, which Numba's simulator replaces")

import numba  # noqa: E402
from numba import cuda  # noqa: E402

from dcn_ref.cuda import dcnv3_kernels, deform, deterministic  # noqa: E402
from dcn_ref.geometry import PointGeometry, conv_geometry  # noqa: E402

#: narrowing a float64 argument (DCNv3's offset_scale) once per thread is not arithmetic
ALLOWED = {"cvt.rn.f32.f64"}


def array(dtype, ndim):
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


def signatures(dtype):
    """(kernel, argument types) of every sampling kernel, for arrays of ``dtype``: the types
    the launches in engine.py and dcnv3_kernels.py pass."""
    f = {n: array(dtype, n) for n in (2, 3, 4)}
    i2 = array(np.int32, 2)
    real = numba.from_dtype(np.dtype(dtype))
    conv = numba.typeof(conv_geometry((3, 3), (5, 5), stride=(1, 1), padding=(1, 1),
                                      dilation=(1, 1)))
    point = numba.typeof(PointGeometry(3, 3, 1, 1, 1, 1, 1, 1, 5, 5, 2, 4, 9, 1.0, False, 18,
                                       0, 9))
    flag, mode, size = numba.boolean, numba.int64, numba.int64
    engine = (f[4], f[4], f[3], flag, mode, conv, real)    # image, offset, mask, ...
    return {
        "deform_im2col": (deform.deform_im2col, engine + (f[4],)),
        "deform_col2im_atomic": (deform.deform_col2im_atomic, (f[4],) + engine[1:] + (f[4],)),
        "deform_coord_grad": (deform.deform_coord_grad, (f[4],) + engine + (f[4], f[3])),
        "sample_cells": (deterministic.sample_cells,
                         engine[1:6] + (size, size, real, i2, i2)),
        "gather_image_grad": (deterministic.gather_image_grad,
                              (f[4],) + engine[1:] + (i2, i2, i2, f[4])),
        "dcnv3_forward": (dcnv3_kernels.dcnv3_forward, (f[4], f[4], f[4], point, real, f[4])),
        "dcnv3_point_grads": (dcnv3_kernels.dcnv3_point_grads,
                              (f[4], f[4], f[4], f[4], point, real, f[4], f[4])),
        "dcnv3_input_grad_atomic": (dcnv3_kernels.dcnv3_input_grad_atomic,
                                    (f[4], f[4], f[4], point, real, f[4])),
        "dcnv3_point_cells": (dcnv3_kernels.dcnv3_point_cells,
                              (f[4], f[4], point, size, size, real, i2, i2)),
        "dcnv3_input_grad_gather": (dcnv3_kernels.dcnv3_input_grad_gather,
                                    (f[4], f[4], f[4], point, real, i2, i2, i2, f[4])),
    }


def float64_instructions(ptx):
    """The opcodes of the PTX's instructions on float64 values (declarations left out)."""
    opcodes = re.findall(r"^\s*(?:@%p\d+\s+)?([a-z][\w.]*\.f64)\b", ptx, re.M)
    return sorted(set(op for op in opcodes if not op.startswith(("ld.param", "st.param"))))


@pytest.fixture
def compile_ptx(monkeypatch):
    """``compile_ptx(kernel, argtypes)`` for compute capability 9.0 without a device: Numba asks
    the current device for its compute capability when it compiles the functions a kernel
    calls, and there is none here."""
    monkeypatch.setattr(cuda.dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=(9, 0)))

    def run(kernel, argtypes):
        ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=(9, 0))
        return ptx
    return run


def test_float32_sampling_kernels_have_no_float64_arithmetic(compile_ptx):
    found = {name: set(float64_instructions(compile_ptx(kernel, argtypes))) - ALLOWED
             for name, (kernel, argtypes) in signatures(np.float32).items()}
    assert not any(found.values()), {name: ops for name, ops in found.items() if ops}


def test_float64_kernels_do_compute_in_float64(compile_ptx):
    # the check above reads the PTX it means to: float64 arrays give float64 arithmetic
    kernel, argtypes = signatures(np.float64)["deform_im2col"]
    assert {"add.f64", "mul.f64"} <= set(float64_instructions(compile_ptx(kernel, argtypes)))
