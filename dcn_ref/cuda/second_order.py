"""Forward mode and second derivatives on the GPU: tangent columns and second-order sampling.

The maths is ``dcn_ref/sampling.py``'s (its section "Second order and forward mode"), the
functions the CPU kernels of ``dcn_ref/cpu/second_order.py`` call; here one thread per
element, as in deform.py and dcnv3_kernels.py:

    tangent columns      thread (q, c, k, l) writes ``sampling.column_tangent``; for
                         DCNv3, thread (n, ho, wo, c) sums its points' column tangents
    second-order         thread (q, k, l) (a DCNv3 point) adds ``tap_second_grads`` to its
    sampling             own offset and mask entries: no atomics; the image gets
                         ``e_t * grad_columns`` at corner t, scattered with atomics or, with
                         ``deterministic``, gathered in a fixed order from the samples
                         bucketed by cell (engine.buckets, dcnv3_kernels.point_buckets)

These kernels compute in float64 whatever the data (their ``SamplePoints`` carry ``real``
0.0, and so do the buckets they gather from); the first-order kernels use the data's
dtype. Tangents of the offsets (and masks) are arrays; the image's may be a stand-in that the
kernels do not read (``use_image_dot`` False). Gradients are added into.
"""
from numba import cuda

from ..kernel_args import or_stand_in
from ..point_sampling import (add_point_grads, point_cell, point_corner_sums, point_position,
                              point_tangent)
from ..sampling import (ZEROS, SamplePoints, add_tap_grads, column_tangent, corner, moves, tap_cell,
                        tap_second_coord_grad, tap_second_grads, tap_tangent, tangent_factors)
from .dcnv3_kernels import point_buckets
from .engine import buckets
from .launch import launch, unravel
from .memory import empty


# -- the sampling engine (layouts in dcn_ref/sampling.py) ------------------------------------

@cuda.jit
def tangent_im2col_kernel(image, image_dot, use_image_dot, offset, mask, use_mask, offset_dot,
                          mask_dot, mode, geometry, columns_dot):
    """Thread (q, c, k, l) writes columns_dot[q, c, k, l]."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * K * L:
        return
    q, c, k, l = unravel(idx, Cq, K, L)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0)
    columns_dot[q, c, k, l] = column_tangent(image, image_dot, use_image_dot, points, tangents,
                                             q, c, k, l)


@cuda.jit
def second_image_grad_atomic(grad_columns, offset, mask, use_mask, offset_dot, mask_dot, mode,
                             geometry, grad_image):
    """Thread (q, c, k, l) adds e_t * grad_columns to the four pixels its tap read, with
    atomics (the order of the additions, and so the last bits, left to the scheduler)."""
    Q, Cq, H, W = grad_image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * K * L:
        return
    q, c, k, l = unravel(idx, Cq, K, L)
    cell = tap_cell(SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0), q, k, l)
    tangent = tap_tangent(SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0),
                          cell, q, k, l)
    if not (cell.inside and moves(tangent)):
        return
    e = tangent_factors(cell, tangent)
    g = grad_columns[q, c, k, l]
    for t in range(4):
        r, s, _, _, _ = corner(t, cell)
        if 0 <= r < H and 0 <= s < W:
            cuda.atomic.add(grad_image, (q, c, r, s), e[t] * g)


@cuda.jit
def second_image_grad_gather(grad_columns, offset, mask, use_mask, offset_dot, mask_dot, mode,
                             geometry, cell_start, cell_count, order, grad_image):
    """Thread (q, c, r, s) adds, in a fixed order, e_t * grad_columns of every sample that
    read pixel (r, s) as its corner t (deterministic.gather_image_grad's walk)."""
    Q, Cq, H, W = grad_image.shape
    L = offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * Cq * H * W:
        return
    q, c, r, s = unravel(idx, Cq, H, W)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0)
    total = 0.0
    for t in range(4):
        cell_y = r - t // 2              # the cell whose corner t is (r, s)
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
            total += tangent_factors(cell, tap_tangent(tangents, cell, q, k, l))[t] * \
                grad_columns[q, c, k, l]
    grad_image[q, c, r, s] += total


