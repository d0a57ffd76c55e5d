"""The tiled GEMM kernel against NumPy's matmul, on sizes that are not multiples of the tile."""
import numpy as np
import pytest
from numba import cuda

from dcn_ref.cuda.gemm import TILE, gemm

from helpers import assert_close


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_equals_numpy(trans_a, trans_b):
    rng = np.random.default_rng(0)
    M, P, N = TILE + 1, 2 * TILE + 3, TILE - 1
    a = rng.standard_normal((2, P, M) if trans_a else (2, M, P))   # batch 2, broadcast over 4
    b = rng.standard_normal((4, N, P) if trans_b else (4, P, N))
    c0 = rng.standard_normal((4, M, N))
    expected = np.stack([(a[z % 2].T if trans_a else a[z % 2]) @ (b[z].T if trans_b else b[z])
                         for z in range(4)])
    c = cuda.to_device(c0)
    gemm(cuda.to_device(a), cuda.to_device(b), c, trans_a, trans_b)
    assert_close(c.copy_to_host(), expected, 1e-12, "gemm")
    gemm(cuda.to_device(a), cuda.to_device(b), c, trans_a, trans_b, accumulate=True)
    assert_close(c.copy_to_host(), 2 * expected, 1e-12, "gemm accumulate")
