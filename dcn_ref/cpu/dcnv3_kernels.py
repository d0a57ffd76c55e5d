"""DCNv3 and DCNv4 on the CPU: channels-last kernels, one location per sampling point.

    input        (N, H, W, C)          C = group * group_channels, channels last
    offset       (N, H_out, W_out, Do)  read through PointGeometry (dcn_ref/geometry.py)
    mask         (N, H_out, W_out, Dm)  (for DCNv4 the same packed array as offset)
    out          (N, H_out, W_out, C)

For every (n, ho, wo, g, p) the point is located once (``point_cell`` of
``dcn_ref/sampling.py``) and its four corners are then applied to the ``group_channels``
neighbouring channels of group g, which are contiguous in memory. When all four corners
are in the image (nearly always) one loop over the channels reads the four corner
vectors together; at the border each corner that is in the image gets a loop of its own.
The kernels walk the kernel positions (i, j) directly, counting the point p alongside,
so that no point costs an integer division.
"""
from numba import prange

from ..sampling import corner, is_removed, point_cell, point_entries
from .compile import kernel


@kernel
def dcnv3_forward(input, offset, mask, geometry, out):
    """out (N, H_out, W_out, C) = sum over points of weight * bilinear sample."""
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    Cg = geometry.group_channels
    cast = input.dtype.type                  # weights in the data's dtype: float32 stays SIMD-wide
    for task in prange(N * out_h * out_w):   # each iteration writes only out[n, ho, wo]
        n = task // (out_h * out_w)
        ho = (task // out_w) % out_h
        wo = task % out_w
        for c in range(C):
            out[n, ho, wo, c] = 0.0
        for g in range(geometry.group):
            # views of the group's channels, indexed from 0: Numba then knows every index
            # is non-negative, drops its negative-index wraparound and LLVM vectorises
            c0 = g * Cg
            row = out[n, ho, wo, c0:c0 + Cg]
            p = 0
            for i in range(geometry.kernel_w):
                for j in range(geometry.kernel_h):
                    if is_removed(i, j, geometry):
                        continue
                    inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, i, j,
                                                           H, W, geometry)
                    p += 1
                    if not inside:
                        continue
                    if 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W:   # the whole cell
                        _, _, w0, _, _ = corner(0, y0, x0, ly, lx)
                        _, _, w1, _, _ = corner(1, y0, x0, ly, lx)
                        _, _, w2, _, _ = corner(2, y0, x0, ly, lx)
                        _, _, w3, _, _ = corner(3, y0, x0, ly, lx)
                        f0, f1, f2, f3 = cast(m * w0), cast(m * w1), cast(m * w2), cast(m * w3)
                        a, b = input[n, y0, x0, c0:c0 + Cg], input[n, y0, x0 + 1, c0:c0 + Cg]
                        c_ = input[n, y0 + 1, x0, c0:c0 + Cg]
                        d = input[n, y0 + 1, x0 + 1, c0:c0 + Cg]
                        for c in range(Cg):
                            row[c] += f0 * a[c] + f1 * b[c] + f2 * c_[c] + f3 * d[c]
                        continue
                    for t in range(4):                                     # at the border
                        r, s, w, _, _ = corner(t, y0, x0, ly, lx)
                        if 0 <= r < H and 0 <= s < W:
                            f = cast(m * w)
                            src = input[n, r, s, c0:c0 + Cg]
                            for c in range(Cg):
                                row[c] += f * src[c]


