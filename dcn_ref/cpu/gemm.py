"""The matrix products of the CPU convolutions: BLAS's gemm, called from inside Numba kernels.

A convolution kernel multiplies the columns of one block of output pixels right after it
builds them, on whichever of Numba's threads holds that block (``conv.py``). So the product
is a call from compiled code into the single-threaded ``sgemm``/``dgemm`` of the BLAS that
SciPy ships (the one ``np.dot`` in Numba calls too):

    gemm(trans_a, trans_b, alpha, a, b, beta, c)      c = alpha * op(a) @ op(b) + beta * c

with op(a) = a.T when trans_a. The arrays are row-major 2-d arrays or views whose rows are
contiguous, at any row stride: a product reads a slice of grad_output or writes a slice of
the output in place, and beta = 1 adds into a running sum. ``np.dot`` does neither.

``single_threaded_blas()`` holds every BLAS library of the process at one thread for the
duration of an op (``threadpoolctl``), so that a product wakes no BLAS threads: left to
itself, a multi-threaded BLAS keeps its threads spinning for a while after every product
(OpenBLAS: about 2**28 cycles, 0.1 s), and on a machine with few cores they would take the
cores from the sampling that follows. It gives the caller's setting back afterwards, and it
is where the BLAS routines are looked up, before any kernel that calls them is compiled or
loaded from the cache. A process forked while another thread was inside an op starts with
a fresh lock and the caller's thread counts (``_after_fork``): that op's thread does not
exist in the child, and would never release or restore them.
"""
import contextlib
import os
import threading

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

_lock = threading.Lock()
_blas = {"controller": None, "limiter": None, "depth": 0}

# The Fortran routines, by the names under which ``_bind_blas`` hands their addresses to
# LLVM: every argument is a pointer (transa, transb, m, n, k, alpha, a, lda, b, ldb, beta,
# c, ldc). Compiled code refers to them by name, so Numba can cache it.
_GEMM_TYPE = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("dcn_ref_sgemm", _GEMM_TYPE)
_dgemm = types.ExternalFunction("dcn_ref_dgemm", _GEMM_TYPE)


def _bind_blas():
    """Give LLVM the addresses of SciPy's sgemm and dgemm under the names above."""
    from llvmlite import binding
    from numba.extending import get_cython_function_address
    for name in ("sgemm", "dgemm"):
        binding.add_symbol("dcn_ref_" + name,
                           get_cython_function_address("scipy.linalg.cython_blas", name))


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, every BLAS library loaded in the process runs on one thread; the
    caller's thread counts come back when the last of the ops running at once is done."""
    with _lock:
        if _blas["controller"] is None:
            _bind_blas()                       # loads SciPy's BLAS, which threadpoolctl sees
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


def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """c (M, N) = alpha * op(a) @ op(b) + beta * c, op(x) = x.T where trans_x; a, b and c
    are 2-d with contiguous rows, of one dtype (float32 or float64). beta = 0 overwrites c
    (whatever it held, NaN included).

    This plain-NumPy body is the twin that runs with the JIT off (``NUMBA_DISABLE_JIT=1``);
    compiled code calls BLAS instead (``_gemm_blas``)."""
    product = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    c[...] = product if beta == 0.0 else product + beta * c


@register_jitable
def _leading(x, row_length):
    """The leading dimension BLAS wants for the row-major x: its row stride in elements
    (at least the row length, and 1, as BLAS checks)."""
    return max(1, row_length, x.strides[0] // x.itemsize)


def _gemm_blas(trans_a, trans_b, alpha, a, b, beta, c):
    """``gemm`` as one call of SciPy's BLAS, for compiled code."""
    rows, cols = c.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    if rows == 0 or cols == 0:
        return
    if inner == 0:
        for i in range(rows):
            for j in range(cols):
                c[i, j] = 0.0 if beta == 0.0 else beta * c[i, j]
        return
    # Fortran reads a row-major matrix as its transpose, so it computes c.T = op(b).T @ op(a).T:
    # b comes first, and a matrix's leading dimension is its row stride
    ints = np.empty(6, np.int32)
    ints[0], ints[1], ints[2] = cols, rows, inner
    ints[3] = _leading(b, b.shape[1])
    ints[4] = _leading(a, a.shape[1])
    ints[5] = _leading(c, cols)
    flags = np.empty(2, np.uint8)
    flags[0] = 84 if trans_b else 78          # ord("T"), ord("N")
    flags[1] = 84 if trans_a else 78
    scalars = np.empty(2, c.dtype)
    scalars[0], scalars[1] = alpha, beta
    if c.itemsize == 4:
        _sgemm(flags.ctypes, flags[1:].ctypes, ints.ctypes, ints[1:].ctypes, ints[2:].ctypes,
               scalars.ctypes, b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes,
               scalars[1:].ctypes, c.ctypes, ints[5:].ctypes)
    else:
        _dgemm(flags.ctypes, flags[1:].ctypes, ints.ctypes, ints[1:].ctypes, ints[2:].ctypes,
               scalars.ctypes, b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes,
               scalars[1:].ctypes, c.ctypes, ints[5:].ctypes)


@overload(gemm)
def _gemm_compiled(trans_a, trans_b, alpha, a, b, beta, c):
    return _gemm_blas
