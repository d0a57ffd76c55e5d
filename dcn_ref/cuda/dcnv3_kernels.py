"""DCNv3 and DCNv4 on the GPU: one thread per output element, the maths of sampling.py.

Layouts as on the CPU (dcn_ref/cpu/dcnv3_kernels.py): input and out (N, H, W, C)
channels last, offsets and weights read through a ``PointGeometry``. Threads are numbered in the order
of the array they write (channels fastest), so neighbouring threads touch neighbouring
addresses. The input gradient is a scatter: with atomics by default, or, with
``deterministic``, a gather in a fixed order (the parallel counting sort of
deterministic.py, one plane per image and group, sample s = (ho*W_out + wo)*P + p).
Every kernel takes ``real``, a zero of the data's dtype: the arithmetic runs in it.
"""
from numba import cuda

from ..kernel_args import real_of
from ..point_sampling import (point_cell, point_corner_pixel, point_position, point_value,
                              write_point_grads)
from ..sampling import ZEROS, SamplePoints, as_real, corner, tap_grads
from .deterministic import index_dtype, sort_by_cell
from .launch import launch, unravel
from .memory import empty, zeros


@cuda.jit
def dcnv3_forward(input, offset, mask, geometry, real, out):
    """Thread (n, ho, wo, c) writes out[n, ho, wo, c], summing over the P points of its group."""
    H, W, C = input.shape[1], input.shape[2], input.shape[3]
    idx = cuda.grid(1)
    if idx >= out.size:
        return
    n, ho, wo, c = unravel(idx, geometry.out_h, geometry.out_w, C)
    g = c // geometry.group_channels
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, real)
    total = as_real(0.0, real)
    for p in range(geometry.points):
        i, j = point_position(p, geometry)
        cell = point_cell(points, n, ho, wo, g, p, i, j)
        if cell.inside:
            total += cell.m * point_value(input, n, c, cell)
    out[n, ho, wo, c] = total


@cuda.jit
def dcnv3_point_grads(grad_out, input, offset, mask, geometry, real, grad_offset, grad_mask):
    """Thread (n, ho, wo, g*P + p) writes the offset and weight gradients of point p of
    group g: ``sampling.tap_grads`` of its corner sums over the group's channels. No two
    threads write the same entry."""
    H, W = input.shape[1], input.shape[2]
    G, P, Cg = geometry.group, geometry.points, geometry.group_channels
    idx = cuda.grid(1)
    if idx >= grad_out.shape[0] * geometry.out_h * geometry.out_w * G * P:
        return
    n, ho, wo, gp = unravel(idx, geometry.out_h, geometry.out_w, G * P)
    g = gp // P
    p = gp - g * P
    i, j = point_position(p, geometry)
    cell = point_cell(SamplePoints(offset, mask, True, ZEROS, geometry, H, W, real), n, ho, wo,
                      g, p, i, j)
    d0 = d1 = d2 = d3 = as_real(0.0, real)
    if cell.inside:
        for c in range(g * Cg, (g + 1) * Cg):
            go = grad_out[n, ho, wo, c]
            d0 += go * point_corner_pixel(input, n, c, cell, 0)
            d1 += go * point_corner_pixel(input, n, c, cell, 1)
            d2 += go * point_corner_pixel(input, n, c, cell, 2)
            d3 += go * point_corner_pixel(input, n, c, cell, 3)
    write_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry,
                      tap_grads(cell, d0, d1, d2, d3))


@cuda.jit
def dcnv3_input_grad_atomic(grad_out, offset, mask, geometry, real, grad_input):
    """Thread (n, ho, wo, c) adds m * grad_out * w to the four corners of each of its points.

    Several threads add to one pixel; atomics make that safe but leave the order of the
    additions, and so the last bits of the sums, to the scheduler.
    """
    H, W, C = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= grad_out.size:
        return
    n, ho, wo, c = unravel(idx, geometry.out_h, geometry.out_w, C)
    g = c // geometry.group_channels
    go = grad_out[n, ho, wo, c]
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, real)
    for p in range(geometry.points):
        i, j = point_position(p, geometry)
        cell = point_cell(points, n, ho, wo, g, p, i, j)
        if not cell.inside:
            continue
        for t in range(4):
            r, s, w, _, _ = corner(t, cell)
            if 0 <= r < H and 0 <= s < W:
                cuda.atomic.add(grad_input, (n, r, s, c), cell.m * w * go)