@kernel
def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask):
    """grad_input (N, H, W, C) += the input gradient; the offset and weight entries of every
    point written into grad_offset and grad_mask (arrays shaped like offset and mask).

    With D_t = sum over the group's channels of grad_out * input at corner t:
        d weight = sum_t w_t D_t,   d dy = m * offset_scale * sum_t dw_t/dly D_t  (dx alike),
    and each channel hands m * w_t * grad_out to corner t.
    """
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    G, Cg = geometry.group, geometry.group_channels
    scale = geometry.offset_scale
    cast = input.dtype.type
    for task in prange(N * G):   # task (n, g) writes only image n's channels of group g and
        n = task // G            # the offset and weight entries of group g's points: no overlap
        g = task % G
        c0 = g * Cg
        for ho in range(out_h):
            for wo in range(out_w):
                gsrc = grad_out[n, ho, wo, c0:c0 + Cg]     # views from channel c0, see above
                p = 0
                for i in range(geometry.kernel_w):
                    for j in range(geometry.kernel_h):
                        if is_removed(i, j, geometry):
                            continue
                        o, k = point_entries(g, p, geometry)
                        inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, i,
                                                               j, H, W, geometry)
                        p += 1
                        d_v = 0.0
                        d_ly = 0.0
                        d_lx = 0.0
                        if not inside:
                            m = 0.0
                        elif 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W:   # whole cell
                            _, _, w0, wy0, wx0 = corner(0, y0, x0, ly, lx)
                            _, _, w1, wy1, wx1 = corner(1, y0, x0, ly, lx)
                            _, _, w2, wy2, wx2 = corner(2, y0, x0, ly, lx)
                            _, _, w3, wy3, wx3 = corner(3, y0, x0, ly, lx)
                            f0, f1, f2, f3 = cast(m * w0), cast(m * w1), cast(m * w2), cast(m * w3)
                            a = input[n, y0, x0, c0:c0 + Cg]
                            b = input[n, y0, x0 + 1, c0:c0 + Cg]
                            c_ = input[n, y0 + 1, x0, c0:c0 + Cg]
                            d = input[n, y0 + 1, x0 + 1, c0:c0 + Cg]
                            ga = grad_input[n, y0, x0, c0:c0 + Cg]
                            gb = grad_input[n, y0, x0 + 1, c0:c0 + Cg]
                            gc = grad_input[n, y0 + 1, x0, c0:c0 + Cg]
                            gd = grad_input[n, y0 + 1, x0 + 1, c0:c0 + Cg]
                            d0 = d1 = d2 = d3 = cast(0.0)
                            for c in range(Cg):        # reads only: no aliasing to rule out
                                go = gsrc[c]
                                d0 += go * a[c]
                                d1 += go * b[c]
                                d2 += go * c_[c]
                                d3 += go * d[c]
                            for c in range(Cg):        # one written array a loop
                                ga[c] += f0 * gsrc[c]
                            for c in range(Cg):
                                gb[c] += f1 * gsrc[c]
                            for c in range(Cg):
                                gc[c] += f2 * gsrc[c]
                            for c in range(Cg):
                                gd[c] += f3 * gsrc[c]
                            d_v = w0 * d0 + w1 * d1 + w2 * d2 + w3 * d3
                            d_ly = wy0 * d0 + wy1 * d1 + wy2 * d2 + wy3 * d3
                            d_lx = wx0 * d0 + wx1 * d1 + wx2 * d2 + wx3 * d3
                        else:                                              # at the border
                            for t in range(4):
                                r, s, w, w_ly, w_lx = corner(t, y0, x0, ly, lx)
                                if 0 <= r < H and 0 <= s < W:
                                    f = cast(m * w)
                                    src = input[n, r, s, c0:c0 + Cg]
                                    dst = grad_input[n, r, s, c0:c0 + Cg]
                                    dot = cast(0.0)
                                    for c in range(Cg):
                                        go = gsrc[c]
                                        dot += go * src[c]
                                        dst[c] += f * go
                                    d_v += w * dot
                                    d_ly += w_ly * dot
                                    d_lx += w_lx * dot
                        grad_offset[n, ho, wo, o] = m * scale * d_lx
                        grad_offset[n, ho, wo, o + 1] = m * scale * d_ly
                        grad_mask[n, ho, wo, k] = d_v
