"""dcn_ref leaves its caller's process as it found it: no environment variables set on
import, and the BLAS thread counts it holds at one during an op given back afterwards."""
import subprocess
import sys

import numpy as np
import threadpoolctl

from dcn_ref import ops


def test_importing_dcn_ref_sets_no_environment_variable():
    code = ("import os; before = dict(os.environ); import dcn_ref, dcn_ref.ops, dcn_ref.nn; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def blas_threads():
    return [(lib["filepath"], lib["num_threads"]) for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


def test_blas_thread_counts_are_the_callers_after_an_op():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    ops.conv2d(x, w, None, padding=1)               # loads SciPy's BLAS, which the op uses
    before = blas_threads()
    grads = ops.conv2d_backward(np.ones((2, 4, 5, 5)), x, w, None, padding=1)
    assert blas_threads() == before
    # and the op's result is the plain sum it should be: d sum(out) / d bias = N*H*W
    assert np.allclose(ops.conv2d_backward(np.ones((2, 4, 5, 5)), x, w, np.zeros(4),
                                           padding=1).bias, 50.0)
    assert grads.input.shape == x.shape
