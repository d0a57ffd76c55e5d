"""cuBLAS for the convolutions' matrix products, through nvmath-python's bindings.

Why this library. cuBLAS's strided batched GEMM is exactly the product ``gemm.py``
describes: a batch of matrices at a fixed stride (0 for one weight shared by the batch),
either operand transposed, ``beta = 1`` to add into the output. nvmath-python
(``nvmath.bindings.cublas``, NVIDIA's) calls it on the device pointers of the arrays the
kernels use, on the kernels' own stream, with no array library in between and no copy; it
builds on the same ``cuda-bindings`` and ``cuda-pathfinder`` as numba-cuda, and finds the
cuBLAS of the ``nvidia-cublas`` wheel (the one PyTorch's CUDA wheels install too). CuPy
would do the same through ``cupy.matmul``, but has no ``beta`` (the weight gradient is
accumulated over batch chunks) and is a whole array library to install for one call;
PyTorch's matmul would serve only tensors that come through ``dcn_ref.torch``, and
``dcn_ref`` does not import torch.

Row-major products on a column-major library. A C-contiguous (R, C) matrix is, read
column-major, its transpose (C, R) with leading dimension C. So ``c = op(a) @ op(b)`` is
computed as ``c.T = op(b).T @ op(a).T``: cuBLAS's A is our b, its B our a, and m = N,
n = M, k = P. An operand we do not transpose is, read column-major, already the matrix
cuBLAS needs (it is told N); one we transpose is its transpose (it is told T).

One handle per thread and device (cuBLAS handles are not shared between threads that
call at once), created on first use and kept for the life of the process.
"""
import threading

import numpy as np
from numba import cuda

from .launch import current_stream

_NOT_TRANSPOSED, _TRANSPOSED = 0, 1     # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T


def device_pointer(a):
    """The device address of a device array's first element."""
    return a.__cuda_array_interface__["data"][0]


def stream_handle(stream):
    """The CUstream of a Numba stream as an int (0: the default stream)."""
    return int(stream) if stream else 0


class CuBLAS:
    """The strided batched GEMMs of a cuBLAS binding.

    Parameters
    ----------
    library : module
        ``nvmath.bindings.cublas``, or a stand-in with its functions ``create``,
        ``set_stream``, ``sgemm_strided_batched`` and ``dgemm_strided_batched`` (the tests
        pass one that computes with NumPy).
    pointer : callable, default device_pointer
        ``pointer(array)``: the address of an array's first element.
    """

    def __init__(self, library, pointer=device_pointer):
        self.library = library
        self.pointer = pointer
        self._local = threading.local()

    def handle(self):
        """This thread's handle for the current device."""
        handles = self._local.__dict__.setdefault("handles", {})
        device = cuda.get_current_device().uuid
        if device not in handles:
            handles[device] = self.library.create()
        return handles[device]

    def gemm(self, a, b, c, trans_a, trans_b, accumulate):
        """c[z] (+)= op(a[z % A]) @ op(b[z]) (``gemm.gemm``'s shapes, no bias, P >= 1): one
        cuBLAS call when A is 1 or Z, else one per residue z % A."""
        Z, M, N = c.shape
        A = a.shape[0]
        P = a.shape[1] if trans_a else a.shape[2]
        # Read column-major, b[z] is op(b).T when not trans_b ((N, P), leading dimension N)
        # and op(b) when trans_b ((P, N), leading dimension P): cuBLAS transposes it in the
        # second case. Likewise a[z] is op(a).T ((P, M), leading dimension P) or op(a)
        # ((M, P), leading dimension M).
        op_b, ld_b = (_TRANSPOSED, P) if trans_b else (_NOT_TRANSPOSED, N)
        op_a, ld_a = (_TRANSPOSED, M) if trans_a else (_NOT_TRANSPOSED, P)
        shared = A < Z                        # one a for every A-th matrix of the batch
        calls = A if shared and A > 1 else 1
        step = calls                          # batch entries z = r, r + step, ...
        stride_a = 0 if shared else M * P
        call = {np.dtype(np.float32): self.library.sgemm_strided_batched,
                np.dtype(np.float64): self.library.dgemm_strided_batched}[np.dtype(c.dtype)]
        alpha = np.ones(1, c.dtype)
        beta = np.full(1, 1.0 if accumulate else 0.0, c.dtype)
        handle = self.handle()
        self.library.set_stream(handle, stream_handle(current_stream()))
        for r in range(calls):
            call(handle, op_b, op_a, N, M, P,
                 alpha.ctypes.data,
                 self.pointer(b[r]), ld_b, step * P * N,
                 self.pointer(a[r if shared else 0]), ld_a, stride_a,
                 beta.ctypes.data,
                 self.pointer(c[r]), N, step * M * N,
                 Z // step)


_library = {}


def library():
    """The process's ``CuBLAS`` on nvmath-python's bindings, or None when those do not import
    or cannot create a handle here (no cuBLAS, no driver): then ``gemm`` runs the tiled
    kernel. Decided once."""
    if "cublas" not in _library:
        try:
            from nvmath.bindings import cublas
            chosen = CuBLAS(cublas)
            chosen.handle()
        except Exception as exc:  # noqa: BLE001  any failure means: not usable here
            chosen = None
            _library["why_not"] = f"{type(exc).__name__}: {exc}"
        _library["cublas"] = chosen
    return _library["cublas"]


def why_not():
    """Why ``library()`` is None (the exception it met), or None."""
    library()
    return _library.get("why_not")
