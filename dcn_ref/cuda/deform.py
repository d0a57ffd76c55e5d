"""Deformable im2col and its adjoints as CUDA kernels: one thread per element.

The engine, its layouts and the per-element maths are in ``dcn_ref/sampling.py``, the
same functions the CPU kernels call. Threads are numbered in the order of the output's
memory (l fastest), so neighbouring threads write neighbouring addresses. Every kernel
takes ``real``, a zero of the data's dtype: the arithmetic runs in that dtype.
"""
from numba import cuda

from ..sampling import SamplePoints, column_value, corner, tap_cell, tap_coord_grad, write_tap_grads
from .launch import unravel


@cuda.jit
def deform_im2col(image, offset, mask, use_mask, mode, geometry, real, columns):
    """Thread (q, c, k, l) writes columns[q, c, k, l]."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * K * L:
        return
    q, c, k, l = unravel(idx, Cq, K, L)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, real)
    columns[q, c, k, l] = column_value(image, points, q, c, k, l)


@cuda.jit
def deform_col2im_atomic(grad_columns, offset, mask, use_mask, mode, geometry, real, grad_image):
    """Thread (q, c, k, l) adds its share to the four pixels it read, with atomics.

    Many threads hit the same pixel. atomicAdd makes each addition safe but leaves their
    order to the scheduler, so float sums can differ in the last bits from run to run;
    ``dcn_ref/cuda/deterministic.py`` gathers instead.
    """
    Q, Cq, H, W = grad_image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * K * L:
        return
    q, c, k, l = unravel(idx, Cq, K, L)
    cell = tap_cell(SamplePoints(offset, mask, use_mask, mode, geometry, H, W, real), q, k, l)
    if not cell.inside:
        return
    g = grad_columns[q, c, k, l] * cell.m
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < H and 0 <= s < W:
            cuda.atomic.add(grad_image, (q, c, r, s), w * g)


@cuda.jit
def deform_coord_grad(grad_columns, image, offset, mask, use_mask, mode, geometry, real,
                      grad_offset, grad_mask):
    """Thread (q, k, l) sums over the Cq channels of its sample point. No two threads
    write the same element, so there are no atomics and no ordering question."""
    Q, _, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * K * L:
        return
    _, q, k, l = unravel(idx, Q, K, L)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, real)
    write_tap_grads(grad_offset, grad_mask, use_mask, q, k, l,
                    tap_coord_grad(grad_columns, image, points, q, k, l))
