"""The maths of the two deformable RoI pooling ops, written once for both targets.

Like ``dcn_ref.sampling`` (whose ``locate``, ``corner`` and ``bilinear_value*`` these
functions call), everything here is ``register_jitable``: plain Python that the CPU
kernels (``dcn_ref/cpu/roi.py``) and the CUDA kernels (``dcn_ref/cuda/roi.py``) both
compile in. Each function works on one element: one bin, one output value, one image
plane. The kernels choose which elements to walk over; only the atomic CUDA scatters
repeat a bin's sample loop, to add with ``cuda.atomic.add`` where ``add_to_corners``
uses ``+=``.

Arrays (all float, the rois' dtype is the input's):

    input     (N, C, H, W)
    rois      (K, 5)                  rows (batch_index, x1, y1, x2, y2), before spatial_scale
    out       (K, C_out, ph, pw)

deform_roi_pool (mmcv's DeformRoIPool; without offsets torchvision's roi_align, aligned=True)
-------------------------------------------------------------------------------------------
RoI k covers ``[x1*s - 0.5, x2*s - 0.5] x [y1*s - 0.5, y2*s - 0.5]`` (s = spatial_scale; the
half-pixel shift makes pixel centres sit at integers). It is cut into ph x pw bins of
``bin_h = roi_h / ph`` by ``bin_w = roi_w / pw``; bin (i, j) is moved as a whole by

    dx = gamma * roi_w * offset[k, 0, i, j],      dy = gamma * roi_h * offset[k, 1, i, j]

(channel 0 is the x-shift, as in mmcv) and averages grid_h x grid_w samples at the centres
of a regular sub-grid, ``grid = sampling_ratio``, or ``ceil(roi_h / ph)`` (``ceil(roi_w /
pw)``) when sampling_ratio is 0:

    y = y_start + dy + i*bin_h + (iy + 0.5) * bin_h / grid_h          (x alike)
    out[k, c, i, j] = mask[k, 0, i, j] * sum_samples v(y, x) / max(grid_h*grid_w, 1)

v is roi_align's bilinear rule: a sample with y < -1, y > H, x < -1 or x > W reads 0;
otherwise the point is clamped into [0, H-1] x [0, W-1] and interpolated. That is
``locate(..., BORDER)`` after a range test, so its derivative is 0 where it clamped.

Non-finite and huge values: a zero offset never moves a bin (not even by ``inf * 0``); a
shift that overflows to +-inf, or a NaN offset, puts the bin far outside (its samples read
0); a sample's gradient is taken as 0 when it read nothing, so an infinite scale (a huge
RoI or gamma) never meets a zero sum. A NaN mask value makes its bin 0, with zero
gradients for its offset, its mask and the input, as a bin far outside.

deform_psroi_pool (MXNet's DeformablePSROIPooling, R-FCN)
---------------------------------------------------------
The corners are rounded to whole pixels (C's round(), halves away from zero) and the box
made inclusive: ``x_start = round(x1)*s - 0.5``, ``x_end = (round(x2) + 1)*s - 0.5``,
``roi_w = max(x_end - x_start, 0.1)`` (y alike). Output channel ctop of bin (i, j) reads
input channel ``(ctop*G + gi)*G + gj`` (G = group_size, ``gi = i*G // P``, P = pooled_size),
shifted by ``trans_std * roi_w * trans[k, 2*cls, pi, pj]`` in x and the next channel in y
(cls = ctop // channels_each_class, ``pi = i*part_size // P``), at the sample_per_part^2
points ``x = x_first + iw * bin_w / sample_per_part`` (the sub-bins' top-left corners, not
their centres). Samples outside [-0.5, W-0.5] x [-0.5, H-0.5] are skipped, the others
clamped into the image and interpolated, and the bin is their mean (0 when none is inside).
"""
import math

from numba.extending import register_jitable

from .sampling import BORDER, bilinear_value, bilinear_value_and_grad, corner, locate


# -- deform_roi_pool ---------------------------------------------------------------------

@register_jitable
def roi_align_cell(y, x, height, width):
    """``locate`` with roi_align's rule: nothing outside [-1, H] x [-1, W], clamped inside.

    Returns ``(inside, y0, x0, ly, lx, jy, jx)`` as ``dcn_ref.sampling.locate``; NaN is
    outside (every comparison with NaN is False).
    """
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return False, 0, 0, 0.0, 0.0, 0.0, 0.0
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
def roi_mask(mask, use_mask, k, i, j):
    """(live, m): bin (i, j) of RoI k's mask value (1.0 without a mask); live is False
    when the value is NaN, and m is 0.0 then."""
    m = mask[k, 0, i, j] if use_mask else 1.0
    if not (m == m):
        return False, 0.0
    return True, m


