"""Channels-last columns for conv2d and deform_conv2d on the CPU.

A convolution multiplies a weight by a matrix of columns: one row per output pixel, one
entry per (tap, input channel). Here the rows are output pixels and, inside a row, the
channels of one tap are neighbours in memory:

    x_cl      (n, H*W + 1, C)                the input, channels last; row H*W is all zeros
    columns   (groups, n, L, K, C/groups)    columns[g, n, l, k, c] = the tap k of output
                                             pixel l, channel g*C/groups + c
    offset    (n*G, K, 2, L), mask (n*G, K, L)   the engine layout of dcn_ref/sampling.py

so that each conv group's columns are one contiguous (n*L, K*C/groups) matrix for the
GEMM, and all the channels of an offset group, which share one sample point, are read
and written as contiguous vectors: a sample costs four vector loads (its four corners)
and one vector store, whatever the number of channels. A corner outside the image points
at the zero row, so it adds exactly nothing and needs no branch.

The per-sample maths is ``dcn_ref.sampling`` (``tap_cell``, ``corner``, ``tap_grads``).

The channel loops run over views that start at index 0 (``row = out[lo:hi]``, then
``row[i]`` for i in range(hi - lo)), never over ``out[i - base]`` with i from a runtime
start: Numba checks every index for a negative value to wrap around, and it can drop that
check only when the index provably starts at 0; with the check in the loop LLVM does not
vectorise it, and the loop runs about half as fast. The arithmetic is the same either way.
"""
from typing import NamedTuple

from numba import prange
from numba.extending import register_jitable

from ..sampling import (Cell, SamplePoints, TapGrads, corner, grid_point, tap_cell, tap_grads,
                        write_tap_grads)
from .compile import kernel


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


@register_jitable
def tap_corner_rows(points, q, k, l):
    """The ``CornerRows`` of tap k of output pixel l in plane q (``SamplePoints``); the
    cell's m is the tap's mask value (``tap_cell``: a NaN mask makes the tap touch no
    pixel, and m is 0 then)."""
    cell = tap_cell(points, q, k, l)
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


@register_jitable
def corner_views(image_cl, n, rows):
    """The four corner rows (a tuple of row numbers) of image n of a channels-last array."""
    return image_cl[n, rows[0]], image_cl[n, rows[1]], image_cl[n, rows[2]], image_cl[n, rows[3]]


@register_jitable
def masked_factors(cell, weights, cast):
    """m * w_t for the four corners, in the data's dtype (float32 stays SIMD-wide)."""
    m = cell.m
    return cast(m * weights[0]), cast(m * weights[1]), cast(m * weights[2]), cast(m * weights[3])


# -- deformable convolution ---------------------------------------------------------------
# offset (n*G, K, 2, L) and mask (n*G, K, L) in the engine's layout; each task reads them as
# ``SamplePoints`` (built inside the parallel loop: Numba's parallel loops take arrays and
# scalars, not tuples holding arrays).

@kernel
def deform_im2col(x_cl, height, width, offset, mask, use_mask, mode, geometry, columns):
    """Fill columns (groups, n, L, K, C/groups) with the masked bilinear samples."""
    groups, n_img, L, K, c_per_group = columns.shape
    C = x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    cast = x_cl.dtype.type                      # weights in the data's dtype: float32 stays SIMD-wide
    for nl in prange(n_img * L):  # each iteration writes only the rows columns[:, n, l]
        n = nl // L
        l = nl % L
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        for g in range(G):
            q = n * G + g
            for k in range(K):
                cell, r, w = tap_corner_rows(points, q, k, l)
                f0, f1, f2, f3 = masked_factors(cell, w, cast)
                a, b, c_, d = corner_views(x_cl, n, r)
                c = g * Cq
                while c < (g + 1) * Cq:              # the offset group's channels, by conv group
                    cg, stop = channel_segment(c, (g + 1) * Cq, c_per_group)
                    lo = c - cg * c_per_group            # views from 0: see the module's note
                    out = columns[cg, n, l, k, lo:lo + stop - c]
                    va, vb, vc, vd = a[c:stop], b[c:stop], c_[c:stop], d[c:stop]
                    for i in range(stop - c):
                        out[i] = f0 * va[i] + f1 * vb[i] + f2 * vc[i] + f3 * vd[i]
                    c = stop


