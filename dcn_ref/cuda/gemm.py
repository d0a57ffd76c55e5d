"""Matrix products on the GPU: cuBLAS where it is installed, else a tiled GEMM written out.

``gemm(a, b, c, trans_a, trans_b, accumulate, bias)`` computes, for every batch z,

    c[z] = op(a[z % A]) @ op(b[z])        (c[z] += ... when accumulate)
    c[z][r, :] += bias[(z % A) * M + r]   when a bias is given

where op transposes when asked, A is the batch size of a and divides Z, b's batch is Z
(so one weight (G, M, P) serves a batch of n*G column matrices, and the bias is the
output channel's). c is (Z, M, N).

Which GEMM runs. ``backend()`` picks once per process: the vendor's (cuBLAS, through
nvmath-python: ``blas.py``) when that imports and creates a handle, else the tiled kernel
below, which is always what Numba's simulator runs. The two compute the same products;
the tests compare them on hardware, and the simulator tests check what the cuBLAS path
hands to the library, through a stand-in for it (``use``).

Tiling. Each block computes one TILE x TILE tile of c with one thread per element.
Walking along the shared dimension P a tile at a time, every thread loads one element
of a's tile and one of b's into shared memory, the block waits (syncthreads), and then
every thread reads TILE values of each tile from fast shared memory instead of global
memory: each global element is loaded once per tile instead of once per product,
TILE times less traffic. The second syncthreads stops the next loads from overwriting
a tile that slower threads are still reading. Elements past the edge of a or b load as
0, so sizes need not be multiples of TILE. The bias is added as the tile is written
(no pass of its own).
"""
import numba
from numba import cuda
from numba.cuda.cudadrv.driver import device_memset

from . import blas
from .launch import SIMULATED, THREADS_PER_BLOCK, current_stream, launch, launch_blocks

TILE = 4 if SIMULATED else 16   # the simulator runs each of the TILE*TILE threads in Python


def _make_gemm(dtype):
    @cuda.jit
    def gemm(a, b, c, trans_a, trans_b, accumulate, bias, use_bias):
        z = cuda.blockIdx.z
        za = z % a.shape[0]
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
                tile_b[ty, tx] = b[z, col, pb] if trans_b else b[z, pb, col]
            else:
                tile_b[ty, tx] = 0.0
            cuda.syncthreads()
            for t in range(TILE):
                total += tile_a[ty, t] * tile_b[t, tx]
            cuda.syncthreads()
        if row < M and col < N:
            if use_bias:
                total += bias[za * M + row]
            if accumulate:
                c[z, row, col] += total
            else:
                c[z, row, col] = total
    return gemm


_GEMM = {"float32": _make_gemm(numba.float32), "float64": _make_gemm(numba.float64)}


@cuda.jit
def _fill_rows(c, bias, n_weights, accumulate):
    """Thread (z, r, n): c[z, r, n] (+)= bias[(z % n_weights) * M + r] (before a vendor GEMM
    that adds its product)."""
    Z, M, N = c.shape
    idx = cuda.grid(1)
    if idx >= Z * M * N:
        return
    z = idx // (M * N)
    r = (idx // N) % M
    value = bias[(z % n_weights) * M + r]
    if accumulate:
        c[z, r, idx % N] += value
    else:
        c[z, r, idx % N] = value


def _check(a, b, c, trans_a):
    Z, M, _ = c.shape
    A = a.shape[0]
    if b.shape[0] != Z or Z % A or (a.shape[2] if trans_a else a.shape[1]) != M:
        raise ValueError(f"gemm: expected a (A, M, P) with A dividing Z, b (Z, ., .) and c "
                         f"(Z, M, N), got a {a.shape}, b {b.shape}, c {c.shape}")


def tiled_gemm(a, b, c, trans_a=False, trans_b=False, accumulate=False, bias=None):
    """``gemm`` with the tiled kernel of this module (one launch)."""
    _check(a, b, c, trans_a)
    Z, M, N = c.shape
    if Z == 0 or M == 0 or N == 0:
        return
    blocks = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE, Z)
    use_bias = bias is not None
    launch_blocks(_GEMM[str(c.dtype)], blocks, (TILE, TILE), a, b, c, trans_a, trans_b,
                  accumulate, bias if use_bias else c.reshape(c.size)[:1], use_bias)


