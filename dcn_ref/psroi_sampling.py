"""The maths of deformable position-sensitive RoI pooling (``deform_psroi_pool``), written
once for both targets, as ``dcn_ref/roi_sampling.py`` is for ``deform_roi_pool``: every
function is ``register_jitable`` and works on one element (one bin, one output value, one
image plane, one offset pair); the kernels of ``dcn_ref/cpu/roi.py`` and
``dcn_ref/cuda/roi.py`` walk over them. The parameters reach the kernels as a
``PSRoIPoolGeometry`` (``dcn_ref/geometry.py``).

Arrays: input (N, C, H, W), rois (R, 5), trans (R, 2*num_classes, part_size, part_size),
out (R, output_dim, pooled_size, pooled_size).

deform_psroi_pool (MXNet's DeformablePSROIPooling, R-FCN)
---------------------------------------------------------
The corners are rounded to whole pixels (C's round(), halves away from zero) and the box
made inclusive: ``x_start = round(x1)*s - 0.5``, ``x_end = (round(x2) + 1)*s - 0.5``,
``roi_w = max(x_end - x_start, 0.1)`` (y alike). Output channel ctop of bin (i, j) reads
input channel ``(ctop*group_size + gi)*group_size + gj`` (``gi = i*group_size // pooled_size``),
shifted by ``trans_std * roi_w * trans[r, 2*cls, pi, pj]`` in x and the next channel in y
(cls = ctop // channels_each_class, ``pi = i*part_size // pooled_size``), at the
sample_per_part^2 points ``x = x_first + iw * bin_w / sample_per_part`` (the sub-bins' top-left corners, not
their centres). Samples outside [-0.5, W-0.5] x [-0.5, H-0.5] are skipped, the others
clamped into the image and interpolated, and the bin is their mean (0 when none is inside).
"""
import math
from typing import NamedTuple

from numba.extending import register_jitable

from .roi_sampling import add_to_corners, scaled_grad
from .sampling import BORDER, Cell, bilinear_value, bilinear_value_and_grad, locate


class PSRoIBox(NamedTuple):
    """RoI r as MXNet sees it: its image n, top-left corner and size."""
    n: int
    y_start: float
    x_start: float
    roi_h: float
    roi_w: float


class PSRoIBin(NamedTuple):
    """Where a bin of ``deform_psroi_pool`` samples: the image and input channel it reads,
    its first sample point (after the offset) and the spacing of its samples."""
    n: int
    channel: int
    y_first: float
    x_first: float
    step_h: float
    step_w: float


@register_jitable
def round_half_away(v):
    """C's ``round``: halves go away from zero (Python and NumPy round them to even)."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:   # exact: a - floor(a) has no rounding error
        r += 1.0
    return r if v >= 0 else -r


@register_jitable
def psroi_cell(y, x, height, width):
    """``locate`` with MXNet's rule: skip points outside [-0.5, H-0.5] x [-0.5, W-0.5],
    clamp the others into the image. Returns a ``Cell``."""
    if not (-0.5 <= y <= height - 0.5 and -0.5 <= x <= width - 0.5):
        return Cell(False, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return locate(y, x, height, width, BORDER)


@register_jitable
def psroi_box(rois, r, spatial_scale):
    """The ``PSRoIBox`` of RoI r: corners rounded to whole pixels and the box made inclusive
    (x2 = x1 is one pixel wide), at least 0.1 wide."""
    x_start = round_half_away(rois[r, 1]) * spatial_scale - 0.5
    y_start = round_half_away(rois[r, 2]) * spatial_scale - 0.5
    x_end = (round_half_away(rois[r, 3]) + 1.0) * spatial_scale - 0.5
    y_end = (round_half_away(rois[r, 4]) + 1.0) * spatial_scale - 0.5
    return PSRoIBox(int(rois[r, 0]), y_start, x_start, max(y_end - y_start, 0.1),
                    max(x_end - x_start, 0.1))


@register_jitable
def psroi_bin(rois, trans, use_trans, geometry, r, ctop, i, j):
    """The ``PSRoIBin`` of bin (i, j) of output channel ctop of RoI r (a
    ``PSRoIPoolGeometry``)."""
    pooled_size, group_size = geometry.pooled_size, geometry.group_size
    part_size = geometry.part_size
    box = psroi_box(rois, r, geometry.spatial_scale)
    bin_h = box.roi_h / pooled_size
    bin_w = box.roi_w / pooled_size
    dx = 0.0
    dy = 0.0
    if use_trans:
        cls = ctop // geometry.channels_each_class
        part_i = i * part_size // pooled_size
        part_j = j * part_size // pooled_size
        dx = trans[r, 2 * cls, part_i, part_j] * geometry.trans_std * box.roi_w
        dy = trans[r, 2 * cls + 1, part_i, part_j] * geometry.trans_std * box.roi_h
    group_i = i * group_size // pooled_size
    group_j = j * group_size // pooled_size
    channel = (ctop * group_size + group_i) * group_size + group_j
    return PSRoIBin(box.n, channel, i * bin_h + box.y_start + dy, j * bin_w + box.x_start + dx,
                    bin_h / geometry.sample_per_part, bin_w / geometry.sample_per_part)


@register_jitable
def psroi_sample(bin, ih, iw, height, width):
    """``psroi_cell`` of sample (ih, iw) of a ``PSRoIBin``."""
    return psroi_cell(bin.y_first + ih * bin.step_h, bin.x_first + iw * bin.step_w, height, width)


@register_jitable
def psroi_count(bin, sample_per_part, height, width):
    """How many of a bin's samples are inside (the divisor of its mean)."""
    count = 0
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            if psroi_sample(bin, ih, iw, height, width).inside:
                count += 1
    return count