@register_jitable(inline="always")
def scatter_channels(grad_columns, n, l, k, c_start, c_stop, c_per_group, ga, gb, gc, gd,
                     f0, f1, f2, f3):
    """The image gradient of one tap over channels c_start..c_stop of its offset group:
    corner row t of grad_x_cl (ga .. gd) += f_t * grad_columns, walked in runs of one conv
    group (``channel_segment``)."""
    c = c_start
    while c < c_stop:
        cg, stop = channel_segment(c, c_stop, c_per_group)
        lo = c - cg * c_per_group                # views from 0: see the module's note
        src = grad_columns[cg, n, l, k, lo:lo + stop - c]
        ua, ub, uc, ud = ga[c:stop], gb[c:stop], gc[c:stop], gd[c:stop]
        for i in range(stop - c):
            v = src[i]
            ua[i] += f0 * v
            ub[i] += f1 * v
            uc[i] += f2 * v
            ud[i] += f3 * v
        c = stop


@register_jitable(inline="always")
def corner_sums(grad_columns, n, l, k, c_start, c_stop, c_per_group, a, b, c_, d):
    """The corner sums D_t of one tap (``sampling.tap_grads``) over channels c_start..c_stop:
    sum_c grad_columns * corner row t of x_cl (a .. d), in channel order (its sums cannot
    vectorise without reordering them, which gradient-checked code does not do)."""
    d0 = d1 = d2 = d3 = a.dtype.type(0.0)
    c = c_start
    while c < c_stop:
        cg, stop = channel_segment(c, c_stop, c_per_group)
        lo = c - cg * c_per_group                # views from 0: see the module's note
        src = grad_columns[cg, n, l, k, lo:lo + stop - c]
        va, vb, vc, vd = a[c:stop], b[c:stop], c_[c:stop], d[c:stop]
        for i in range(stop - c):
            v = src[i]
            d0 += v * va[i]
            d1 += v * vb[i]
            d2 += v * vc[i]
            d3 += v * vd[i]
        c = stop
    return d0, d1, d2, d3


# The three kernels of the backward. Split: deform_col2im (the image gradient, parallel
# over channel chunks) and deform_coord_grad (offsets and masks, parallel over pixels);
# fused: deform_backward, both in one pass, parallel over (image, offset group) only, so
# the ops pick it when there are enough of those to keep every thread busy. All three walk
# a tap's channels with ``tap_channels``.

