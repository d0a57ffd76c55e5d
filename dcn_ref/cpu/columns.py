"""Channels-last columns for conv2d and deform_conv2d on the CPU, one row at a time.

A convolution multiplies a weight by a matrix of columns: one row per output pixel, one
entry per (tap, input channel). Here the rows are output pixels and, inside a row, the
channels of one tap are neighbours in memory:

    x_cl      (N, H*W + 1, C)                the input, channels last; row H*W is all zeros
    columns   (groups, rows, K, C/groups)    columns[g, i, k, c] = tap k of the output pixel
                                             of row i, channel g*C/groups + c
    offset    (N*G, K, 2, L), mask (N*G, K, L)   the engine layout of dcn_ref/sampling.py

so that each conv group's columns are one contiguous (rows, K*C/groups) matrix for the
GEMM, and all the channels of an offset group, which share one sample point, are read
and written as contiguous vectors: a sample costs four vector loads (its four corners)
and one vector store, whatever the number of channels. A corner outside the image points
at the zero row, so it adds exactly nothing and needs no branch.

The convolutions (``conv.py``) fill and use the rows of one block of output pixels at a
time (``deform_rows``, ``im2col_rows``) and hand the rows' gradient back to the image, the
offsets and the mask (``deform_rows_backward``, ``col2im_rows``): one call a block, since a
call that hands over arrays and NamedTuples costs about as much as a row's work. The kernels at the end
fill or use a whole batch's columns, rows = N*L: for ``dcn_ref.ops.im2col`` and
``col2im``, and the benchmarks.

The per-sample maths is ``dcn_ref.sampling`` (``tap_cell``, ``corner``, ``tap_grads``). The
forward finds the corners of a block's samples first, a tap at a time over its pixels, with
``zeros_corner_rows``, the same numbers as ``tap_cell`` and ``corner`` written without a
branch: that loop runs in vector registers (four samples an instruction), where a sample
located alone cost about as much as blending 64 of its channels.

The channel loops index the arrays in place with **unsigned** integers (``_u``): Numba
checks every signed index for a negative value to wrap around, and with that check in a
loop LLVM does not vectorise it; an unsigned index it uses as it is. (Views of a row,
``out[lo:hi]``, avoid the check too, but every view is a reference-counted object, and a
few of them a tap cost more than the tap's arithmetic.) The backward of a sample goes eight
channels at a time through ``lanes.lanes_cell_backward``, whose sums are taken lane by lane
in a fixed order (deterministic, without fastmath), the channels beyond a multiple of eight
one by one.
"""
import types
from typing import NamedTuple

import numpy as np
from numba import prange
from numba.extending import register_jitable

from ..sampling import (Cell, SamplePoints, TapGrads, as_real, corner, grid_point, tap_cell,
                        tap_grads, write_tap_grads, zeros_corner_rows)
from .compile import kernel
from .lanes import LANES, lanes_cell_backward


class CornerRows(NamedTuple):
    """A tap located for the channels-last columns: its ``Cell`` and its four corners as
    rows of x_cl and their weights, corner by corner (tuples of four)."""
    cell: Cell
    rows: tuple
    weights: tuple


@register_jitable
def corner_row(t, cell, height, width):
    """Corner t of a located cell as (row of x_cl, corner weight); the zero row (weight 0)
    when the sample touches no pixel, the zero row with the true weight when only this
    corner is outside."""
    if not cell.inside:
        return height * width, 0.0
    r, s, w, _, _ = corner(t, cell)
    row = r * width + s if 0 <= r < height and 0 <= s < width else height * width
    return row, w


