"""The maths of DCNv3's and DCNv4's sampling points, written once for both targets.

DCNv3 and DCNv4 do not go through the sampling engine of ``dcn_ref.sampling``: each output
pixel has G groups of P points on a kernel grid of its own, whose offsets and weights are
stored interleaved in the last dimension of two channels-last arrays (the layouts are in
``dcn_ref/geometry.py``, ``PointGeometry``; the ops in ``dcn_ref/ops/dcnv3.py``). The
functions here find a point's entries in those arrays, place the point (``point_location``,
with ``offset_scale`` and ``remove_center``), locate it (``point_cell``, through
``sampling.locate``) and read, sum and store around it; the corner weights, their
derivatives and a point's gradients (``sampling.tap_grads``) are ``dcn_ref.sampling``'s.

Like everything there, each function is ``register_jitable``: plain Python that the CPU
kernels (``dcn_ref/cpu/dcnv3_kernels.py``) and the CUDA kernels
(``dcn_ref/cuda/dcnv3_kernels.py``), and their second-order kernels, compile in.
"""
from numba.extending import register_jitable

from .sampling import ZEROS, Cell, TapTangent, as_real, corner, locate

@register_jitable
def point_entries(g, p, geometry):
    """Where point p of group g keeps its data: (index of its x offset, index of its weight)
    in the last dimension of the offset and mask arrays (the y offset follows the x)."""
    return (g * geometry.offset_stride + 2 * p,
            geometry.mask_start + g * geometry.mask_stride + p)


@register_jitable
def point_position(p, geometry):
    """The kernel position (i, j) = (column, row) of point p: column-major, the centre
    skipped when ``remove_center`` (kernels that visit every point walk i and j instead)."""
    kh = geometry.kernel_h
    full = p                                   # index among all kh*kw positions
    if geometry.remove_center and p >= (geometry.kernel_w // 2) * kh + kh // 2:
        full = p + 1
    i = full // kh
    return i, full - i * kh


@register_jitable
def is_removed(i, j, geometry):
    """True for the kernel centre (i, j) = (kw//2, kh//2) when ``remove_center``."""
    return geometry.remove_center and i == geometry.kernel_w // 2 and j == geometry.kernel_h // 2


@register_jitable
def point_location(dx, dy, ho, wo, i, j, geometry):
    """(y, x) where kernel position (i, j) (column i, row j) of output pixel (ho, wo)
    samples, given its offset (dx, dy).

    With half = dilation*(k - 1)//2 the grid is centred on the output pixel's kernel
    centre, and ``offset_scale`` scales the grid around that centre as well as the offset:

        y = ho*stride_h - pad_h + half_h + (j*dilation_h - half_h + dy) * offset_scale
        x = wo*stride_w - pad_w + half_w + (i*dilation_w - half_w + dx) * offset_scale
    """
    half_h = (geometry.dilation_h * (geometry.kernel_h - 1)) // 2
    half_w = (geometry.dilation_w * (geometry.kernel_w - 1)) // 2
    scale = as_real(geometry.offset_scale, dy)       # computed in the type of dx and dy
    y = (as_real(ho * geometry.stride_h - geometry.pad_h + half_h, dy)
         + (as_real(j * geometry.dilation_h - half_h, dy) + dy) * scale)
    x = (as_real(wo * geometry.stride_w - geometry.pad_w + half_w, dy)
         + (as_real(i * geometry.dilation_w - half_w, dy) + dx) * scale)
    return y, x


@register_jitable
def point_cell(points, n, ho, wo, g, p, i, j):
    """The ``Cell`` of point p (kernel position (i, j)) of group g of output pixel (ho, wo)
    (``SamplePoints`` of a ``PointGeometry``), zero padding.

    Its m is the point's weight, and jy = jx = offset_scale (d y / d dy). A NaN weight
    counts as outside: the point contributes 0 and gets zero gradient.
    """
    geometry, real = points.geometry, points.real
    o, e = point_entries(g, p, geometry)
    m = as_real(points.mask[n, ho, wo, e], real)
    y, x = point_location(as_real(points.offset[n, ho, wo, o], real),
                          as_real(points.offset[n, ho, wo, o + 1], real), ho, wo, i, j, geometry)
    cell = locate(y, x, points.height, points.width, ZEROS)
    inside = cell.inside and m == m   # m == m: False for NaN
    if not inside:
        m = as_real(0.0, real)
    scale = as_real(geometry.offset_scale, real)
    return Cell(inside, cell.y0, cell.x0, cell.ly, cell.lx, scale, scale, m)


@register_jitable
def write_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry, grads):
    """Store point p of group g's ``TapGrads`` in arrays shaped like DCNv3's offset and mask
    (read through the ``PointGeometry``): the x offset's first, as the offsets are stored."""
    o, e = point_entries(g, p, geometry)
    grad_offset[n, ho, wo, o] = grads.d_dx
    grad_offset[n, ho, wo, o + 1] = grads.d_dy
    grad_mask[n, ho, wo, e] = grads.d_mask


