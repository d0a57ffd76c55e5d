"""Checks that need a real GPU: sizes the simulator cannot run in time, and the CLI."""
import re
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

from dcn_ref import ops
from dcn_ref.cuda import blas, gemm
from dcn_ref.gradcheck_cases import standard_cases

from helpers import assert_close, deform_case

pytestmark = pytest.mark.gpu


def test_realistic_deform_conv2d_equals_cpu():
    rng = np.random.default_rng(0)
    inputs, params = deform_case(rng, N=4, C_in=32, C_out=48, H=23, W=19, kernel=(3, 3), G=2,
                                 groups=2, offset_scale=3.0)
    cpu = ops.deform_conv2d(**inputs, **params)
    assert_close(ops.deform_conv2d(**inputs, **params, target="cuda"), cpu, 1e-10, "forward")
    g = rng.standard_normal(cpu.shape)
    cpu_grads = ops.deform_conv2d_backward(g, **inputs, **params)
    for deterministic in (False, True):
        grads = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda",
                                           deterministic=deterministic)
        for name in cpu_grads._fields:
            assert_close(getattr(grads, name), getattr(cpu_grads, name), 1e-10, name)


def test_deterministic_float32_is_bitwise_reproducible_on_hardware():
    rng = np.random.default_rng(1)
    inputs, params = deform_case(rng, N=8, C_in=16, C_out=16, H=20, W=20, kernel=(3, 3),
                                 offset_scale=1.0, dtype=np.float32)
    g = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    runs = [ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
            for _ in range(3)]
    for name in runs[0]._fields:
        for other in runs[1:]:
            np.testing.assert_array_equal(getattr(runs[0], name), getattr(other, name))


def test_gradcheck_cli_on_cuda():
    result = subprocess.run([sys.executable, "-m", "dcn_ref", "gradcheck", "--target", "cuda"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"^(\d+) of (\d+) derivatives pass$", result.stdout, re.M)
    assert passed and passed.group(1) == passed.group(2), result.stdout
    for name, *_ in standard_cases():               # every op of the catalogue has its rows
        assert re.search(rf"^{re.escape(name)}\s", result.stdout, re.M), name


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cublas_gemm_equals_the_tiled_gemm(dtype, tol):
    # the cuda extra installs nvmath-python and cuBLAS: the fast path must be the one running
    assert blas.library() is not None, blas.why_not()
    assert gemm.backend() == "cublas"
    rng = np.random.default_rng(2)
    Z, M, P, N = 6, 37, 70, 45
    for trans_a, trans_b, A in [(False, False, 1), (True, False, 3), (False, True, 6),
                                (False, False, 3)]:
        a = rng.standard_normal((A, P, M) if trans_a else (A, M, P)).astype(dtype)
        b = rng.standard_normal((Z, N, P) if trans_b else (Z, P, N)).astype(dtype)
        bias = cuda.to_device(rng.standard_normal(A * M).astype(dtype))
        c0 = rng.standard_normal((Z, M, N)).astype(dtype)
        for accumulate in (False, True):
            results = []
            for run in (gemm.vendor_gemm, gemm.tiled_gemm):
                c = cuda.to_device(c0)
                run(cuda.to_device(a), cuda.to_device(b), c, trans_a, trans_b, accumulate, bias)
                results.append(c.copy_to_host())
            assert_close(results[0], results[1], tol, f"{trans_a} {trans_b} {A} {accumulate}")
