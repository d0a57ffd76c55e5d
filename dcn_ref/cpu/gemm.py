"""The matrix products of the CPU convolutions, run on Numba's threads.

Each product is cut into one block of rows per Numba thread, and each block is one
single-threaded BLAS call (``np.dot`` in a Numba kernel calls the BLAS that SciPy ships).
So the sampling kernels and the GEMMs of an op run on one pool of threads, Numba's, and
the BLAS library's own threads stay asleep. Left to itself, a multi-threaded BLAS keeps
its threads spinning for a while after every product (OpenBLAS: about 2**28 cycles,
0.1 s), and on a machine with few cores those spinning threads take the cores from the
sampling kernel that follows; they can only be told otherwise by an environment
variable read when the library loads, which a library must not set for its caller.

``single_threaded_blas()`` holds the BLAS libraries at one thread for the duration of an
op (``threadpoolctl``), so that a block's ``np.dot`` does not wake the BLAS threads either,
and gives the caller's setting back afterwards. A process forked while another thread was
inside an op starts with a fresh lock and the caller's thread counts (``_after_fork``):
that op's thread does not exist in the child, and would never release or restore them.

The weight gradient sums over rows: every block writes its own partial sum, added in a
fixed order, so the result depends on the number of threads (in its last bits) but not
on timing.
"""
import contextlib
import os
import threading

import numba
import numpy as np
from numba import prange

from .compile import kernel

_lock = threading.Lock()
_blas = {"controller": None, "limiter": None, "depth": 0}


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, every BLAS library loaded in the process runs on one thread; the
    caller's thread counts come back when the last of the ops running at once is done."""
    with _lock:
        if _blas["controller"] is None:
            import scipy.linalg.cython_blas  # noqa: F401  the BLAS np.dot calls in Numba
            import threadpoolctl
            _blas["controller"] = threadpoolctl.ThreadpoolController().select(user_api="blas")
        if _blas["depth"] == 0:
            _blas["limiter"] = _blas["controller"].limit(limits=1)
        _blas["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                _blas["limiter"].restore_original_limits()


def _after_fork():
    """In a forked child: a lock no thread holds, and, if the fork came while an op of
    another thread held the BLAS libraries at one thread, the caller's counts back."""
    global _lock
    _lock = threading.Lock()
    if _blas["depth"]:
        _blas["depth"] = 0
        _blas["limiter"].restore_original_limits()


os.register_at_fork(after_in_child=_after_fork)


def blocks():
    """The number of row blocks a product is cut into: one a Numba thread."""
    return numba.get_num_threads()


@kernel
def matmul_nt(a, b, n_blocks, out):
    """out (M, N) = a (M, K) @ b (N, K).T, in n_blocks blocks of rows."""
    M = a.shape[0]
    step = (M + n_blocks - 1) // n_blocks
    bt = b.T
    for t in prange(n_blocks):  # each block writes its own rows of out
        r0 = min(M, t * step)
        r1 = min(M, r0 + step)
        if r0 < r1:
            np.dot(a[r0:r1], bt, out[r0:r1])


@kernel
def matmul_nn(a, b, n_blocks, out):
    """out (M, N) = a (M, K) @ b (K, N), in n_blocks blocks of rows."""
    M = a.shape[0]
    step = (M + n_blocks - 1) // n_blocks
    for t in prange(n_blocks):  # each block writes its own rows of out
        r0 = min(M, t * step)
        r1 = min(M, r0 + step)
        if r0 < r1:
            np.dot(a[r0:r1], b, out[r0:r1])


@kernel
def matmul_tn_add(a, b, partial, out):
    """out (N, P) += a (M, N).T @ b (M, P): block t of rows sums into partial[t]
    (partial (n_blocks, N, P) is scratch), then the partial sums are added in order."""
    M = a.shape[0]
    n_blocks = partial.shape[0]
    step = (M + n_blocks - 1) // n_blocks
    for t in prange(n_blocks):  # each block writes only partial[t]
        r0 = min(M, t * step)
        r1 = min(M, r0 + step)
        if r0 < r1:
            np.dot(a[r0:r1].T, b[r0:r1], partial[t])
        else:
            partial[t][:] = 0
    for t in range(n_blocks):
        out += partial[t]