@kernel
def deform_col2im(grad_columns, height, width, offset, mask, use_mask, mode, geometry, chunk,
                  grad_x_cl):
    """grad_x_cl (n, H*W + 1, C) += the adjoint of deform_im2col (row H*W collects junk).

    Work is split by image and by ``chunk`` channels of an offset group: different
    iterations write different channels (or images), so they never collide.
    """
    groups, n_img, L, K, c_per_group = grad_columns.shape
    C = grad_x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    per_group = (Cq + chunk - 1) // chunk
    for task in prange(n_img * G * per_group):  # (image, offset group, channel chunk)
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        n = task // (G * per_group)
        g = (task // per_group) % G
        c_start = g * Cq + (task % per_group) * chunk
        c_stop = min(c_start + chunk, (g + 1) * Cq)
        q = n * G + g
        for k in range(K):
            for l in range(L):
                cell, r, w = tap_corner_rows(points, q, k, l)
                if not cell.inside:
                    continue
                ga, gb, gc, gd = corner_views(grad_x_cl, n, r)
                f0, f1, f2, f3 = masked_factors(cell, w, grad_x_cl.dtype.type)
                scatter_channels(grad_columns, n, l, k, c_start, c_stop, c_per_group, ga, gb, gc,
                                 gd, f0, f1, f2, f3)


@kernel
def deform_coord_grad(grad_columns, x_cl, height, width, offset, mask, use_mask, mode, geometry,
                      grad_offset, grad_mask):
    """Write grad_offset (n*G, K, 2, L) and, with use_mask, grad_mask (n*G, K, L): for a
    sample, the corner sums D_t over the group's channels (four dot products of contiguous
    vectors), then ``sampling.tap_grads``."""
    groups, n_img, L, K, c_per_group = grad_columns.shape
    C = x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    for nl in prange(n_img * L):  # each iteration writes only the entries of output pixel l
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        n = nl // L
        l = nl % L
        for g in range(G):
            q = n * G + g
            for k in range(K):
                cell, r, w = tap_corner_rows(points, q, k, l)
                grads = TapGrads(0.0, 0.0, 0.0)
                if cell.inside:
                    a, b, c_, d = corner_views(x_cl, n, r)
                    d0, d1, d2, d3 = corner_sums(grad_columns, n, l, k, g * Cq, (g + 1) * Cq,
                                                 c_per_group, a, b, c_, d)
                    grads = tap_grads(cell, d0, d1, d2, d3)
                write_tap_grads(grad_offset, grad_mask, use_mask, q, k, l, grads)


@kernel
def deform_backward(grad_columns, x_cl, height, width, offset, mask, use_mask, mode, geometry,
                    grad_x_cl, grad_offset, grad_mask):
    """deform_col2im and deform_coord_grad in one pass, one task per (image, offset group):
    each sample's four corner rows are read once for both. A task writes only its image's
    rows, in its group's channels, and its own offsets, so tasks never collide."""
    groups, n_img, L, K, c_per_group = grad_columns.shape
    C = x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    for q in prange(n_img * G):  # task (image n, offset group g)
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        n = q // G
        g = q % G
        for k in range(K):
            for l in range(L):
                cell, r, w = tap_corner_rows(points, q, k, l)
                grads = TapGrads(0.0, 0.0, 0.0)
                if cell.inside:
                    c0, c1 = g * Cq, (g + 1) * Cq
                    ga, gb, gc, gd = corner_views(grad_x_cl, n, r)
                    f0, f1, f2, f3 = masked_factors(cell, w, x_cl.dtype.type)
                    scatter_channels(grad_columns, n, l, k, c0, c1, c_per_group, ga, gb, gc, gd,
                                     f0, f1, f2, f3)
                    a, b, c_, d = corner_views(x_cl, n, r)
                    d0, d1, d2, d3 = corner_sums(grad_columns, n, l, k, c0, c1, c_per_group, a,
                                                 b, c_, d)
                    grads = tap_grads(cell, d0, d1, d2, d3)
                write_tap_grads(grad_offset, grad_mask, use_mask, q, k, l, grads)


# -- plain convolution ----------------------------------------------------------------------

@register_jitable
def tap_row(k, l, geometry, height, width):
    """The row of x_cl that tap k of output pixel l copies (the zero row in the padding)."""
    y, x = grid_point(k, l, geometry)
    return y * width + x if 0 <= y < height and 0 <= x < width else height * width


@kernel
def im2col(x_cl, height, width, geometry, columns):
    """Fill columns (groups, n, L, K, C/groups) with the zero-padded patches."""
    groups, n_img, L, K, c_per_group = columns.shape
    for nl in prange(n_img * L):  # each iteration writes only the rows columns[:, n, l]
        n = nl // L
        l = nl % L
        for k in range(K):
            src = x_cl[n, tap_row(k, l, geometry, height, width)]
            for g in range(groups):
                out = columns[g, n, l, k]
                part = src[g * c_per_group:(g + 1) * c_per_group]  # from 0: the module's note
                for i in range(c_per_group):
                    out[i] = part[i]


@kernel
def col2im(grad_columns, height, width, geometry, grad_x_cl):
    """grad_x_cl (n, H*W + 1, C) += the adjoint of im2col, as a gather: every input pixel
    sums the column entries copied from it, so each iteration writes only its own row.

    Tap (i, j) of output pixel (oy, ox) copied pixel (y, x) when y = oy*stride_h - pad_h +
    i*dilation_h, i.e. when y + pad_h - i*dilation_h is a multiple of stride_h in range.
    """
    groups, n_img, L, K, c_per_group = grad_columns.shape
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
                    src = grad_columns[g, n, l, i * kw + j]
                    part = dst[g * c_per_group:(g + 1) * c_per_group]  # from 0: the module's note
                    for c in range(c_per_group):
                        part[c] += src[c]


# -- layouts --------------------------------------------------------------------------------

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
