"""How kernels are launched: one thread per element of a flat index space (``launch``), or
an explicit grid of blocks (``launch_blocks``: the GEMM's tiles, the block reductions).

Numba's simulator (NUMBA_ENABLE_CUDASIM=1) runs every thread of a block as a Python
thread, so it gets small blocks; real GPUs get 256 threads a block.

Every kernel of the target starts in ``start``, the one place to count launches (each
costs Numba some microseconds on the host: checking and packing its arguments).

Kernels go to the stream set by ``on_stream`` (the default stream otherwise), so that a
caller with its own stream (PyTorch's current stream, say) keeps its ordering.
"""
import contextlib
import contextvars

import numba
from numba.extending import register_jitable

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
THREADS_PER_BLOCK = 32 if SIMULATED else 256

_STREAM = contextvars.ContextVar("dcn_ref_cuda_stream", default=0)


@contextlib.contextmanager
def on_stream(stream):
    """Launch every kernel of the ops called inside the ``with`` block on ``stream`` (a Numba
    stream, e.g. ``numba.cuda.external_stream(pointer)``) instead of the default stream."""
    token = _STREAM.set(stream)
    try:
        yield stream
    finally:
        _STREAM.reset(token)


def current_stream():
    """The stream kernels are launched on now: the one set by ``on_stream``, else 0 (default)."""
    return _STREAM.get()


def start(kernel, blocks, threads, args):
    """Queue ``kernel`` on the current stream: the one launch point of the target."""
    kernel[blocks, threads, current_stream()](*args)


def launch(kernel, n_threads, *args):
    """Run ``kernel`` on at least ``n_threads`` threads (each returns early past the end)."""
    if n_threads <= 0:
        return
    start(kernel, (n_threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, THREADS_PER_BLOCK,
          args)


def launch_blocks(kernel, blocks, threads, *args):
    """Run ``kernel`` on a grid of ``blocks`` (an int or a tuple) of ``threads`` each."""
    start(kernel, blocks, threads, args)


@register_jitable
def unravel(idx, d1, d2, d3):
    """The (i0, i1, i2, i3) position of flat index ``idx`` in a C-order array whose last three
    dimensions are (d1, d2, d3): how a thread finds the element it owns."""
    i3 = idx % d3
    i2 = (idx // d3) % d2
    i1 = (idx // (d3 * d2)) % d1
    return idx // (d3 * d2 * d1), i1, i2, i3
