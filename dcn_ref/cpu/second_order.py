"""Forward mode and second derivatives on the CPU: tangent columns and second-order sampling.

Two kernels for each layout the first-order kernels use, built from the maths of
``dcn_ref/sampling.py`` (its section "Second order and forward mode"):

    tangent columns     the change of every column entry along the tangents of the image,
                        offsets and mask: ``sum_t (m w_t pixel_dot_t + e_t pixel_t)``, with
                        e_t from ``sampling.tangent_factors``; the Jacobian-vector product
                        of the sampling, and of deform_conv2d through its GEMM
    second-order        the gradient of ``T = <grad_columns, columns_dot>`` with respect to
    sampling            the image (``e_t * grad_columns`` at corner t) and to every tap's
                        offset and mask (``sampling.tap_second_grads`` of the corner sums
                        of the image and of its tangent); *added* into the gradients, since
                        the ops add these terms to first-order ones

for the sampling engine on image planes (planar.py's layout, bilinear_sample and
offset_sample), a whole chunk's channels-last columns of deform_conv2d (groups, n, L, K,
C/groups): columns.py's layout with the rows split into (image, pixel), and DCNv3/DCNv4 (dcnv3_kernels.py's layout, as plain loops over
a group's channels). A tap whose offset and mask do not move (``sampling.moves``: the
common case of a gradient penalty, which differentiates along the image only) skips the
terms of e_t. ``use_image_dot`` is False when the image has no tangent (a stand-in array
is passed then and never read). Every ``prange`` says why its iterations never write the
same element; the sums run in a fixed order, so the results are deterministic.
"""
from numba import prange
from numba.extending import register_jitable

from ..point_sampling import (add_point_grads, is_removed, point_cell, point_corner_sums,
                              point_tangent)
from ..sampling import (ZEROS, SamplePoints, add_tap_grads, column_tangent, corner, moves, tap_cell,
                        tap_second_coord_grad, tap_second_grads, tap_tangent, tangent_factors)
from .columns import channel_segment, masked_factors, tap_corner_rows
from .compile import kernel


# -- a tap's channels in the whole-batch columns (groups, n, L, K, C/groups) ---------------
# The channel loops run over views that start at 0 (``row = out[lo:hi]``, then ``row[i]``),
# so that Numba drops its check for negative indices and LLVM vectorises them.

@register_jitable
def corner_views(image_cl, n, rows):
    """The four corner rows (a tuple of row numbers) of image n of a channels-last array."""
    return image_cl[n, rows[0]], image_cl[n, rows[1]], image_cl[n, rows[2]], image_cl[n, rows[3]]


@register_jitable(inline="always")
def scatter_channels(grad_columns, n, l, k, c_start, c_stop, c_per_group, ga, gb, gc, gd,
                     f0, f1, f2, f3):
    """The image gradient of one tap over channels c_start..c_stop of its offset group:
    corner row t of grad_x_cl (ga .. gd) += f_t * grad_columns, walked in runs of one conv
    group (``channel_segment``)."""
    c = c_start
    while c < c_stop:
        cg, stop = channel_segment(c, c_stop, c_per_group)
        lo = c - cg * c_per_group                # views from 0: see above
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
        lo = c - cg * c_per_group                # views from 0: see above
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


@register_jitable
def row_corner_sums(grad_columns, image_cl, n, l, k, c_start, c_stop, c_per_group, rows):
    """``corner_sums`` of one tap over channels c_start..c_stop, the corners read
    from ``image_cl`` (the image, or its tangent, channels last) at ``rows``. A function of
    its own, so that a kernel calling it twice inlines ``corner_sums`` once."""
    a, b, c_, d = corner_views(image_cl, n, rows)
    return corner_sums(grad_columns, n, l, k, c_start, c_stop, c_per_group, a, b, c_, d)


# -- the sampling engine on image planes (bilinear_sample, offset_sample) --------------------
# image (Q, Cq, H, W), offset (Q, K, 2, L), mask (Q, K, L), columns (Q, Cq, K, L); the
# tangents of offset and mask have their shapes (mask_dot is read only with use_mask).
# The per-element maths is sampling.py's, which the CUDA kernels call too.

