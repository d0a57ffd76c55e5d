"""DCNv3 and DCNv4 on the CPU: channels-last kernels, one location per sampling point.

    input        (N, H, W, C)          C = group * group_channels, channels last
    offset       (N, H_out, W_out, Do)  read through PointGeometry (dcn_ref/geometry.py)
    mask         (N, H_out, W_out, Dm)  (for DCNv4 the same packed array as offset)
    out          (N, H_out, W_out, C)

For every (n, ho, wo, g, p) the point is located once (``point_cell`` of
``dcn_ref/sampling.py``, reading the offsets and weights as ``SamplePoints``, built inside
each parallel loop: Numba's parallel loops take arrays and scalars, not tuples of arrays) and its four corners are then applied to the ``group_channels``
neighbouring channels of group g, which are contiguous in memory. The kernels walk the
kernel positions (i, j) directly, counting the point p alongside, so that no point costs
an integer division.

The channels are handled eight at a time ("lanes"), on the arrays flattened to 1-d, by
the vector operations of ``lanes.py``: ``lanes_bilinear`` (the forward of a whole cell),
``lanes_cell_backward`` (its backward), and ``lanes_axpy`` and ``lanes_dot`` for the
single corners of a cell at the border. The channels a group has beyond a multiple of
eight take a plain loop. A point's offset and weight gradients come from its four corner
sums through ``sampling.tap_grads``, as every other op's.
"""
from numba import prange

from ..point_sampling import is_removed, point_cell, write_point_grads
from ..sampling import ZEROS, SamplePoints, corner, tap_grads
from .compile import kernel
from .lanes import LANES, lanes_axpy, lanes_bilinear, lanes_cell_backward, lanes_dot


# -- the kernels ---------------------------------------------------------------------------------