@cuda.jit
def second_coord_grad(grad_columns, image, image_dot, use_image_dot, offset, mask, use_mask,
                      offset_dot, mask_dot, mode, geometry, grad_offset, grad_mask):
    """Thread (q, k, l) adds ``sampling.tap_second_coord_grad`` to its own tap's offset and
    mask entries."""
    Q, _, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    idx = cuda.grid(1)
    if idx >= Q * K * L:
        return
    _, q, k, l = unravel(idx, Q, K, L)
    points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0)
    add_tap_grads(grad_offset, grad_mask, use_mask, q, k, l,
                  tap_second_coord_grad(grad_columns, image, image_dot, use_image_dot, points,
                                        tangents, q, k, l))


def tangent_im2col(image, offset, mask, mode, geometry, image_dot, offset_dot, mask_dot,
                   columns_dot):
    """columns_dot (Q, Cq, K, L): the change of deform_im2col's columns along the tangents."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, empty)
    mask_dot, _ = or_stand_in(mask_dot, (1, 1, 1), image, empty)
    image_dot, use_image_dot = or_stand_in(image_dot, (1, 1, 1, 1), image, empty)
    launch(tangent_im2col_kernel, columns_dot.size, image, image_dot, use_image_dot, offset, mask,
           use_mask, offset_dot, mask_dot, mode, geometry, columns_dot)


def sample_backward_backward(grad_columns, image, offset, mask, mode, geometry, image_dot,
                             offset_dot, mask_dot, grad_image, grad_offset, grad_mask,
                             deterministic=False):
    """grad_image, grad_offset and, when there is a mask, grad_mask += the gradients of
    ``<grad_columns, columns_dot>``."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, empty)
    mask_dot, _ = or_stand_in(mask_dot, (1, 1, 1), image, empty)
    grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1), image, empty)
    image_dot, use_image_dot = or_stand_in(image_dot, (1, 1, 1, 1), image, empty)
    if deterministic:
        H, W = image.shape[2], image.shape[3]
        cell_start, cell_count, order = buckets(offset, mask, use_mask, mode, geometry, H, W, 0.0)
        launch(second_image_grad_gather, grad_image.size, grad_columns, offset, mask, use_mask,
               offset_dot, mask_dot, mode, geometry, cell_start, cell_count, order, grad_image)
    else:
        launch(second_image_grad_atomic, grad_columns.size, grad_columns, offset, mask, use_mask,
               offset_dot, mask_dot, mode, geometry, grad_image)
    launch(second_coord_grad, offset.shape[0] * offset.shape[1] * offset.shape[3], grad_columns,
           image, image_dot, use_image_dot, offset, mask, use_mask, offset_dot, mask_dot, mode,
           geometry, grad_offset, grad_mask)


# -- DCNv3 / DCNv4, channels last (layouts in dcnv3_kernels.py) ------------------------------

@cuda.jit
def dcnv3_tangent_forward(input, input_dot, use_input_dot, offset, mask, offset_dot, mask_dot,
                          geometry, out_dot):
    """Thread (n, ho, wo, c) writes out_dot[n, ho, wo, c], summing its group's points."""
    H, W, C = input.shape[1], input.shape[2], input.shape[3]
    idx = cuda.grid(1)
    if idx >= out_dot.size:
        return
    n, ho, wo, c = unravel(idx, geometry.out_h, geometry.out_w, C)
    g = c // geometry.group_channels
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0)
    total = 0.0
    for p in range(geometry.points):
        i, j = point_position(p, geometry)
        cell = point_cell(points, n, ho, wo, g, p, i, j)
        if not cell.inside:
            continue
        e = tangent_factors(cell, point_tangent(tangents, cell, n, ho, wo, g, p))
        for t in range(4):
            r, s, w, _, _ = corner(t, cell)
            if 0 <= r < H and 0 <= s < W:
                total += e[t] * input[n, r, s, c]
                if use_input_dot:
                    total += cell.m * w * input_dot[n, r, s, c]
    out_dot[n, ho, wo, c] = total


@cuda.jit
def dcnv3_second_point_grads(grad_out, input, input_dot, use_input_dot, offset, mask,
                             offset_dot, mask_dot, geometry, grad_offset, grad_mask):
    """Thread (n, ho, wo, g*P + p) adds ``tap_second_grads`` of point p of group g, its
    corner sums over the group's channels, to the point's own entries."""
    H, W = input.shape[1], input.shape[2]
    G, P, Cg = geometry.group, geometry.points, geometry.group_channels
    idx = cuda.grid(1)
    if idx >= grad_out.shape[0] * geometry.out_h * geometry.out_w * G * P:
        return
    n, ho, wo, gp = unravel(idx, geometry.out_h, geometry.out_w, G * P)
    g = gp // P
    p = gp - g * P
    i, j = point_position(p, geometry)
    cell = point_cell(SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0), n, ho, wo, g, p,
                      i, j)
    tangent = point_tangent(SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0), cell,
                            n, ho, wo, g, p)
    sums = tangent_sums = (0.0, 0.0, 0.0, 0.0)
    if cell.inside and moves(tangent):
        sums = point_corner_sums(grad_out, input, n, ho, wo, g * Cg, (g + 1) * Cg, cell)
    if cell.inside and use_input_dot:
        tangent_sums = point_corner_sums(grad_out, input_dot, n, ho, wo, g * Cg, (g + 1) * Cg,
                                         cell)
    add_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry,
                    tap_second_grads(cell, tangent, sums, tangent_sums))