@register_jitable
def point_tangent(tangents, cell, n, ho, wo, g, p):
    """The ``TapTangent`` of point p of group g of output pixel (ho, wo), read from
    ``tangents`` (``SamplePoints`` of the offsets' and weights' tangents, stored as the
    offsets and weights are: x first); all 0 where ``cell`` touches no pixel."""
    if not cell.inside:
        return TapTangent(0.0, 0.0, 0.0)
    o, e = point_entries(g, p, tangents.geometry)
    offset = tangents.offset
    return TapTangent(1.0 * offset[n, ho, wo, o + 1], 1.0 * offset[n, ho, wo, o],
                      1.0 * tangents.mask[n, ho, wo, e])       # float64, as in tap_tangent


@register_jitable
def add_point_grads(grad_offset, grad_mask, n, ho, wo, g, p, geometry, grads):
    """Add point p of group g's ``TapGrads`` into arrays shaped like DCNv3's offset and mask
    (``write_point_grads``, adding)."""
    o, e = point_entries(g, p, geometry)
    grad_offset[n, ho, wo, o] += grads.d_dx
    grad_offset[n, ho, wo, o + 1] += grads.d_dy
    grad_mask[n, ho, wo, e] += grads.d_mask


@register_jitable
def point_corner_pixel(input, n, c, cell, t):
    """Pixel of corner t of a cell in channel c of image n of a channels-last input
    (N, H, W, C); 0 outside the image."""
    r = cell.y0 + t // 2
    s = cell.x0 + t % 2
    if 0 <= r < input.shape[1] and 0 <= s < input.shape[2]:
        return input[n, r, s, c]
    return as_real(0.0, cell.ly)


@register_jitable
def point_corner_sums(grad_out, input, n, ho, wo, c_start, c_stop, cell):
    """The corner sums D_t of a DCNv3 point over channels c_start..c_stop of a channels-last
    ``input`` (N, H, W, C) (the input, or its tangent), with grad_out (N, H_out, W_out, C)
    at the point's output pixel, as a tuple of four."""
    d0 = d1 = d2 = d3 = 0.0
    for c in range(c_start, c_stop):
        g = grad_out[n, ho, wo, c]
        d0 += g * point_corner_pixel(input, n, c, cell, 0)
        d1 += g * point_corner_pixel(input, n, c, cell, 1)
        d2 += g * point_corner_pixel(input, n, c, cell, 2)
        d3 += g * point_corner_pixel(input, n, c, cell, 3)
    return d0, d1, d2, d3


@register_jitable
def point_value(input, n, c, cell):
    """Channel c of image n of a channels-last input (N, H, W, C), interpolated in a
    located cell (corners outside the image count as 0)."""
    height = input.shape[1]
    width = input.shape[2]
    v = as_real(0.0, cell.ly)
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < height and 0 <= s < width:
            v += w * input[n, r, s, c]
    return v