@kernel
def dcnv3_forward(input, offset, mask, geometry, out):
    """out (N, H_out, W_out, C) = sum over points of weight * bilinear sample."""
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    Cg = geometry.group_channels
    full = Cg - Cg % LANES                   # channels a group covers with whole lanes
    cast = input.dtype.type                  # weights in the data's dtype: float32 stays SIMD-wide
    x, y = input.reshape(input.size), out.reshape(out.size)    # flat views, offsets below
    for task in prange(N * out_h * out_w):   # each iteration writes only out[n, ho, wo]
        points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
        n = task // (out_h * out_w)
        ho = (task // out_w) % out_h
        wo = task % out_w
        row = task * C                       # out[n, ho, wo, 0]
        for c in range(C):
            y[row + c] = 0.0
        for g in range(geometry.group):
            c0 = g * Cg
            p = 0
            for i in range(geometry.kernel_w):
                for j in range(geometry.kernel_h):
                    if is_removed(i, j, geometry):
                        continue
                    cell = point_cell(points, n, ho, wo, g, p, i, j)
                    p += 1
                    if not cell.inside:
                        continue
                    m, y0, x0 = cell.m, cell.y0, cell.x0
                    if 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W:   # the whole cell
                        f0, f1 = cast(m * corner(0, cell).w), cast(m * corner(1, cell).w)
                        f2, f3 = cast(m * corner(2, cell).w), cast(m * corner(3, cell).w)
                        a = ((n * H + y0) * W + x0) * C + c0      # input[n, y0, x0, c0]
                        b = a + C                                  # its right neighbour
                        c_ = a + W * C                             # the one below
                        d = c_ + C
                        o = row + c0
                        for c in range(0, full, LANES):
                            lanes_bilinear(y, o + c, x, a + c, f0, b + c, f1, c_ + c, f2,
                                           d + c, f3)
                        for c in range(full, Cg):
                            y[o + c] += (f0 * x[a + c] + f1 * x[b + c] + f2 * x[c_ + c]
                                         + f3 * x[d + c])
                        continue
                    for t in range(4):                                     # at the border
                        r, s, w, _, _ = corner(t, cell)
                        if 0 <= r < H and 0 <= s < W:
                            f = cast(m * w)
                            src = ((n * H + r) * W + s) * C + c0
                            o = row + c0
                            for c in range(0, full, LANES):
                                lanes_axpy(y, o + c, f, x, src + c)
                            for c in range(full, Cg):
                                y[o + c] += f * x[src + c]


@kernel
def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask):
    """grad_input (N, H, W, C) += the input gradient; the offset and weight entries of every
    point written into grad_offset and grad_mask (arrays shaped like offset and mask).

    Each channel hands m * w_t * grad_out to corner t; the point's gradients are
    ``sampling.tap_grads`` of the corner sums D_t = sum over the group's channels of
    grad_out * input at corner t.
    """
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    G, Cg = geometry.group, geometry.group_channels
    full = Cg - Cg % LANES
    chunks = full // LANES
    cast = input.dtype.type
    x, gx = input.reshape(input.size), grad_input.reshape(grad_input.size)    # flat views
    gy = grad_out.reshape(grad_out.size)
    for task in prange(N * G):   # task (n, g) writes only image n's channels of group g and
        n = task // G            # the offset and weight entries of group g's points: no overlap
        points = SamplePoints(offset, mask, True, ZEROS, geometry, H, W, 0.0)
        g = task % G
        c0 = g * Cg
        for ho in range(out_h):
            for wo in range(out_w):
                go = ((n * out_h + ho) * out_w + wo) * C + c0     # grad_out[n, ho, wo, c0]
                p = 0
                for i in range(geometry.kernel_w):
                    for j in range(geometry.kernel_h):
                        if is_removed(i, j, geometry):
                            continue
                        cell = point_cell(points, n, ho, wo, g, p, i, j)
                        m, y0, x0 = cell.m, cell.y0, cell.x0
                        d0 = d1 = d2 = d3 = cast(0.0)     # the corner sums of tap_grads
                        whole = 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W
                        if cell.inside and whole:                  # the whole cell
                            f0, f1 = cast(m * corner(0, cell).w), cast(m * corner(1, cell).w)
                            f2, f3 = cast(m * corner(2, cell).w), cast(m * corner(3, cell).w)
                            a = ((n * H + y0) * W + x0) * C + c0      # input[n, y0, x0, c0]
                            b = a + C                                  # its right neighbour
                            c_ = a + W * C                             # the one below
                            d = c_ + C
                            # the four corners' dot products (and their input gradient)
                            d0, d1, d2, d3 = lanes_cell_backward(gx, x, a, b, c_, d, gy, go,
                                                                 f0, f1, f2, f3, chunks)
                            for c in range(full, Cg):
                                g_c = gy[go + c]
                                d0 += g_c * x[a + c]
                                d1 += g_c * x[b + c]
                                d2 += g_c * x[c_ + c]
                                d3 += g_c * x[d + c]
                                gx[a + c] += f0 * g_c
                                gx[b + c] += f1 * g_c
                                gx[c_ + c] += f2 * g_c
                                gx[d + c] += f3 * g_c
                        elif cell.inside:                                  # at the border
                            for t in range(4):
                                r, s, w, _, _ = corner(t, cell)
                                if not (0 <= r < H and 0 <= s < W):
                                    continue                  # a corner outside reads 0
                                f = cast(m * w)
                                src = ((n * H + r) * W + s) * C + c0   # input[n, r, s, c0]
                                dot = lanes_dot(gy, go, x, src, chunks)
                                for c in range(0, full, LANES):
                                    lanes_axpy(gx, src + c, f, gy, go + c)
                                for c in range(full, Cg):
                                    dot += gy[go + c] * x[src + c]
                                    gx[src + c] += f * gy[go + c]
                                if t == 0:
                                    d0 = dot
                                elif t == 1:
                                    d1 = dot
                                elif t == 2:
                                    d2 = dot
                                else:
                                    d3 = dot
                        write_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry,
                                          tap_grads(cell, d0, d1, d2, d3))
                        p += 1
