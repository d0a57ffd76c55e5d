"""The image gradient of the sampling engine without atomics: bitwise reproducible.

With atomics (``deform.deform_col2im_atomic``) every sample adds to the four pixels it
read, in whatever order the scheduler runs the threads; float addition is not
associative, so the sums differ in their last bits from run to run. Here every pixel
*gathers* its gradient instead, always adding the same terms in the same order:

1. ``bucket_samples`` (one thread per plane q) sorts the plane's K*L samples by the
   cell they fall in, a counting sort, stable, so samples of one cell stay in index
   order. Cells are indexed by their top-left corner (y0, x0) in [-1, H-1] x [-1, W-1],
   ``cell = (y0 + 1) * (W + 1) + (x0 + 1)``; samples that touch no pixel are left out.
2. ``gather_image_grad`` (one thread per pixel (q, c, r, s)) visits the four cells that
   have the pixel as a corner, in a fixed order, and adds the weighted gradients of
   their samples in sorted order.

The cost: a serial pass over each plane's samples (one thread a plane) and, in the
gather, a second evaluation of every sample's cell; the README gives measured figures.
"""
import numpy as np
from numba import cuda

from ..sampling import SamplePoints, corner, tap_cell
from .launch import unravel


def index_dtype(n_samples, n_cells):
    """The integer dtype of the bucket arrays: int32 while every sample index and cell
    count fits (half the memory), int64 for a plane of 2**31 samples or cells or more."""
    return np.int32 if max(n_samples, n_cells) < 2 ** 31 else np.int64


@cuda.jit(device=True)
def counting_sort(q, cell_of, cell_start, cell_count, order):
    """Sort the samples of plane q by cell, stably, given each one's cell in ``cell_of[q]``
    (-1 for a sample that touches no pixel): the shared second half of every op's bucket
    step (this engine's, and DCNv3's in dcnv3_kernels.py).

    cell_start, cell_count (Q, n_cells)   where each cell's samples start in ``order`` and
                                          how many there are
    order (Q, n_samples)                  sample indices, grouped by cell
    Integer arrays of ``index_dtype(n_samples, n_cells)``.
    """
    n_cells = cell_count.shape[1]
    for cell in range(n_cells):
        cell_count[q, cell] = 0
    for s in range(cell_of.shape[1]):            # count the samples in each cell
        cell = cell_of[q, s]
        if cell >= 0:
            cell_count[q, cell] += 1
    total = 0                                    # exclusive prefix sum: where cells start
    for cell in range(n_cells):
        cell_start[q, cell] = total
        total += cell_count[q, cell]
        cell_count[q, cell] = 0                  # reused as a fill cursor below
    for s in range(cell_of.shape[1]):            # place samples in index order
        cell = cell_of[q, s]
        if cell >= 0:
            order[q, cell_start[q, cell] + cell_count[q, cell]] = s
            cell_count[q, cell] += 1


@cuda.jit
def bucket_samples(offset, mask, use_mask, mode, geometry, height, width, cell_of, cell_start,
                   cell_count, order):
    """Thread q: counting sort of plane q's samples s = k*L + l by cell.

    cell_of (Q, K*L)   the cell of each sample, -1 when it touches no pixel (or its mask is
                       NaN); cell_start, cell_count, order as in ``counting_sort``.
    """
    Q, K = offset.shape[0], offset.shape[1]
    L = offset.shape[3]
    q = cuda.grid(1)
    if q >= Q:
        return
    points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width)
    for s in range(K * L):
        cell = tap_cell(points, q, s // L, s % L)
        cell_of[q, s] = (cell.y0 + 1) * (width + 1) + (cell.x0 + 1) if cell.inside else -1
    counting_sort(q, cell_of, cell_start, cell_count, order)


@cuda.jit
def gather_image_grad(grad_columns, offset, mask, use_mask, mode, geometry, cell_start, cell_count,
                      order, grad_image):
    """Thread (q, c, r, s) adds to grad_image[q, c, r, s] every sample that read the pixel."""
    Q, Cq, H, W = grad_image.shape
    L = offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * H * W:
        return
    q, c, r, s = unravel(idx, Cq, H, W)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W)
    total = 0.0
    for t in range(4):
        # the cell whose corner t is this pixel has its top-left corner at
        # (r - down, s - right); rows and columns of cells start at -1
        cell_y = r - t // 2
        cell_x = s - t % 2
        if cell_y < -1 or cell_x < -1:
            continue
        cell = (cell_y + 1) * (W + 1) + (cell_x + 1)
        start = cell_start[q, cell]
        for e in range(start, start + cell_count[q, cell]):
            sample = order[q, e]
            k = sample // L
            l = sample % L
            cell = tap_cell(points, q, k, l)
            total += corner(t, cell).w * (grad_columns[q, c, k, l] * cell.m)
    grad_image[q, c, r, s] += total