@register_jitable
def roi_align_bin(rois, offset, use_offset, spatial_scale, sampling_ratio, gamma,
                  pooled_h, pooled_w, k, i, j):
    """Where bin (i, j) of RoI k lies and how it is sampled.

    Returns ``(n, y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, roi_h, roi_w)``: the image,
    the bin's top-left corner after its offset, its size, the sampling grid and the RoI's
    size (the scale of the offsets).
    """
    n = int(rois[k, 0])
    x_start = rois[k, 1] * spatial_scale - 0.5
    y_start = rois[k, 2] * spatial_scale - 0.5
    roi_w = (rois[k, 3] * spatial_scale - 0.5) - x_start
    roi_h = (rois[k, 4] * spatial_scale - 0.5) - y_start
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    # int(): math.ceil gives a float on CUDA; the ops bound roi_h / pooled_h beforehand
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / pooled_h))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / pooled_w))
    if use_offset:
        x_start += roi_shift(gamma, roi_w, offset[k, 0, i, j])   # channel 0: x
        y_start += roi_shift(gamma, roi_h, offset[k, 1, i, j])   # channel 1: y
    return n, y_start + i * bin_h, x_start + j * bin_w, bin_h, bin_w, grid_h, grid_w, roi_h, roi_w


@register_jitable
def roi_align_sample(y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, iy, ix, height, width):
    """``roi_align_cell`` of sample (iy, ix) of a bin: the centre of that sub-cell."""
    y = y_bin + (iy + 0.5) * bin_h / grid_h
    x = x_bin + (ix + 0.5) * bin_w / grid_w
    return roi_align_cell(y, x, height, width)


@register_jitable
def roi_align_weight(mask, use_mask, grid_h, grid_w, k, i, j):
    """What each sample of bin (i, j) of RoI k counts in the output: mask / count (0 for a
    NaN mask)."""
    _, m = roi_mask(mask, use_mask, k, i, j)
    return m / max(grid_h * grid_w, 1)


@register_jitable
def roi_align_value(input, rois, offset, mask, use_offset, use_mask, spatial_scale,
                    sampling_ratio, gamma, pooled_h, pooled_w, k, c, i, j):
    """out[k, c, i, j]: the (masked) mean of the bin's samples of channel c."""
    H, W = input.shape[2], input.shape[3]
    if not roi_mask(mask, use_mask, k, i, j)[0]:
        return 0.0
    n, y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, _, _ = roi_align_bin(
        rois, offset, use_offset, spatial_scale, sampling_ratio, gamma, pooled_h, pooled_w, k, i, j)
    total = 0.0
    for iy in range(grid_h):
        for ix in range(grid_w):
            inside, y0, x0, ly, lx, _, _ = roi_align_sample(y_bin, x_bin, bin_h, bin_w, grid_h,
                                                            grid_w, iy, ix, H, W)
            if inside:
                total += bilinear_value(input, n, c, y0, x0, ly, lx)
    return total * roi_align_weight(mask, use_mask, grid_h, grid_w, k, i, j)


@register_jitable
def roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask,
                         spatial_scale, sampling_ratio, gamma, k, i, j):
    """Gradients of bin (i, j) of RoI k: (d/d offset[k, 0, i, j], d/d offset[k, 1, i, j],
    d/d mask[k, 0, i, j]), each a sum over the C channels that share the bin.

    ``d out / d offset_x = weight * gamma * roi_w * sum_samples jx * dv/dlx`` (y alike) and
    ``d out / d mask = sum_samples v / count``.
    """
    C, H, W = input.shape[1], input.shape[2], input.shape[3]
    pooled_h, pooled_w = grad_output.shape[2], grad_output.shape[3]
    if not roi_mask(mask, use_mask, k, i, j)[0]:
        return 0.0, 0.0, 0.0
    n, y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, roi_h, roi_w = roi_align_bin(
        rois, offset, use_offset, spatial_scale, sampling_ratio, gamma, pooled_h, pooled_w, k, i, j)
    sum_y = 0.0
    sum_x = 0.0
    sum_v = 0.0
    for iy in range(grid_h):
        for ix in range(grid_w):
            inside, y0, x0, ly, lx, jy, jx = roi_align_sample(y_bin, x_bin, bin_h, bin_w, grid_h,
                                                              grid_w, iy, ix, H, W)
            if not inside:
                continue
            for c in range(C):
                g = grad_output[k, c, i, j]
                v, v_ly, v_lx = bilinear_value_and_grad(input, n, c, y0, x0, ly, lx)
                sum_y += g * jy * v_ly
                sum_x += g * jx * v_lx
                sum_v += g * v
    count = max(grid_h * grid_w, 1)
    weight = roi_align_weight(mask, use_mask, grid_h, grid_w, k, i, j)
    return (scaled_grad(gamma * roi_w, weight * sum_x), scaled_grad(gamma * roi_h, weight * sum_y),
            sum_v / count)


