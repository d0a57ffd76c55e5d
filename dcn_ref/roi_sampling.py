"""The maths of deformable RoI pooling (``deform_roi_pool``), written once for both targets.

Like ``dcn_ref.sampling`` (whose ``locate``, ``corner`` and ``bilinear_value*`` these
functions call), everything here is ``register_jitable``: plain Python that the CPU
kernels (``dcn_ref/cpu/roi.py``) and the CUDA kernels (``dcn_ref/cuda/roi.py``) both
compile in. Each function works on one element: one bin, one output value, one image
plane. The kernels choose which elements to walk over; only the atomic CUDA scatters
repeat a bin's sample loop, to add with ``cuda.atomic.add`` where ``add_to_corners``
uses ``+=``.

Arrays (all float, the rois' dtype is the input's):

    input     (N, C, H, W)
    rois      (R, 5)                  rows (batch_index, x1, y1, x2, y2), before spatial_scale
    out       (R, C_out, ph, pw)      RoI r, output channel, bin (i, j)

The pooling parameters reach the kernels as a ``RoIPoolGeometry`` (``dcn_ref/geometry.py``).

deform_roi_pool (mmcv's DeformRoIPool; without offsets torchvision's roi_align, aligned=True)
-------------------------------------------------------------------------------------------
RoI r covers ``[x1*s - 0.5, x2*s - 0.5] x [y1*s - 0.5, y2*s - 0.5]`` (s = spatial_scale; the
half-pixel shift makes pixel centres sit at integers). It is cut into ph x pw bins of
``bin_h = roi_h / ph`` by ``bin_w = roi_w / pw``; bin (i, j) is moved as a whole by

    dx = gamma * roi_w * offset[r, 0, i, j],      dy = gamma * roi_h * offset[r, 1, i, j]

(channel 0 is the x-shift, as in mmcv) and averages grid_h x grid_w samples at the centres
of a regular sub-grid, ``grid = sampling_ratio``, or ``ceil(roi_h / ph)`` (``ceil(roi_w /
pw)``) when sampling_ratio is 0:

    y = y_start + dy + i*bin_h + (iy + 0.5) * bin_h / grid_h          (x alike)
    out[r, c, i, j] = mask[r, 0, i, j] * sum_samples v(y, x) / max(grid_h*grid_w, 1)

v is roi_align's bilinear rule: a sample with y < -1, y > H, x < -1 or x > W reads 0;
otherwise the point is clamped into [0, H-1] x [0, W-1] and interpolated. That is
``locate(..., BORDER)`` after a range test, so its derivative is 0 where it clamped.

Non-finite and huge values: a zero offset never moves a bin (not even by ``inf * 0``); a
shift that overflows to +-inf, or a NaN offset, puts the bin far outside (its samples read
0); a sample's gradient is taken as 0 when it read nothing, so an infinite scale (a huge
RoI or gamma) never meets a zero sum. A NaN mask value makes its bin 0, with zero
gradients for its offset, its mask and the input, as a bin far outside.

The position-sensitive op's maths is ``dcn_ref/psroi_sampling.py``.
"""
import math
from typing import NamedTuple

from numba.extending import register_jitable

from .sampling import BORDER, Cell, bilinear_value, bilinear_value_and_grad, corner, locate


class RoIBin(NamedTuple):
    """Where a bin of ``deform_roi_pool`` lies and how it is sampled: the image n, the
    bin's top-left corner (y, x) after its offset, its size, its grid of grid_h x grid_w
    samples, and the RoI's size (the scale of the offsets)."""
    n: int
    y: float
    x: float
    bin_h: float
    bin_w: float
    grid_h: int
    grid_w: int
    roi_h: float
    roi_w: float


# -- deform_roi_pool ---------------------------------------------------------------------

@register_jitable
def roi_align_cell(y, x, height, width):
    """``locate`` with roi_align's rule: nothing outside [-1, H] x [-1, W], clamped inside.

    Returns a ``Cell`` (``dcn_ref.sampling``); NaN is outside (every comparison with NaN
    is False).
    """
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return Cell(False, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return locate(y, x, height, width, BORDER)


@register_jitable
def roi_shift(gamma, size, offset):
    """``gamma * size * offset``, the shift of a bin; exactly 0 for a zero offset even
    where ``gamma * size`` overflows to inf."""
    return gamma * size * offset if offset != 0.0 else 0.0


@register_jitable
def scaled_grad(scale, total):
    """``scale * total`` for a chain-rule factor ``scale`` that may have overflowed to inf:
    0 where nothing was read or the bin's weight is 0 (``total == 0``), rather than
    ``inf * 0 = NaN``."""
    return scale * total if total != 0.0 else 0.0


@register_jitable
def roi_mask(mask, use_mask, r, i, j):
    """(live, m): bin (i, j) of RoI r's mask value (1.0 without a mask); live is False
    when the value is NaN, and m is 0.0 then."""
    m = mask[r, 0, i, j] if use_mask else 1.0
    if not (m == m):
        return False, 0.0
    return True, m


@register_jitable
def roi_align_bin(rois, offset, use_offset, geometry, r, i, j):
    """The ``RoIBin`` of bin (i, j) of RoI r (a ``RoIPoolGeometry``)."""
    spatial_scale, gamma = geometry.spatial_scale, geometry.gamma
    pooled_h, pooled_w = geometry.pooled_h, geometry.pooled_w
    sampling_ratio = geometry.sampling_ratio
    n = int(rois[r, 0])
    x_start = rois[r, 1] * spatial_scale - 0.5
    y_start = rois[r, 2] * spatial_scale - 0.5
    roi_w = (rois[r, 3] * spatial_scale - 0.5) - x_start
    roi_h = (rois[r, 4] * spatial_scale - 0.5) - y_start
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    # int(): math.ceil gives a float on CUDA; the ops bound roi_h / pooled_h beforehand
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / pooled_h))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / pooled_w))
    if use_offset:
        x_start += roi_shift(gamma, roi_w, offset[r, 0, i, j])   # channel 0: x
        y_start += roi_shift(gamma, roi_h, offset[r, 1, i, j])   # channel 1: y
    return RoIBin(n, y_start + i * bin_h, x_start + j * bin_w, bin_h, bin_w, grid_h, grid_w,
                  roi_h, roi_w)