@cuda.jit
def dcnv3_point_cells(offset, mask, geometry, height, width, real, cell_of, cell_count):
    """Thread (q, s): cell_of[q, s] = the cell of sample s = (ho*W_out + wo)*P + p of plane
    q = n*G + g (top-left corner (y0, x0) as (y0 + 1)*(W + 1) + x0 + 1), -1 when it adds 0;
    and cell_count[q, cell] += 1 (step 1 of deterministic.py's sort)."""
    G, P = geometry.group, geometry.points
    n_samples = cell_of.shape[1]
    idx = cuda.grid(1)
    if idx >= cell_of.shape[0] * n_samples:
        return
    q = idx // n_samples
    s = idx - q * n_samples
    pixel = s // P
    i, j = point_position(s % P, geometry)
    cell = point_cell(SamplePoints(offset, mask, True, ZEROS, geometry, height, width, real),
                      q // G, pixel // geometry.out_w, pixel % geometry.out_w, q % G, s % P, i, j)
    index = (cell.y0 + 1) * (width + 1) + (cell.x0 + 1) if cell.inside else -1
    cell_of[q, s] = index
    if index >= 0:
        cuda.atomic.add(cell_count, (q, index), 1)


@cuda.jit
def dcnv3_input_grad_gather(grad_out, offset, mask, geometry, real, cell_start, cell_count, order,
                            grad_input):
    """Thread (n, r, s, c) adds up, in a fixed order, every sample that read pixel (r, s)."""
    N, H, W, C = grad_input.shape
    G, P = geometry.group, geometry.points
    idx = cuda.grid(1)
    if idx >= grad_input.size:
        return
    n, r, s, c = unravel(idx, H, W, C)
    g = c // geometry.group_channels
    q = n * G + g
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, real)
    total = as_real(0.0, real)
    for t in range(4):
        # the cells that have (r, s) as their corner t have their top-left corner at
        # (r - down, s - right); rows and columns of cells start at -1
        cell_y = r - t // 2
        cell_x = s - t % 2
        if cell_y < -1 or cell_x < -1:
            continue
        cell = (cell_y + 1) * (W + 1) + (cell_x + 1)
        start = cell_start[q, cell]
        for e in range(start, start + cell_count[q, cell]):
            sample = order[q, e]
            pixel = sample // P
            ho = pixel // geometry.out_w
            wo = pixel - ho * geometry.out_w
            i, j = point_position(sample % P, geometry)
            cell = point_cell(points, n, ho, wo, g, sample % P, i, j)
            total += cell.m * corner(t, cell).w * grad_out[n, ho, wo, c]
    grad_input[n, r, s, c] += total


# -- launching ------------------------------------------------------------------------------

def dcnv3(input, offset, mask, geometry):
    """out (N, H_out, W_out, C) on the device."""
    out = empty((input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]), input.dtype)
    launch(dcnv3_forward, out.size, input, offset, mask, geometry, real_of(input), out)
    return out


def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask,
                   deterministic=False):
    """grad_input += the input gradient; every point's entries of grad_offset and grad_mask
    (shaped like offset and mask, possibly the same array) written."""
    N, H, W, C = input.shape
    real = real_of(input)
    n_points = N * geometry.out_h * geometry.out_w * geometry.group * geometry.points
    launch(dcnv3_point_grads, n_points, grad_out, input, offset, mask, geometry, real,
           grad_offset, grad_mask)
    if not deterministic:
        launch(dcnv3_input_grad_atomic, grad_out.size, grad_out, offset, mask, geometry, real,
               grad_input)
        return
    cell_start, cell_count, order = point_buckets(offset, mask, geometry, N, H, W)
    launch(dcnv3_input_grad_gather, grad_input.size, grad_out, offset, mask, geometry, real,
           cell_start, cell_count, order, grad_input)


def point_buckets(offset, mask, geometry, n_images, height, width, real=None):
    """(cell_start, cell_count, order): the points of every plane (image, group) sorted by
    the cell they fall in, for the gathers of the deterministic input gradients; the cells
    located in ``real``'s type (the offsets' dtype by default), which must be the gather's."""
    Q = n_images * geometry.group
    n_samples = geometry.out_h * geometry.out_w * geometry.points
    n_cells = (height + 1) * (width + 1)
    index = index_dtype(n_samples, n_cells)
    cell_of = empty((Q, n_samples), index)
    cell_count = zeros((Q, n_cells), index)
    launch(dcnv3_point_cells, Q * n_samples, offset, mask, geometry, height, width,
           real_of(offset) if real is None else real, cell_of, cell_count)
    return sort_by_cell(cell_of, cell_count)