@register_jitable
def roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, spatial_scale,
                         sampling_ratio, gamma, n, c, grad_input):
    """grad_input[n, c] += every sample's gradient that image n, channel c received, adding
    RoIs, bins and samples in index order (the CPU kernel and the deterministic CUDA
    kernel both run this, one plane per iteration or thread)."""
    H, W = grad_input.shape[2], grad_input.shape[3]
    pooled_h, pooled_w = grad_output.shape[2], grad_output.shape[3]
    for k in range(rois.shape[0]):
        if int(rois[k, 0]) != n:
            continue
        for i in range(pooled_h):
            for j in range(pooled_w):
                _, y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, _, _ = roi_align_bin(
                    rois, offset, use_offset, spatial_scale, sampling_ratio, gamma, pooled_h,
                    pooled_w, k, i, j)
                g = grad_output[k, c, i, j] * roi_align_weight(mask, use_mask, grid_h, grid_w,
                                                               k, i, j)
                for iy in range(grid_h):
                    for ix in range(grid_w):
                        inside, y0, x0, ly, lx, _, _ = roi_align_sample(
                            y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, iy, ix, H, W)
                        if inside:
                            add_to_corners(grad_input, n, c, y0, x0, ly, lx, g)


# -- deform_psroi_pool -------------------------------------------------------------------

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
    clamp the others into the image. Returns ``(inside, y0, x0, ly, lx, jy, jx)``."""
    if not (-0.5 <= y <= height - 0.5 and -0.5 <= x <= width - 0.5):
        return False, 0, 0, 0.0, 0.0, 0.0, 0.0
    return locate(y, x, height, width, BORDER)


@register_jitable
def psroi_box(rois, k, spatial_scale):
    """RoI k as MXNet sees it: ``(n, y_start, x_start, roi_h, roi_w)``, corners rounded to
    whole pixels and the box made inclusive (x2 = x1 is one pixel wide), at least 0.1 wide."""
    x_start = round_half_away(rois[k, 1]) * spatial_scale - 0.5
    y_start = round_half_away(rois[k, 2]) * spatial_scale - 0.5
    x_end = (round_half_away(rois[k, 3]) + 1.0) * spatial_scale - 0.5
    y_end = (round_half_away(rois[k, 4]) + 1.0) * spatial_scale - 0.5
    return int(rois[k, 0]), y_start, x_start, max(y_end - y_start, 0.1), max(x_end - x_start, 0.1)


@register_jitable
def psroi_bin(rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
              sample_per_part, channels_each_class, pooled_size, k, ctop, i, j):
    """Where bin (i, j) of output channel ctop of RoI k samples.

    Returns ``(n, channel, y_first, x_first, step_h, step_w)``: the image and input channel
    read, the first sample point (after the offset) and the spacing of the samples.
    """
    n, y_start, x_start, roi_h, roi_w = psroi_box(rois, k, spatial_scale)
    bin_h = roi_h / pooled_size
    bin_w = roi_w / pooled_size
    dx = 0.0
    dy = 0.0
    if use_trans:
        cls = ctop // channels_each_class
        part_i = i * part_size // pooled_size
        part_j = j * part_size // pooled_size
        dx = trans[k, 2 * cls, part_i, part_j] * trans_std * roi_w
        dy = trans[k, 2 * cls + 1, part_i, part_j] * trans_std * roi_h
    group_i = i * group_size // pooled_size
    group_j = j * group_size // pooled_size
    channel = (ctop * group_size + group_i) * group_size + group_j
    return (n, channel, i * bin_h + y_start + dy, j * bin_w + x_start + dx,
            bin_h / sample_per_part, bin_w / sample_per_part)


@register_jitable
def psroi_sample(y_first, x_first, step_h, step_w, ih, iw, height, width):
    """``psroi_cell`` of sample (ih, iw) of a bin."""
    return psroi_cell(y_first + ih * step_h, x_first + iw * step_w, height, width)


@register_jitable
def psroi_count(y_first, x_first, step_h, step_w, sample_per_part, height, width):
    """How many of a bin's samples are inside (the divisor of its mean)."""
    count = 0
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            if psroi_sample(y_first, x_first, step_h, step_w, ih, iw, height, width)[0]:
                count += 1
    return count