@kernel
def tangent_im2col(image, image_dot, use_image_dot, offset, mask, use_mask, offset_dot, mask_dot,
                   mode, geometry, columns_dot):
    """columns_dot[q, c, k, l] = ``sampling.column_tangent``."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for qk in prange(Q * K):  # each iteration writes only columns_dot[q, :, k, :]
        points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0)
        q = qk // K
        k = qk % K
        for l in range(L):
            for c in range(Cq):
                columns_dot[q, c, k, l] = column_tangent(image, image_dot, use_image_dot, points,
                                                         tangents, q, c, k, l)


@kernel
def second_backward(grad_columns, image, image_dot, use_image_dot, offset, mask, use_mask,
                    offset_dot, mask_dot, mode, geometry, grad_image, grad_offset, grad_mask):
    """grad_image (Q, Cq, H, W) += e_t * grad_columns at corner t; grad_offset (Q, K, 2, L)
    and, with use_mask, grad_mask (Q, K, L) += ``sampling.tap_second_coord_grad``."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for q in prange(Q):  # each iteration writes only plane q of every output
        points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, use_mask, mode, geometry, H, W, 0.0)
        for k in range(K):
            for l in range(L):
                cell = tap_cell(points, q, k, l)
                tangent = tap_tangent(tangents, cell, q, k, l)
                if cell.inside and moves(tangent):
                    e = tangent_factors(cell, tangent)
                    for t in range(4):
                        r, s, _, _, _ = corner(t, cell)
                        if 0 <= r < H and 0 <= s < W:
                            for c in range(Cq):
                                grad_image[q, c, r, s] += e[t] * grad_columns[q, c, k, l]
                add_tap_grads(grad_offset, grad_mask, use_mask, q, k, l,
                              tap_second_coord_grad(grad_columns, image, image_dot, use_image_dot,
                                                    points, tangents, q, k, l))


# -- deformable convolution, channels-last columns (layouts in columns.py) -------------------

@kernel
def deform_tangent_im2col(x_cl, xdot_cl, use_image_dot, height, width, offset, mask, use_mask,
                          offset_dot, mask_dot, geometry, columns):
    """Fill columns (groups, n, L, K, C/groups) with the column tangents."""
    groups, n_img, L, K, c_per_group = columns.shape
    C = x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    cast = x_cl.dtype.type                      # factors in the data's dtype, as deform_im2col
    for nl in prange(n_img * L):  # each iteration writes only the rows columns[:, n, l]
        n = nl // L
        l = nl % L
        points = SamplePoints(offset, mask, use_mask, ZEROS, geometry, height, width, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, use_mask, ZEROS, geometry, height, width, 0.0)
        for g in range(G):
            q = n * G + g
            for k in range(K):
                cell, r, w = tap_corner_rows(points, q, k, l)
                e0, e1, e2, e3 = tangent_factors(cell, tap_tangent(tangents, cell, q, k, l))
                e0, e1, e2, e3 = cast(e0), cast(e1), cast(e2), cast(e3)
                f0, f1, f2, f3 = masked_factors(cell, w, cast)
                a, b, c_, d = corner_views(x_cl, n, r)
                c = g * Cq
                while c < (g + 1) * Cq:              # the offset group's channels, by conv group
                    cg, stop = channel_segment(c, (g + 1) * Cq, c_per_group)
                    lo = c - cg * c_per_group            # views from 0: see columns.py
                    out = columns[cg, n, l, k, lo:lo + stop - c]
                    va, vb, vc, vd = a[c:stop], b[c:stop], c_[c:stop], d[c:stop]
                    for i in range(stop - c):
                        out[i] = e0 * va[i] + e1 * vb[i] + e2 * vc[i] + e3 * vd[i]
                    if use_image_dot:
                        ta, tb, tc, td = corner_views(xdot_cl, n, r)
                        ua, ub, uc, ud = ta[c:stop], tb[c:stop], tc[c:stop], td[c:stop]
                        for i in range(stop - c):
                            out[i] += f0 * ua[i] + f1 * ub[i] + f2 * uc[i] + f3 * ud[i]
                    c = stop


