"""DCNv3 and DCNv4 on the CPU: channels-last kernels, one location per sampling point.

    input        (N, H, W, C)          C = group * group_channels, channels last
    offset       (N, H_out, W_out, Do)  read through PointGeometry (dcn_ref/geometry.py)
    mask         (N, H_out, W_out, Dm)  (for DCNv4 the same packed array as offset)
    out          (N, H_out, W_out, C)

For every (n, ho, wo, g, p) the point is located once (``point_cell`` of
``dcn_ref/sampling.py``) and its four corners are then applied to the ``group_channels``
neighbouring channels of group g, which are contiguous in memory: a sample costs a
few vector operations however many channels share it.
"""
from numba import prange

from ..sampling import corner, point_cell, point_entries
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
        row = out[n, ho, wo]
        for c in range(C):
            row[c] = 0.0
        for g in range(geometry.group):
            c0 = g * Cg
            for p in range(geometry.points):
                inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, H, W,
                                                       geometry)
                if not inside:
                    continue
                for t in range(4):
                    r, s, w, _, _ = corner(t, y0, x0, ly, lx)
                    if 0 <= r < H and 0 <= s < W:
                        f = cast(m * w)
                        src = input[n, r, s]
                        for c in range(c0, c0 + Cg):
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
    G, P, Cg = geometry.group, geometry.points, geometry.group_channels
    scale = geometry.offset_scale
    cast = input.dtype.type
    for task in prange(N * G):   # task (n, g) writes only image n's channels of group g and
        n = task // G            # the offset and weight entries of group g's points: no overlap
        g = task % G
        c0 = g * Cg
        for ho in range(out_h):
            for wo in range(out_w):
                gsrc = grad_out[n, ho, wo]
                for p in range(P):
                    o, k = point_entries(g, p, geometry)
                    inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, H, W,
                                                           geometry)
                    d_v = 0.0
                    d_ly = 0.0
                    d_lx = 0.0
                    if inside:
                        for t in range(4):
                            r, s, w, w_ly, w_lx = corner(t, y0, x0, ly, lx)
                            if 0 <= r < H and 0 <= s < W:
                                f = cast(m * w)
                                src = input[n, r, s]
                                dst = grad_input[n, r, s]
                                dot = cast(0.0)
                                for c in range(c0, c0 + Cg):
                                    go = gsrc[c]
                                    dot += go * src[c]
                                    dst[c] += f * go
                                d_v += w * dot
                                d_ly += w_ly * dot
                                d_lx += w_lx * dot
                    else:
                        m = 0.0
                    grad_offset[n, ho, wo, o] = m * scale * d_lx
                    grad_offset[n, ho, wo, o + 1] = m * scale * d_ly
                    grad_mask[n, ho, wo, k] = d_v
