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
time (``deform_row``, ``im2col_row``) and hand each row's gradient back to the image, the
offsets and the mask (``deform_row_backward``, ``col2im_row``). The kernels at the end
fill or use a whole batch's columns, rows = N*L: for ``dcn_ref.ops.im2col`` and
``col2im``, and the benchmarks.

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
def corner_views(image, rows):
    """The four corner rows (a tuple of row numbers) of one channels-last image (H*W + 1, C)."""
    return image[rows[0]], image[rows[1]], image[rows[2]], image[rows[3]]


@register_jitable
def masked_factors(cell, weights, cast):
    """m * w_t for the four corners, in the data's dtype (float32 stays SIMD-wide)."""
    m = cell.m
    return cast(m * weights[0]), cast(m * weights[1]), cast(m * weights[2]), cast(m * weights[3])


# -- deformable convolution ---------------------------------------------------------------
# offset (N*G, K, 2, L) and mask (N*G, K, L) in the engine's layout, read as ``SamplePoints``.

@register_jitable
def deform_row(x_cl, n, l, points, columns, i):
    """Fill row i of columns (groups, rows, K, C/groups) with the masked bilinear samples of
    output pixel l of image n."""
    groups, _, K, c_per_group = columns.shape
    C = x_cl.shape[2]
    G = points.offset.shape[0] // x_cl.shape[0]
    Cq = C // G
    cast = x_cl.dtype.type              # weights in the data's dtype: float32 stays SIMD-wide
    image = x_cl[n]
    for g in range(G):
        q = n * G + g
        for k in range(K):
            cell, r, w = tap_corner_rows(points, q, k, l)
            f0, f1, f2, f3 = masked_factors(cell, w, cast)
            a, b, c_, d = corner_views(image, r)
            c = g * Cq
            while c < (g + 1) * Cq:              # the offset group's channels, by conv group
                cg, stop = channel_segment(c, (g + 1) * Cq, c_per_group)
                lo = c - cg * c_per_group            # views from 0: see the module's note
                out = columns[cg, i, k, lo:lo + stop - c]
                va, vb, vc, vd = a[c:stop], b[c:stop], c_[c:stop], d[c:stop]
                for j in range(stop - c):
                    out[j] = f0 * va[j] + f1 * vb[j] + f2 * vc[j] + f3 * vd[j]
                c = stop


@register_jitable(inline="always")
def scatter_channels(grad_columns, i, k, c_start, c_stop, c_per_group, ga, gb, gc, gd,
                     f0, f1, f2, f3):
    """The image gradient of one tap over channels c_start..c_stop of its offset group:
    corner row t of the image gradient (ga .. gd) += f_t * grad_columns[:, i, k], walked in
    runs of one conv group (``channel_segment``)."""
    c = c_start
    while c < c_stop:
        cg, stop = channel_segment(c, c_stop, c_per_group)
        lo = c - cg * c_per_group                # views from 0: see the module's note
        src = grad_columns[cg, i, k, lo:lo + stop - c]
        ua, ub, uc, ud = ga[c:stop], gb[c:stop], gc[c:stop], gd[c:stop]
        for j in range(stop - c):
            v = src[j]
            ua[j] += f0 * v
            ub[j] += f1 * v
            uc[j] += f2 * v
            ud[j] += f3 * v
        c = stop


@register_jitable(inline="always")
def corner_sums(grad_columns, i, k, c_start, c_stop, c_per_group, a, b, c_, d):
    """The corner sums D_t of one tap (``sampling.tap_grads``) over channels c_start..c_stop:
    sum_c grad_columns[:, i, k] * corner row t of the image (a .. d), in channel order (its
    sums cannot vectorise without reordering them, which gradient-checked code does not do)."""
    d0 = d1 = d2 = d3 = a.dtype.type(0.0)
    c = c_start
    while c < c_stop:
        cg, stop = channel_segment(c, c_stop, c_per_group)
        lo = c - cg * c_per_group                # views from 0: see the module's note
        src = grad_columns[cg, i, k, lo:lo + stop - c]
        va, vb, vc, vd = a[c:stop], b[c:stop], c_[c:stop], d[c:stop]
        for j in range(stop - c):
            v = src[j]
            d0 += v * va[j]
            d1 += v * vb[j]
            d2 += v * vc[j]
            d3 += v * vd[j]
        c = stop
    return d0, d1, d2, d3


