"""Matrix products on the GPU: a tiled shared-memory GEMM, written out, and bias kernels.

``gemm(a, b, c, trans_a, trans_b, accumulate)`` computes, for every batch z,

    c[z] = op(a[z % A]) @ op(b[z % B])        (c[z] += ... when accumulate)

where op transposes when asked and A, B are the batch sizes of a and b (so one weight
(G, M, P) serves a batch of n*G column matrices). c is (Z, M, N).

Tiling. Each block computes one TILE x TILE tile of c with one thread per element.
Walking along the shared dimension P a tile at a time, every thread loads one element
of a's tile and one of b's into shared memory, the block waits (syncthreads), and then
every thread reads TILE values of each tile from fast shared memory instead of global
memory: each global element is loaded once per tile instead of once per product,
TILE times less traffic. The second syncthreads stops the next loads from overwriting
a tile that slower threads are still reading. Elements past the edge of a or b load as
0, so sizes need not be multiples of TILE.
"""
import numba
from numba import cuda

from .launch import SIMULATED, current_stream

TILE = 4 if SIMULATED else 16   # the simulator runs each of the TILE*TILE threads in Python


def _make_gemm(dtype):
    @cuda.jit
    def gemm(a, b, c, trans_a, trans_b, accumulate):
        z = cuda.blockIdx.z
        za = z % a.shape[0]
        zb = z % b.shape[0]
        M = c.shape[1]
        N = c.shape[2]
        P = a.shape[1] if trans_a else a.shape[2]
        tile_a = cuda.shared.array((TILE, TILE), dtype)
        tile_b = cuda.shared.array((TILE, TILE), dtype)
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        row = cuda.blockIdx.y * TILE + ty        # of c (and of op(a))
        col = cuda.blockIdx.x * TILE + tx        # of c (and of op(b))
        total = dtype(0.0)
        for p0 in range(0, P, TILE):
            pa = p0 + tx                          # this thread loads op(a)[row, pa]
            if row < M and pa < P:
                tile_a[ty, tx] = a[za, pa, row] if trans_a else a[za, row, pa]
            else:
                tile_a[ty, tx] = 0.0
            pb = p0 + ty                          # ... and op(b)[pb, col]
            if pb < P and col < N:
                tile_b[ty, tx] = b[zb, col, pb] if trans_b else b[zb, pb, col]
            else:
                tile_b[ty, tx] = 0.0
            cuda.syncthreads()
            for t in range(TILE):
                total += tile_a[ty, t] * tile_b[t, tx]
            cuda.syncthreads()
        if row < M and col < N:
            if accumulate:
                c[z, row, col] += total
            else:
                c[z, row, col] = total
    return gemm


_GEMM = {"float32": _make_gemm(numba.float32), "float64": _make_gemm(numba.float64)}


def gemm(a, b, c, trans_a=False, trans_b=False, accumulate=False):
    """c[z] (+)= op(a[z % A]) @ op(b[z % B]); all three are 3-d device arrays."""
    Z, M, N = c.shape
    if Z == 0 or M == 0 or N == 0:
        return
    blocks = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE, Z)
    _GEMM[str(c.dtype)][blocks, (TILE, TILE), current_stream()](a, b, c, trans_a, trans_b, accumulate)


@cuda.jit
def add_bias(out, bias):
    """Thread (n, o, l): out[n, o, l] += bias[o]."""
    N, C, L = out.shape
    idx = cuda.grid(1)
    if idx < N * C * L:
        out[idx // (C * L), (idx // L) % C, idx % L] += bias[(idx // L) % C]


@cuda.jit
def bias_grad(grad_out, grad_bias):
    """Thread o sums grad_out[:, o, :] in a fixed order (deterministic)."""
    N, C, L = grad_out.shape
    o = cuda.grid(1)
    if o >= C:
        return
    total = 0.0
    for n in range(N):
        for l in range(L):
            total += grad_out[n, o, l]
    grad_bias[o] = total