def _inline_copy(fn):
    """The same code as ``fn`` (a ``register_jitable`` function of ``dcn_ref.sampling``),
    compiled into each caller here instead of called."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_inline",
                              fn.__defaults__, fn.__closure__)
    copy.__doc__ = fn.__doc__
    return register_jitable(inline="always")(copy)


# sampling's per-tap functions that take arrays, inlined into the CPU kernels: called, they
# are handed arrays and NamedTuples at every tap, and that call cost more than the tap's
# arithmetic (the deformable im2col ran twice as long). The CUDA kernels call the originals.
tap_cell_inline = _inline_copy(tap_cell)
write_tap_grads_inline = _inline_copy(write_tap_grads)


@register_jitable(inline="always")
def tap_corner_rows(points, q, k, l):
    """The ``CornerRows`` of tap k of output pixel l in plane q (``SamplePoints``); the
    cell's m is the tap's mask value (``tap_cell``: a NaN mask makes the tap touch no
    pixel, and m is 0 then)."""
    cell = tap_cell_inline(points, q, k, l)
    height, width = points.height, points.width
    r0, w0 = corner_row(0, cell, height, width)
    r1, w1 = corner_row(1, cell, height, width)
    r2, w2 = corner_row(2, cell, height, width)
    r3, w3 = corner_row(3, cell, height, width)
    return CornerRows(cell, (r0, r1, r2, r3), (w0, w1, w2, w3))


@register_jitable
def channel_segment(c, stop, c_per_group):
    """The conv group of channel c and the end of its run of channels below ``stop`` that
    share that group (so the run is contiguous in the columns)."""
    g = c // c_per_group
    return g, min(stop, (g + 1) * c_per_group)


@register_jitable(inline="always")
def _u(i):
    """i as an unsigned index (the module's note)."""
    return np.uint64(i)


@register_jitable(inline="always")
def masked_factors(cell, weights, cast):
    """m * w_t for the four corners, in the data's dtype (float32 stays SIMD-wide)."""
    m = cell.m
    return cast(m * weights[0]), cast(m * weights[1]), cast(m * weights[2]), cast(m * weights[3])


# -- deformable convolution ---------------------------------------------------------------
# offset (N*G, K, 2, L) and mask (N*G, K, L) in the engine's layout, read as ``SamplePoints``.

@register_jitable
def plan_taps(points, q, k, l0, count, grid, tap_y, tap_x, rows, factors, cast):
    """rows[t, j] and factors[t, j] (``sampling.zeros_corner_rows``) of tap k of output
    pixels l0 + j, j < count, in plane q: tap k's grid point is grid[:, j] + (tap_y, tap_x).
    One loop over the pixels, which vectorises (called, not inlined: LLVM vectorises it as
    a function of its own, and not once inlined in the caller's loops)."""
    offset, mask, real = points.offset, points.mask, points.real
    height, width = points.height, points.width
    q, k = _u(q), _u(k)
    for j in range(count):
        p, u = _u(l0 + j), _u(j)                # signed arithmetic, unsigned indices
        y = as_real(grid[0, u] + tap_y, real) + as_real(offset[q, k, 0, p], real)
        x = as_real(grid[1, u] + tap_x, real) + as_real(offset[q, k, 1, p], real)
        m = as_real(mask[q, k, p], real) if points.use_mask else as_real(1.0, real)
        r, f = zeros_corner_rows(y, x, m, height, width)
        rows[0, u], rows[1, u], rows[2, u], rows[3, u] = r[0], r[1], r[2], r[3]
        factors[0, u], factors[1, u] = cast(f[0]), cast(f[1])
        factors[2, u], factors[3, u] = cast(f[2]), cast(f[3])


@register_jitable
def deform_rows(x_cl, n, l0, l1, points, columns, first):
    """Fill rows first .. first + l1 - l0 of columns (groups, rows, K, C/groups) with the
    masked bilinear samples of output pixels l0 .. l1 of image n (ZEROS mode).

    The corners of every sample are found first, a tap at a time over all the pixels
    (``plan_taps``, in vector registers), then each sample blends its four corner rows of
    x_cl channel by channel."""
    groups, _, K, c_per_group = columns.shape
    C = x_cl.shape[2]
    G = points.offset.shape[0] // x_cl.shape[0]
    Cq = C // G
    geometry = points.geometry
    kw = geometry.kernel_w
    cast = x_cl.dtype.type              # weights in the data's dtype: float32 stays SIMD-wide
    count = l1 - l0
    grid = np.empty((2, count), np.int64)               # the grid point of tap 0 of each pixel
    oy = l0 // geometry.out_w
    ox = l0 - oy * geometry.out_w
    for j in range(count):
        grid[0, j] = oy * geometry.stride_h - geometry.pad_h
        grid[1, j] = ox * geometry.stride_w - geometry.pad_w
        ox += 1
        if ox == geometry.out_w:
            oy, ox = oy + 1, 0
    rows = np.empty((K, 4, count), np.int64)
    factors = np.empty((K, 4, count), x_cl.dtype)
    for g in range(G):
        q = n * G + g
        for k in range(K):
            i = k // kw
            plan_taps(points, q, k, l0, count, grid, i * geometry.dilation_h,
                      (k - i * kw) * geometry.dilation_w, rows[k], factors[k], cast)
        for j in range(count):
            row = first + j
            for k in range(K):
                r, f = rows[k], factors[k]
                c = g * Cq
                while c < (g + 1) * Cq:          # the offset group's channels, by conv group
                    cg, stop = channel_segment(c, (g + 1) * Cq, c_per_group)
                    blend_channels(columns, cg, row, k, c - cg * c_per_group, x_cl, n,
                                   (r[0, j], r[1, j], r[2, j], r[3, j]), c, stop - c,
                                   f[0, j], f[1, j], f[2, j], f[3, j])
                    c = stop


@register_jitable(inline="always")
def blend_channels(columns, cg, i, k, lo, x_cl, n, rows, c, count, f0, f1, f2, f3):
    """columns[cg, i, k, lo + j] = sum over corners t of f_t * x_cl[n, rows[t], c + j], for
    j < count."""
    cg, i, k, lo, n, c = _u(cg), _u(i), _u(k), _u(lo), _u(n), _u(c)
    r0, r1, r2, r3 = _u(rows[0]), _u(rows[1]), _u(rows[2]), _u(rows[3])
    for j in range(_u(count)):
        columns[cg, i, k, lo + j] = (f0 * x_cl[n, r0, c + j] + f1 * x_cl[n, r1, c + j]
                                     + f2 * x_cl[n, r2, c + j] + f3 * x_cl[n, r3, c + j])


@register_jitable(inline="always")
def cell_backward_channels(gcols, o, gx, x, i0, i1, i2, i3, count, f0, f1, f2, f3):
    """The backward of one sample over ``count`` channels, on flat arrays: with g_j =
    gcols[o + j], corner t's image gradient gx[i_t + j] += f_t * g_j, and the corner sums
    D_t = sum_j g_j * x[i_t + j] returned, eight channels at a time, then one by one."""
    chunks = count // LANES
    d0, d1, d2, d3 = lanes_cell_backward(gx, x, i0, i1, i2, i3, gcols, o, f0, f1, f2, f3, chunks)
    done = chunks * LANES
    o, i0, i1, i2, i3 = _u(o + done), _u(i0 + done), _u(i1 + done), _u(i2 + done), _u(i3 + done)
    for j in range(_u(count - done)):
        v = gcols[o + j]
        gx[i0 + j] += f0 * v
        gx[i1 + j] += f1 * v
        gx[i2 + j] += f2 * v
        gx[i3 + j] += f3 * v
        d0 += v * x[i0 + j]
        d1 += v * x[i1 + j]
        d2 += v * x[i2 + j]
        d3 += v * x[i3 + j]
    return d0, d1, d2, d3


@register_jitable
def deform_rows_backward(grad_columns, x_cl, n, l0, l1, points, grad_image, grad_offset,
                         grad_mask, first):
    """The adjoint of ``deform_rows`` for rows first .. first + l1 - l0 of grad_columns
    (groups, rows, K, C/groups), output pixels l0 .. l1 of image n, in one pass that reads each sample's four
    corner rows once:

        grad_image (H*W + 1, C)    += each sample's gradient handed to the four pixels it
                                      read (row H*W collects junk)
        grad_offset (N*G, K, 2, L)  written for pixels l0 .. l1: ``sampling.tap_grads`` from
        grad_mask (N*G, K, L)       the corner sums over the offset group's channels
    """
    groups, rows, K, c_per_group = grad_columns.shape
    pixels, C = x_cl.shape[1], x_cl.shape[2]
    G = points.offset.shape[0] // x_cl.shape[0]
    Cq = C // G
    cast = x_cl.dtype.type
    gcols = grad_columns.reshape(grad_columns.size)       # flat, for the eight-lane operations
    x = x_cl[n].reshape(pixels * C)                        # image n and its gradient, flat:
    gx = grad_image.reshape(pixels * C)                    # pixel r's channels from r*C
    for l in range(l0, l1):
        i = first + l - l0
        for g in range(G):
            q = n * G + g
            for k in range(K):
                cell, r, w = tap_corner_rows(points, q, k, l)
                grads = TapGrads(0.0, 0.0, 0.0)
                if cell.inside:
                    f0, f1, f2, f3 = masked_factors(cell, w, cast)
                    d0 = d1 = d2 = d3 = x.dtype.type(0.0)
                    c = g * Cq
                    while c < (g + 1) * Cq:      # the offset group's channels, by conv group
                        cg, stop = channel_segment(c, (g + 1) * Cq, c_per_group)
                        o = ((cg * rows + i) * K + k) * c_per_group + c - cg * c_per_group
                        s0, s1, s2, s3 = cell_backward_channels(
                            gcols, o, gx, x, r[0] * C + c, r[1] * C + c, r[2] * C + c,
                            r[3] * C + c, stop - c, f0, f1, f2, f3)
                        d0, d1, d2, d3 = d0 + s0, d1 + s1, d2 + s2, d3 + s3
                        c = stop
                    grads = tap_grads(cell, d0, d1, d2, d3)
                write_tap_grads_inline(grad_offset, grad_mask, points.use_mask, q, k, l, grads)


# -- plain convolution ----------------------------------------------------------------------

@register_jitable(inline="always")
def tap_row(k, l, geometry, height, width):
    """The row of x_cl that tap k of output pixel l copies (the zero row in the padding)."""
    y, x = grid_point(k, l, geometry)
    return y * width + x if 0 <= y < height and 0 <= x < width else height * width


@register_jitable
def im2col_rows(x_cl, n, l0, l1, geometry, height, width, columns, first):
    """Fill rows first .. first + l1 - l0 of columns (groups, rows, K, C/groups) with the
    patches of output pixels l0 .. l1 of image n (zeros in the padding)."""
    groups, _, K, c_per_group = columns.shape
    image = x_cl[n]
    for l in range(l0, l1):
        i = first + l - l0
        for k in range(K):
            src = image[tap_row(k, l, geometry, height, width)]
            for g in range(groups):
                out = columns[g, i, k]
                part = src[g * c_per_group:(g + 1) * c_per_group]  # views from 0: no wrap-around
                for j in range(c_per_group):
                    out[j] = part[j]


@register_jitable
def col2im_rows(grad_columns, l0, l1, geometry, height, width, grad_image, first):
    """The adjoint of ``im2col_rows`` for rows first .. first + l1 - l0 of grad_columns,
    output pixels l0 .. l1: grad_image (H*W + 1, C) += each tap's channels at the pixel it copied (row H*W
    collects the padding's)."""
    groups, _, K, c_per_group = grad_columns.shape
    for l in range(l0, l1):
        i = first + l - l0
        for k in range(K):
            dst = grad_image[tap_row(k, l, geometry, height, width)]
            for g in range(groups):
                src = grad_columns[g, i, k]
                part = dst[g * c_per_group:(g + 1) * c_per_group]  # views from 0: no wrap-around
                for j in range(c_per_group):
                    part[j] += src[j]


# -- whole-batch kernels: rows = N*L, row n*L + l for output pixel l of image n ----------------
# Each task fills a run of ROWS_PER_TASK rows of one image (a call per run, not per row).

ROWS_PER_TASK = 64


@kernel
def deform_im2col(x_cl, height, width, offset, mask, use_mask, mode, geometry, columns):
    """Fill columns (groups, N*L, K, C/groups) with the masked bilinear samples (mode must
    be ZEROS, a convolution's padding)."""
    n_img = x_cl.shape[0]
    L = geometry.out_h * geometry.out_w
    runs = (L + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_img * runs):  # each task writes only its own rows
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        n = task // runs
        l0 = task % runs * ROWS_PER_TASK
        l1 = min(L, l0 + ROWS_PER_TASK)
        deform_rows(x_cl, n, l0, l1, points, columns, n * L + l0)


@kernel
def im2col(x_cl, height, width, geometry, columns):
    """Fill columns (groups, N*L, K, C/groups) with the zero-padded patches."""
    n_img = x_cl.shape[0]
    L = geometry.out_h * geometry.out_w
    runs = (L + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_img * runs):  # each task writes only its own rows
        n = task // runs
        l0 = task % runs * ROWS_PER_TASK
        l1 = min(L, l0 + ROWS_PER_TASK)
        im2col_rows(x_cl, n, l0, l1, geometry, height, width, columns, n * L + l0)


@kernel
def col2im(grad_columns, height, width, geometry, grad_x_cl):
    """grad_x_cl (N, H*W + 1, C) += the adjoint of im2col for columns (groups, N*L, K,
    C/groups), as a gather: every input pixel sums the column entries copied from it, so
    each iteration writes only its own row.

    Tap (i, j) of output pixel (oy, ox) copied pixel (y, x) when y = oy*stride_h - pad_h +
    i*dilation_h, i.e. when y + pad_h - i*dilation_h is a multiple of stride_h in range.
    """
    groups, rows, K, c_per_group = grad_columns.shape
    n_img = grad_x_cl.shape[0]
    L = geometry.out_h * geometry.out_w
    kh, kw, out_h, out_w = geometry.kernel_h, geometry.kernel_w, geometry.out_h, geometry.out_w
    stride_h, stride_w = geometry.stride_h, geometry.stride_w
    pad_h, pad_w = geometry.pad_h, geometry.pad_w
    dilation_h, dilation_w = geometry.dilation_h, geometry.dilation_w
    for task in prange(n_img * height * width):  # each iteration writes only row (n, pixel)
        n = task // (height * width)
        pixel = task % (height * width)
        y = pixel // width
        x = pixel % width
        dst = grad_x_cl[n, pixel]
        for i in range(kh):
            ty = y + pad_h - i * dilation_h
            if ty < 0 or ty % stride_h != 0 or ty // stride_h >= out_h:
                continue
            for j in range(kw):
                tx = x + pad_w - j * dilation_w
                if tx < 0 or tx % stride_w != 0 or tx // stride_w >= out_w:
                    continue
                l = (ty // stride_h) * out_w + tx // stride_w
                for g in range(groups):
                    src = grad_columns[g, n * L + l, i * kw + j]
                    part = dst[g * c_per_group:(g + 1) * c_per_group]  # from 0: the module's note
                    for c in range(c_per_group):
                        part[c] += src[c]


# -- layouts --------------------------------------------------------------------------------

@register_jitable
def put_transposed(src, dst):
    """dst (A, B) = src (B, A).T, in 32 x 32 tiles so that reads and writes both stay in
    cache (either may be a view whose rows are contiguous)."""
    A, B = dst.shape
    for a0 in range(0, A, 32):
        for b0 in range(0, B, 32):
            for a in range(a0, min(a0 + 32, A)):
                row = dst[a]
                for b in range(b0, min(b0 + 32, B)):
                    row[b] = src[b, a]


@kernel
def transpose_last_two(src, dst):
    """dst[n, b, a] = src[n, a, b] for src (n, A, B) and dst (n, B, A) (either may be a view),
    in 32 x 32 blocks so that reads and writes both stay in cache."""
    n_img, A, B = src.shape
    blocks_a = (A + 31) // 32
    blocks_b = (B + 31) // 32
    for task in prange(n_img * blocks_a * blocks_b):  # each iteration writes its own block
        n = task // (blocks_a * blocks_b)
        a0 = (task // blocks_b) % blocks_a * 32
        b0 = task % blocks_b * 32
        for a in range(a0, min(a0 + 32, A)):
            for b in range(b0, min(b0 + 32, B)):
                dst[n, b, a] = src[n, a, b]