@cuda.jit
def dcnv3_second_input_grad_atomic(grad_out, offset, mask, offset_dot, mask_dot, geometry,
                                   grad_input):
    """Thread (n, ho, wo, c) adds e_t * grad_out to the four corners of each of its points,
    with atomics."""
    H, W, C = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= grad_out.size:
        return
    n, ho, wo, c = unravel(idx, geometry.out_h, geometry.out_w, C)
    g = c // geometry.group_channels
    go = grad_out[n, ho, wo, c]
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0)
    for p in range(geometry.points):
        i, j = point_position(p, geometry)
        cell = point_cell(points, n, ho, wo, g, p, i, j)
        tangent = point_tangent(tangents, cell, n, ho, wo, g, p)
        if not (cell.inside and moves(tangent)):
            continue
        e = tangent_factors(cell, tangent)
        for t in range(4):
            r, s, _, _, _ = corner(t, cell)
            if 0 <= r < H and 0 <= s < W:
                cuda.atomic.add(grad_input, (n, r, s, c), e[t] * go)


@cuda.jit
def dcnv3_second_input_grad_gather(grad_out, offset, mask, offset_dot, mask_dot, geometry,
                                   cell_start, cell_count, order, grad_input):
    """Thread (n, r, s, c) adds up, in a fixed order, e_t * grad_out of every point that read
    pixel (r, s) as its corner t."""
    N, H, W, C = grad_input.shape
    G, P = geometry.group, geometry.points
    idx = cuda.grid(1)
    if idx >= grad_input.size:
        return
    n, r, s, c = unravel(idx, H, W, C)
    g = c // geometry.group_channels
    q = n * G + g
    points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
    tangents = SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0)
    total = 0.0
    for t in range(4):
        cell_y = r - t // 2              # the cell whose corner t is (r, s)
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
            tangent = point_tangent(tangents, cell, n, ho, wo, g, sample % P)
            total += tangent_factors(cell, tangent)[t] * grad_out[n, ho, wo, c]
    grad_input[n, r, s, c] += total


def dcnv3_jvp(input, offset, mask, geometry, input_dot, offset_dot, mask_dot):
    """out_dot (N, H_out, W_out, C) on the device: the change of dcnv3's output."""
    out_dot = cuda.device_array((input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]),
                                input.dtype)
    input_dot, use_input_dot = or_stand_in(input_dot, (1, 1, 1, 1), input, empty)
    launch(dcnv3_tangent_forward, out_dot.size, input, input_dot, use_input_dot, offset, mask,
           offset_dot, mask_dot, geometry, out_dot)
    return out_dot


def dcnv3_backward_backward(grad_out, input, offset, mask, geometry, input_dot, offset_dot,
                            mask_dot, grad_input, grad_offset, grad_mask, deterministic=False):
    """grad_input, grad_offset and grad_mask += the gradients of ``<grad_out, out_dot>``."""
    N, H, W, C = input.shape
    input_dot, use_input_dot = or_stand_in(input_dot, (1, 1, 1, 1), input, empty)
    n_points = N * geometry.out_h * geometry.out_w * geometry.group * geometry.points
    launch(dcnv3_second_point_grads, n_points, grad_out, input, input_dot, use_input_dot, offset,
           mask, offset_dot, mask_dot, geometry, grad_offset, grad_mask)
    if not deterministic:
        launch(dcnv3_second_input_grad_atomic, grad_out.size, grad_out, offset, mask, offset_dot,
               mask_dot, geometry, grad_input)
        return
    cell_start, cell_count, order = point_buckets(offset, mask, geometry, N, H, W, 0.0)
    launch(dcnv3_second_input_grad_gather, grad_input.size, grad_out, offset, mask, offset_dot,
           mask_dot, geometry, cell_start, cell_count, order, grad_input)