@register_jitable
def deform_row_backward(grad_columns, i, x_cl, n, l, points, grad_image, grad_offset,
                        grad_mask):
    """The adjoint of ``deform_row`` for row i of grad_columns (groups, rows, K, C/groups),
    output pixel l of image n, in one pass that reads each sample's four corner rows once:

        grad_image (H*W + 1, C)    += each sample's gradient handed to the four pixels it
                                      read (row H*W collects junk)
        grad_offset (N*G, K, 2, L)  written for pixel l: ``sampling.tap_grads`` from the
        grad_mask (N*G, K, L)       corner sums over the offset group's channels
    """
    groups, _, K, c_per_group = grad_columns.shape
    C = x_cl.shape[2]
    G = points.offset.shape[0] // x_cl.shape[0]
    Cq = C // G
    cast = x_cl.dtype.type
    image = x_cl[n]
    for g in range(G):
        q = n * G + g
        c0, c1 = g * Cq, (g + 1) * Cq
        for k in range(K):
            cell, r, w = tap_corner_rows(points, q, k, l)
            grads = TapGrads(0.0, 0.0, 0.0)
            if cell.inside:
                ga, gb, gc, gd = corner_views(grad_image, r)
                f0, f1, f2, f3 = masked_factors(cell, w, cast)
                scatter_channels(grad_columns, i, k, c0, c1, c_per_group, ga, gb, gc, gd,
                                 f0, f1, f2, f3)
                a, b, c_, d = corner_views(image, r)
                d0, d1, d2, d3 = corner_sums(grad_columns, i, k, c0, c1, c_per_group, a, b,
                                             c_, d)
                grads = tap_grads(cell, d0, d1, d2, d3)
            write_tap_grads(grad_offset, grad_mask, points.use_mask, q, k, l, grads)


# -- plain convolution ----------------------------------------------------------------------

@register_jitable
def tap_row(k, l, geometry, height, width):
    """The row of x_cl that tap k of output pixel l copies (the zero row in the padding)."""
    y, x = grid_point(k, l, geometry)
    return y * width + x if 0 <= y < height and 0 <= x < width else height * width


@register_jitable
def im2col_row(x_cl, n, l, geometry, height, width, columns, i):
    """Fill row i of columns (groups, rows, K, C/groups) with the patch of output pixel l of
    image n (zeros in the padding)."""
    groups, _, K, c_per_group = columns.shape
    image = x_cl[n]
    for k in range(K):
        src = image[tap_row(k, l, geometry, height, width)]
        for g in range(groups):
            out = columns[g, i, k]
            part = src[g * c_per_group:(g + 1) * c_per_group]  # from 0: the module's note
            for j in range(c_per_group):
                out[j] = part[j]


@register_jitable
def col2im_row(grad_columns, i, l, geometry, height, width, grad_image):
    """The adjoint of ``im2col_row``: grad_image (H*W + 1, C) += row i of grad_columns,
    each tap's channels added to the pixel it copied (row H*W collects the padding's)."""
    groups, _, K, c_per_group = grad_columns.shape
    for k in range(K):
        dst = grad_image[tap_row(k, l, geometry, height, width)]
        for g in range(groups):
            src = grad_columns[g, i, k]
            part = dst[g * c_per_group:(g + 1) * c_per_group]  # from 0: the module's note
            for j in range(c_per_group):
                part[j] += src[j]


# -- whole-batch kernels: rows = N*L, row n*L + l for output pixel l of image n ----------------

@kernel
def deform_im2col(x_cl, height, width, offset, mask, use_mask, mode, geometry, columns):
    """Fill columns (groups, N*L, K, C/groups) with the masked bilinear samples."""
    n_img = x_cl.shape[0]
    L = columns.shape[1] // n_img
    for nl in prange(n_img * L):  # each iteration writes only row nl
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width)
        deform_row(x_cl, nl // L, nl % L, points, columns, nl)


@kernel
def im2col(x_cl, height, width, geometry, columns):
    """Fill columns (groups, N*L, K, C/groups) with the zero-padded patches."""
    n_img = x_cl.shape[0]
    L = columns.shape[1] // n_img
    for nl in prange(n_img * L):  # each iteration writes only row nl
        im2col_row(x_cl, nl // L, nl % L, geometry, height, width, columns, nl)


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
    L = rows // n_img
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