@register_jitable
def psroi_value(input, rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
                sample_per_part, channels_each_class, pooled_size, k, ctop, i, j):
    """out[k, ctop, i, j]: the mean of the bin's samples that are inside, 0 if none is."""
    H, W = input.shape[2], input.shape[3]
    n, channel, y_first, x_first, step_h, step_w = psroi_bin(
        rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size, sample_per_part,
        channels_each_class, pooled_size, k, ctop, i, j)
    total = 0.0
    count = 0
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            inside, y0, x0, ly, lx, _, _ = psroi_sample(y_first, x_first, step_h, step_w, ih, iw,
                                                        H, W)
            if inside:
                total += bilinear_value(input, n, channel, y0, x0, ly, lx)
                count += 1
    return total / count if count > 0 else 0.0


@register_jitable
def psroi_trans_grad(grad_output, input, rois, trans, spatial_scale, trans_std, group_size,
                     part_size, sample_per_part, channels_each_class, k, cls, part_i, part_j):
    """Gradients of trans[k, 2*cls, part_i, part_j] (x) and trans[k, 2*cls + 1, ...] (y).

    That pair moves every bin of part (part_i, part_j) of every output channel of class
    cls: the sum over them of ``grad / count * trans_std * roi_w * jx * dv/dlx`` (y alike).
    The count of samples inside is piecewise constant in trans and adds no term.
    """
    H, W = input.shape[2], input.shape[3]
    pooled_size = grad_output.shape[2]
    _, _, _, roi_h, roi_w = psroi_box(rois, k, spatial_scale)
    sum_y = 0.0
    sum_x = 0.0
    for ctop in range(cls * channels_each_class, (cls + 1) * channels_each_class):
        for i in range(pooled_size):
            if i * part_size // pooled_size != part_i:
                continue
            for j in range(pooled_size):
                if j * part_size // pooled_size != part_j:
                    continue
                n, channel, y_first, x_first, step_h, step_w = psroi_bin(
                    rois, trans, True, spatial_scale, trans_std, group_size, part_size,
                    sample_per_part, channels_each_class, pooled_size, k, ctop, i, j)
                count = psroi_count(y_first, x_first, step_h, step_w, sample_per_part, H, W)
                if count == 0:
                    continue
                g = grad_output[k, ctop, i, j] / count
                for ih in range(sample_per_part):
                    for iw in range(sample_per_part):
                        inside, y0, x0, ly, lx, jy, jx = psroi_sample(
                            y_first, x_first, step_h, step_w, ih, iw, H, W)
                        if inside:
                            _, v_ly, v_lx = bilinear_value_and_grad(input, n, channel, y0, x0,
                                                                    ly, lx)
                            sum_y += g * jy * v_ly
                            sum_x += g * jx * v_lx
    return scaled_grad(trans_std * roi_w, sum_x), scaled_grad(trans_std * roi_h, sum_y)


@register_jitable
def psroi_plane_grad(grad_output, rois, trans, use_trans, spatial_scale, trans_std, group_size,
                     part_size, sample_per_part, channels_each_class, n, c, grad_input):
    """grad_input[n, c] += the gradients of every sample that read image n, channel c.

    Channel c is read only by output channel ``c // G^2`` in the bins of group
    ``((c // G) % G, c % G)``; RoIs, bins and samples are added in index order.
    """
    H, W = grad_input.shape[2], grad_input.shape[3]
    pooled_size = grad_output.shape[2]
    ctop = c // (group_size * group_size)
    group_i = (c // group_size) % group_size
    group_j = c % group_size
    for k in range(rois.shape[0]):
        if int(rois[k, 0]) != n:
            continue
        for i in range(pooled_size):
            if i * group_size // pooled_size != group_i:
                continue
            for j in range(pooled_size):
                if j * group_size // pooled_size != group_j:
                    continue
                _, _, y_first, x_first, step_h, step_w = psroi_bin(
                    rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
                    sample_per_part, channels_each_class, pooled_size, k, ctop, i, j)
                count = psroi_count(y_first, x_first, step_h, step_w, sample_per_part, H, W)
                if count == 0:
                    continue
                g = grad_output[k, ctop, i, j] / count
                for ih in range(sample_per_part):
                    for iw in range(sample_per_part):
                        inside, y0, x0, ly, lx, _, _ = psroi_sample(
                            y_first, x_first, step_h, step_w, ih, iw, H, W)
                        if inside:
                            add_to_corners(grad_input, n, c, y0, x0, ly, lx, g)


# -- shared ------------------------------------------------------------------------------

@register_jitable
def add_to_corners(grad_image, n, c, y0, x0, ly, lx, g):
    """grad_image[n, c] += g times each corner's bilinear weight (corners inside only).

    Plain ``+=``: for callers that own plane (n, c). The atomic CUDA kernels use
    ``cuda.atomic.add`` on the same ``corner`` weights instead.
    """
    H, W = grad_image.shape[2], grad_image.shape[3]
    for t in range(4):
        r, s, w, _, _ = corner(t, y0, x0, ly, lx)
        if 0 <= r < H and 0 <= s < W:
            grad_image[n, c, r, s] += w * g