def vendor_gemm(a, b, c, trans_a=False, trans_b=False, accumulate=False, bias=None):
    """``gemm`` with cuBLAS (the ``blas.CuBLAS`` chosen by ``use``, else the process's): the
    bias first written into c by one kernel, then the product added by cuBLAS."""
    _check(a, b, c, trans_a)
    Z, M, N = c.shape
    if Z == 0 or M == 0 or N == 0:
        return
    library = _chosen.get("library") or blas.library()
    if bias is not None:
        launch(_fill_rows, c.size, c, bias, a.shape[0], accumulate)
        accumulate = True
    if (a.shape[1] if trans_a else a.shape[2]) == 0:     # an empty sum: cuBLAS refuses it
        if not accumulate:
            device_memset(c.reshape(c.size), 0, c.nbytes, current_stream())
        return
    library.gemm(a, b, c, trans_a, trans_b, accumulate)


_chosen = {}


def backend():
    """"cublas" or "tiled": the GEMM ``gemm`` runs in this process (decided on first use:
    cuBLAS where ``blas.library()`` finds it, never in the simulator)."""
    if "name" not in _chosen:
        _chosen["name"] = "tiled" if SIMULATED or blas.library() is None else "cublas"
    return _chosen["name"]


def use(name, library=None):
    """Make ``gemm`` run ``name`` ("cublas" or "tiled") from now on, for the tests and the
    benchmark, which compare the two in one process; ``library`` (a ``blas.CuBLAS``) stands
    in for the process's cuBLAS. Returns the previous (name, library)."""
    if name not in ("cublas", "tiled"):
        raise ValueError(f"name: expected 'cublas' or 'tiled', got {name!r}")
    if name == "cublas" and library is None and blas.library() is None:
        raise ValueError(f"name: 'cublas' is not available here ({blas.why_not()})")
    previous = (backend(), _chosen.get("library"))
    _chosen["name"], _chosen["library"] = name, library
    return previous


def gemm(a, b, c, trans_a=False, trans_b=False, accumulate=False, bias=None):
    """c[z] (+)= op(a[z % A]) @ op(b[z]) (+ bias): the module's docstring. All of a, b and c
    are 3-d C-contiguous device arrays of one dtype; bias is (A*M,) or None."""
    if backend() == "cublas":
        vendor_gemm(a, b, c, trans_a, trans_b, accumulate, bias)
    else:
        tiled_gemm(a, b, c, trans_a, trans_b, accumulate, bias)


# -- the reductions of the convolutions' backward ---------------------------------------------

@cuda.jit
def weight_and_bias_grads(partials, grad_out, grad_weight, grad_bias, has_bias, accumulate):
    """One launch for both sums over the images of a batch chunk, in a fixed order.

    Blocks below ``ceil(E / THREADS_PER_BLOCK)``: thread e writes grad_weight[e] (+)= the sum
    over images i of partials[i, e] (E = grad_weight.size; partials (n, E) holds each image's
    grad_out @ columns.T). Each further block sums one output channel o of grad_out (n, C, L)
    over images and pixels into grad_bias[o]: its threads stride over the n*L values, then
    halve their partial sums in shared memory, always pairing the same threads. The bias sums
    run in float64 whatever the dtype (n*L terms each; the weight's have n).
    """
    E = grad_weight.size
    weight_blocks = (E + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    block = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if block < weight_blocks:
        e = block * THREADS_PER_BLOCK + tid
        if e < E:
            total = partials[0, e]              # a chunk has one image at least
            for i in range(1, partials.shape[0]):
                total += partials[i, e]
            if accumulate:
                grad_weight[e] += total
            else:
                grad_weight[e] = total
        return
    if not has_bias:
        return
    o = block - weight_blocks
    n, _, L = grad_out.shape
    sums = cuda.shared.array(THREADS_PER_BLOCK, numba.float64)
    total = 0.0
    for j in range(tid, n * L, THREADS_PER_BLOCK):
        total += grad_out[j // L, o, j % L]
    sums[tid] = total
    cuda.syncthreads()
    half = THREADS_PER_BLOCK // 2
    while half > 0:
        if tid < half:
            sums[tid] += sums[tid + half]
        cuda.syncthreads()
        half //= 2
    if tid == 0:
        if accumulate:
            grad_bias[o] += sums[0]
        else:
            grad_bias[o] = sums[0]


def reduce_grads(partials, grad_out, grad_weight, grad_bias, accumulate):
    """grad_weight (+)= partials summed over images, grad_bias (or None) (+)= grad_out summed
    over images and pixels: one launch (``weight_and_bias_grads``)."""
    E = grad_weight.size
    n_blocks = (E + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    has_bias = grad_bias is not None
    if has_bias:
        n_blocks += grad_bias.size
    if n_blocks == 0:
        return
    launch_blocks(weight_and_bias_grads, n_blocks, THREADS_PER_BLOCK,
                  partials.reshape(partials.shape[0], E), grad_out, grad_weight.reshape(E),
                  grad_bias if has_bias else grad_weight.reshape(E)[:1], has_bias, accumulate)