@register_jitable
def psroi_value(input, rois, trans, use_trans, geometry, r, ctop, i, j):
    """out[r, ctop, i, j]: the mean of the bin's samples that are inside, 0 if none is."""
    H, W = input.shape[2], input.shape[3]
    bin = psroi_bin(rois, trans, use_trans, geometry, r, ctop, i, j)
    total = 0.0
    count = 0
    for ih in range(geometry.sample_per_part):
        for iw in range(geometry.sample_per_part):
            cell = psroi_sample(bin, ih, iw, H, W)
            if cell.inside:
                total += bilinear_value(input, bin.n, bin.channel, cell)
                count += 1
    return total / count if count > 0 else 0.0


@register_jitable
def psroi_trans_grad(grad_output, input, rois, trans, geometry, r, cls, part_i, part_j):
    """Gradients of trans[r, 2*cls, part_i, part_j] (x) and trans[r, 2*cls + 1, ...] (y).

    That pair moves every bin of part (part_i, part_j) of every output channel of class
    cls: the sum over them of ``grad / count * trans_std * roi_w * jx * dv/dlx`` (y alike).
    The count of samples inside is piecewise constant in trans and adds no term.
    """
    H, W = input.shape[2], input.shape[3]
    pooled_size, part_size = geometry.pooled_size, geometry.part_size
    sample_per_part, channels_each_class = geometry.sample_per_part, geometry.channels_each_class
    box = psroi_box(rois, r, geometry.spatial_scale)
    sum_y = 0.0
    sum_x = 0.0
    for ctop in range(cls * channels_each_class, (cls + 1) * channels_each_class):
        for i in range(pooled_size):
            if i * part_size // pooled_size != part_i:
                continue
            for j in range(pooled_size):
                if j * part_size // pooled_size != part_j:
                    continue
                bin = psroi_bin(rois, trans, True, geometry, r, ctop, i, j)
                count = psroi_count(bin, sample_per_part, H, W)
                if count == 0:
                    continue
                g = grad_output[r, ctop, i, j] / count
                for ih in range(sample_per_part):
                    for iw in range(sample_per_part):
                        cell = psroi_sample(bin, ih, iw, H, W)
                        if cell.inside:
                            _, dv_dly, dv_dlx = bilinear_value_and_grad(input, bin.n, bin.channel,
                                                                        cell)
                            sum_y += g * cell.jy * dv_dly
                            sum_x += g * cell.jx * dv_dlx
    trans_std = geometry.trans_std
    return scaled_grad(trans_std * box.roi_w, sum_x), scaled_grad(trans_std * box.roi_h, sum_y)


@register_jitable
def psroi_plane_grad(grad_output, rois, trans, use_trans, geometry, n, c, grad_input):
    """grad_input[n, c] += the gradients of every sample that read image n, channel c.

    Channel c is read only by output channel ``c // group_size**2`` in the bins of group
    ``((c // group_size) % group_size, c % group_size)``; RoIs, bins and samples are added
    in index order.
    """
    H, W = grad_input.shape[2], grad_input.shape[3]
    pooled_size, group_size = geometry.pooled_size, geometry.group_size
    sample_per_part = geometry.sample_per_part
    ctop = c // (group_size * group_size)
    group_i = (c // group_size) % group_size
    group_j = c % group_size
    for r in range(rois.shape[0]):
        if int(rois[r, 0]) != n:
            continue
        for i in range(pooled_size):
            if i * group_size // pooled_size != group_i:
                continue
            for j in range(pooled_size):
                if j * group_size // pooled_size != group_j:
                    continue
                bin = psroi_bin(rois, trans, use_trans, geometry, r, ctop, i, j)
                count = psroi_count(bin, sample_per_part, H, W)
                if count == 0:
                    continue
                g = grad_output[r, ctop, i, j] / count
                for ih in range(sample_per_part):
                    for iw in range(sample_per_part):
                        cell = psroi_sample(bin, ih, iw, H, W)
                        if cell.inside:
                            add_to_corners(grad_input, n, c, cell, g)
