"""The image gradient of the sampling engine without atomics: bitwise reproducible.

With atomics (``deform.deform_col2im_atomic``) every sample adds to the four pixels it
read, in whatever order the scheduler runs the threads; float addition is not
associative, so the sums differ in their last bits from run to run. Here every pixel
*gathers* its gradient instead, always adding the same terms in the same order. First
the samples of every plane q are sorted by the cell they fall in, stably (samples of one
cell in index order). Cells are indexed by their top-left corner (y0, x0) in
[-1, H-1] x [-1, W-1], ``cell = (y0 + 1) * (W + 1) + (x0 + 1)``; samples that touch no
pixel are left out. The sort is a counting sort in four parallel steps:

1. ``sample_cells`` (a thread per sample): the sample's cell in ``cell_of[q, s]``, and
   ``cell_count[q, cell] += 1`` with an atomic (integer sums come out the same in any
   order). DCNv3 has its own first step (``dcnv3_kernels.dcnv3_point_cells``).
2. ``scan_cells`` (a block per plane): ``cell_start``, the exclusive prefix sum of the
   counts, walked a block-wide tile at a time.
3. ``place_samples`` (a thread per sample): each sample takes the next free slot of its
   cell's segment of ``order`` (an atomic on the cell's cursor): every sample is in its
   cell's segment, in an order that varies from run to run...
4. ``sort_cells`` (a thread per cell): ...until each segment is sorted by sample index
   (a heapsort: O(s log s) even when every sample of a plane lands in one cell).

Then ``gather_image_grad`` (a thread per pixel (q, c, r, s)) visits the four cells that
have the pixel as a corner, in a fixed order, and adds the weighted gradients of their
samples in sorted order. The result is the serial counting sort's, element for element;
the work is spread over a thread per sample and per cell instead of one per plane.
"""
import numpy as np
from numba import cuda

from ..sampling import SamplePoints, as_real, corner, tap_cell
from .launch import THREADS_PER_BLOCK, launch, launch_blocks, unravel
from .memory import empty


def index_dtype(n_samples, n_cells):
    """The integer dtype of the bucket arrays: int32 while every sample index and cell
    count fits (half the memory), int64 for a plane of 2**31 samples or cells or more."""
    return np.int32 if max(n_samples, n_cells) < 2 ** 31 else np.int64


@cuda.jit
def sample_cells(offset, mask, use_mask, mode, geometry, height, width, real, cell_of,
                 cell_count):
    """Thread (q, s), sample s = k*L + l of plane q: cell_of[q, s] = its cell (-1 when it
    touches no pixel or its mask is NaN), and cell_count[q, cell] += 1."""
    Q, K = offset.shape[0], offset.shape[1]
    L = offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * K * L:
        return
    q = idx // (K * L)
    s = idx - q * (K * L)
    cell = tap_cell(SamplePoints(offset, mask, use_mask, mode, geometry, height, width, real),
                    q, s // L, s % L)
    index = (cell.y0 + 1) * (width + 1) + (cell.x0 + 1) if cell.inside else -1
    cell_of[q, s] = index
    if index >= 0:
        cuda.atomic.add(cell_count, (q, index), 1)


@cuda.jit
def scan_cells(cell_count, cell_start, cursor):
    """Block q: cell_start[q] = the exclusive prefix sum of cell_count[q], and cursor[q] a
    copy of it (``place_samples`` moves it along).

    The cells are taken a tile of THREADS_PER_BLOCK at a time: each thread loads one count,
    the block scans the tile in shared memory (step d: every thread adds the value d places
    to its left, for d = 1, 2, 4, ...), and ``carry`` holds the sum of the tiles before.
    """
    q = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_cells = cell_count.shape[1]
    tile = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    carry = 0
    for first in range(0, n_cells, THREADS_PER_BLOCK):
        cell = first + tid
        count = cell_count[q, cell] if cell < n_cells else 0
        tile[tid] = count
        cuda.syncthreads()
        d = 1
        while d < THREADS_PER_BLOCK:
            left = tile[tid - d] if tid >= d else 0
            cuda.syncthreads()
            tile[tid] += left
            cuda.syncthreads()
            d *= 2
        if cell < n_cells:
            start = carry + tile[tid] - count        # inclusive sum minus its own count
            cell_start[q, cell] = start
            cursor[q, cell] = start
        carry += tile[THREADS_PER_BLOCK - 1]
        cuda.syncthreads()                          # every thread has read the tile's total


@cuda.jit
def place_samples(cell_of, cursor, order):
    """Thread (q, s): order[q, the next free slot of its cell] = s."""
    Q, n_samples = cell_of.shape
    idx = cuda.grid(1)
    if idx >= Q * n_samples:
        return
    q = idx // n_samples
    s = idx - q * n_samples
    cell = cell_of[q, s]
    if cell >= 0:
        order[q, cuda.atomic.add(cursor, (q, cell), 1)] = s


@cuda.jit(device=True)
def _sift_down(order, q, start, root, end):
    """Restore the max-heap order[q, start:start+end] below ``root``."""
    while 2 * root + 1 < end:
        child = 2 * root + 1
        if child + 1 < end and order[q, start + child] < order[q, start + child + 1]:
            child += 1
        if order[q, start + root] >= order[q, start + child]:
            return
        order[q, start + root], order[q, start + child] = (order[q, start + child],
                                                           order[q, start + root])
        root = child


@cuda.jit
def sort_cells(cell_start, cell_count, order):
    """Thread (q, cell): heapsort the cell's segment of order[q] into increasing sample
    index (the indices are distinct, so the result is unique)."""
    Q, n_cells = cell_count.shape
    idx = cuda.grid(1)
    if idx >= Q * n_cells:
        return
    q = idx // n_cells
    cell = idx - q * n_cells
    start = cell_start[q, cell]
    count = cell_count[q, cell]
    for root in range(count // 2 - 1, -1, -1):
        _sift_down(order, q, start, root, count)
    for end in range(count - 1, 0, -1):
        order[q, start], order[q, start + end] = order[q, start + end], order[q, start]
        _sift_down(order, q, start, 0, end)


def sort_by_cell(cell_of, cell_count):
    """Steps 2-4 of the module's docstring: (cell_start, cell_count, order) from the cells
    of the samples (Q, n_samples) and their counts (Q, n_cells)."""
    Q, n_cells = cell_count.shape
    cell_start = empty(cell_count.shape, cell_count.dtype)
    cursor = empty(cell_count.shape, cell_count.dtype)
    order = empty(cell_of.shape, cell_of.dtype)
    if Q == 0 or n_cells == 0:
        return cell_start, cell_count, order
    launch_blocks(scan_cells, Q, THREADS_PER_BLOCK, cell_count, cell_start, cursor)
    launch(place_samples, cell_of.size, cell_of, cursor, order)
    launch(sort_cells, cell_count.size, cell_start, cell_count, order)
    return cell_start, cell_count, order


@cuda.jit
def gather_image_grad(grad_columns, offset, mask, use_mask, mode, geometry, real, cell_start,
                      cell_count, order, grad_image):
    """Thread (q, c, r, s) adds to grad_image[q, c, r, s] every sample that read the pixel."""
    Q, Cq, H, W = grad_image.shape
    L = offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * H * W:
        return
    q, c, r, s = unravel(idx, Cq, H, W)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, real)
    total = as_real(0.0, real)
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