@kernel
def deform_second_backward(grad_columns, x_cl, xdot_cl, use_image_dot, height, width, offset,
                           mask, use_mask, offset_dot, mask_dot, geometry, grad_x_cl, grad_offset,
                           grad_mask):
    """grad_x_cl (n, H*W + 1, C) += e_t * grad_columns at corner t (row H*W collects junk);
    grad_offset (n*G, K, 2, L) and, with use_mask, grad_mask (n*G, K, L) +=
    ``tap_second_grads``. One task per (image, offset group)."""
    groups, n_img, L, K, c_per_group = grad_columns.shape
    C = x_cl.shape[2]
    G = offset.shape[0] // n_img
    Cq = C // G
    cast = x_cl.dtype.type
    zero = cast(0.0)
    for q in prange(n_img * G):  # task (n, g) writes only image n's rows in group g's channels
        points = SamplePoints(offset, mask, use_mask, ZEROS, geometry, height, width, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, use_mask, ZEROS, geometry, height, width, 0.0)
        n = q // G
        g = q % G
        c0, c1 = g * Cq, (g + 1) * Cq            # ... and the offsets and masks of its taps
        for k in range(K):
            for l in range(L):
                cell, r, w = tap_corner_rows(points, q, k, l)
                if not cell.inside:
                    continue
                tangent = tap_tangent(tangents, cell, q, k, l)
                sums = tangent_sums = (zero, zero, zero, zero)
                if moves(tangent):
                    e0, e1, e2, e3 = tangent_factors(cell, tangent)
                    ga, gb, gc, gd = corner_views(grad_x_cl, n, r)
                    scatter_channels(grad_columns, n, l, k, c0, c1, c_per_group, ga, gb, gc, gd,
                                     cast(e0), cast(e1), cast(e2), cast(e3))
                    sums = row_corner_sums(grad_columns, x_cl, n, l, k, c0, c1, c_per_group, r)
                if use_image_dot:
                    tangent_sums = row_corner_sums(grad_columns, xdot_cl, n, l, k, c0, c1,
                                                   c_per_group, r)
                add_tap_grads(grad_offset, grad_mask, use_mask, q, k, l,
                              tap_second_grads(cell, tangent, sums, tangent_sums))


# -- DCNv3 / DCNv4, channels last (layouts in dcnv3_kernels.py) ------------------------------

@kernel
def dcnv3_tangent(input, input_dot, use_input_dot, offset, mask, offset_dot, mask_dot, geometry,
                  out_dot):
    """out_dot (N, H_out, W_out, C) = the sum over a group's points of their column tangents."""
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    Cg = geometry.group_channels
    for task in prange(N * out_h * out_w):   # each iteration writes only out_dot[n, ho, wo]
        points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0)
        n = task // (out_h * out_w)
        ho = (task // out_w) % out_h
        wo = task % out_w
        for c in range(C):
            out_dot[n, ho, wo, c] = 0.0
        for g in range(geometry.group):
            p = 0
            for i in range(geometry.kernel_w):
                for j in range(geometry.kernel_h):
                    if is_removed(i, j, geometry):
                        continue
                    cell = point_cell(points, n, ho, wo, g, p, i, j)
                    e = tangent_factors(cell, point_tangent(tangents, cell, n, ho, wo, g, p))
                    p += 1
                    if not cell.inside:
                        continue
                    for t in range(4):
                        r, s, w, _, _ = corner(t, cell)
                        if not (0 <= r < H and 0 <= s < W):
                            continue
                        f = cell.m * w
                        for c in range(g * Cg, (g + 1) * Cg):
                            v = e[t] * input[n, r, s, c]
                            if use_input_dot:
                                v += f * input_dot[n, r, s, c]
                            out_dot[n, ho, wo, c] += v


@kernel
def dcnv3_second_backward(grad_out, input, input_dot, use_input_dot, offset, mask, offset_dot,
                          mask_dot, geometry, grad_input, grad_offset, grad_mask):
    """grad_input (N, H, W, C) += e_t * grad_out at corner t; every point's entries of
    grad_offset and grad_mask += ``tap_second_grads``."""
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    G, Cg = geometry.group, geometry.group_channels
    for task in prange(N * G):   # task (n, g) writes only image n's channels of group g and
        n = task // G            # the offset and weight entries of group g's points
        g = task % G
        c0, c1 = g * Cg, (g + 1) * Cg
        points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
        tangents = SamplePoints(offset_dot, mask_dot, True, ZEROS, geometry, H, W, 0.0)
        for ho in range(out_h):
            for wo in range(out_w):
                p = 0
                for i in range(geometry.kernel_w):
                    for j in range(geometry.kernel_h):
                        if is_removed(i, j, geometry):
                            continue
                        cell = point_cell(points, n, ho, wo, g, p, i, j)
                        tangent = point_tangent(tangents, cell, n, ho, wo, g, p)
                        if cell.inside:
                            sums = tangent_sums = (0.0, 0.0, 0.0, 0.0)
                            if moves(tangent):
                                e = tangent_factors(cell, tangent)
                                for t in range(4):
                                    r, s, _, _, _ = corner(t, cell)
                                    if 0 <= r < H and 0 <= s < W:
                                        for c in range(c0, c1):
                                            grad_input[n, r, s, c] += e[t] * grad_out[n, ho, wo, c]
                                sums = point_corner_sums(grad_out, input, n, ho, wo, c0, c1, cell)
                            if use_input_dot:
                                tangent_sums = point_corner_sums(grad_out, input_dot, n, ho, wo,
                                                                 c0, c1, cell)
                            add_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry,
                                            tap_second_grads(cell, tangent, sums, tangent_sums))
                        p += 1