@register_jitable
def roi_align_sample(bin, iy, ix, height, width):
    """``roi_align_cell`` of sample (iy, ix) of a ``RoIBin``: the centre of that sub-cell."""
    y = bin.y + (iy + 0.5) * bin.bin_h / bin.grid_h
    x = bin.x + (ix + 0.5) * bin.bin_w / bin.grid_w
    return roi_align_cell(y, x, height, width)


@register_jitable
def roi_align_weight(mask, use_mask, bin, r, i, j):
    """What each sample of bin (i, j) of RoI r counts in the output: mask / count (0 for a
    NaN mask)."""
    _, m = roi_mask(mask, use_mask, r, i, j)
    return m / max(bin.grid_h * bin.grid_w, 1)


@register_jitable
def roi_align_value(input, rois, offset, mask, use_offset, use_mask, geometry, r, c, i, j):
    """out[r, c, i, j]: the (masked) mean of the bin's samples of channel c."""
    H, W = input.shape[2], input.shape[3]
    if not roi_mask(mask, use_mask, r, i, j)[0]:
        return 0.0
    bin = roi_align_bin(rois, offset, use_offset, geometry, r, i, j)
    total = 0.0
    for iy in range(bin.grid_h):
        for ix in range(bin.grid_w):
            cell = roi_align_sample(bin, iy, ix, H, W)
            if cell.inside:
                total += bilinear_value(input, bin.n, c, cell)
    return total * roi_align_weight(mask, use_mask, bin, r, i, j)


@register_jitable
def roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask, geometry,
                         r, i, j):
    """Gradients of bin (i, j) of RoI r: (d/d offset[r, 0, i, j], d/d offset[r, 1, i, j],
    d/d mask[r, 0, i, j]), each a sum over the C channels that share the bin.

    ``d out / d offset_x = weight * gamma * roi_w * sum_samples jx * dv/dlx`` (y alike) and
    ``d out / d mask = sum_samples v / count``.
    """
    C, H, W = input.shape[1], input.shape[2], input.shape[3]
    if not roi_mask(mask, use_mask, r, i, j)[0]:
        return 0.0, 0.0, 0.0
    bin = roi_align_bin(rois, offset, use_offset, geometry, r, i, j)
    sum_y = 0.0
    sum_x = 0.0
    sum_v = 0.0
    for iy in range(bin.grid_h):
        for ix in range(bin.grid_w):
            cell = roi_align_sample(bin, iy, ix, H, W)
            if not cell.inside:
                continue
            for c in range(C):
                g = grad_output[r, c, i, j]
                v, dv_dly, dv_dlx = bilinear_value_and_grad(input, bin.n, c, cell)
                sum_y += g * cell.jy * dv_dly
                sum_x += g * cell.jx * dv_dlx
                sum_v += g * v
    count = max(bin.grid_h * bin.grid_w, 1)
    weight = roi_align_weight(mask, use_mask, bin, r, i, j)
    gamma = geometry.gamma
    return (scaled_grad(gamma * bin.roi_w, weight * sum_x),
            scaled_grad(gamma * bin.roi_h, weight * sum_y), sum_v / count)


@register_jitable
def roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, geometry, n, c,
                         grad_input):
    """grad_input[n, c] += every sample's gradient that image n, channel c received, adding
    RoIs, bins and samples in index order (the CPU kernel and the deterministic CUDA
    kernel both run this, one plane per iteration or thread)."""
    H, W = grad_input.shape[2], grad_input.shape[3]
    for r in range(rois.shape[0]):
        if int(rois[r, 0]) != n:
            continue
        for i in range(geometry.pooled_h):
            for j in range(geometry.pooled_w):
                bin = roi_align_bin(rois, offset, use_offset, geometry, r, i, j)
                g = grad_output[r, c, i, j] * roi_align_weight(mask, use_mask, bin, r, i, j)
                for iy in range(bin.grid_h):
                    for ix in range(bin.grid_w):
                        cell = roi_align_sample(bin, iy, ix, H, W)
                        if cell.inside:
                            add_to_corners(grad_input, n, c, cell, g)


# -- shared ------------------------------------------------------------------------------

@register_jitable
def add_to_corners(grad_image, n, c, cell, g):
    """grad_image[n, c] += g times each corner's bilinear weight (corners inside only).

    Plain ``+=``: for callers that own plane (n, c). The atomic CUDA kernels use
    ``cuda.atomic.add`` on the same ``corner`` weights instead.
    """
    H, W = grad_image.shape[2], grad_image.shape[3]
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < H and 0 <= s < W:
            grad_image[n, c, r, s] += w * g
