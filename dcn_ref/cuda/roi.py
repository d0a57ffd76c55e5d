"""deform_roi_pool and deform_psroi_pool on the GPU: one thread per element.

The per-element maths is ``dcn_ref/roi_sampling.py``, the same functions the CPU kernels
call. Forward passes: a thread per output value. Offset (trans) and mask gradients: a
thread per bin (per trans pair), summing over what shares it, so no two threads write the
same element. The input gradient is a scatter: by default a thread per output value adds
its share to the pixels its samples read with ``cuda.atomic.add`` (fast; the order of the
additions, and so the last bits, change from run to run); with ``deterministic`` a thread
per image plane (n, c) runs the CPU's fixed-order plane loop instead (bitwise
reproducible, but only N*C threads, each walking over every RoI of its image).

Arrays are C-contiguous device arrays allocated by the ops; ``grad_input`` is added into.
"""
from numba import cuda

from ..roi_sampling import (psroi_bin, psroi_count, psroi_plane_grad, psroi_sample,
                            psroi_trans_grad, psroi_value, roi_align_bin, roi_align_coord_grad,
                            roi_align_plane_grad, roi_align_sample, roi_align_value,
                            roi_align_weight)
from ..sampling import corner
from .launch import launch, unravel


def _or_dummy(a, shape, like):
    """Kernels need an array in every argument: a small stand-in when ``a`` is None."""
    return (a, True) if a is not None else (cuda.device_array(shape, like.dtype), False)


@cuda.jit(device=True)
def _atomic_add_to_corners(grad_input, n, c, y0, x0, ly, lx, g):
    """grad_input[n, c] += g times each corner's bilinear weight, with atomics."""
    H, W = grad_input.shape[2], grad_input.shape[3]
    for t in range(4):
        r, s, w, _, _ = corner(t, y0, x0, ly, lx)
        if 0 <= r < H and 0 <= s < W:
            cuda.atomic.add(grad_input, (n, c, r, s), w * g)


# -- deform_roi_pool ----------------------------------------------------------------------

@cuda.jit
def _roi_align_forward(input, rois, offset, mask, use_offset, use_mask, spatial_scale,
                       sampling_ratio, gamma, out):
    """Thread (k, c, i, j) writes out[k, c, i, j]."""
    K, C, pooled_h, pooled_w = out.shape
    idx = cuda.grid(1)
    if idx >= K * C * pooled_h * pooled_w:
        return
    k, c, i, j = unravel(idx, C, pooled_h, pooled_w)
    out[k, c, i, j] = roi_align_value(input, rois, offset, mask, use_offset, use_mask,
                                      spatial_scale, sampling_ratio, gamma, pooled_h, pooled_w,
                                      k, c, i, j)


@cuda.jit
def _roi_align_input_grad_atomic(grad_output, rois, offset, mask, use_offset, use_mask,
                                 spatial_scale, sampling_ratio, gamma, grad_input):
    """Thread (k, c, i, j) scatters grad_output[k, c, i, j] to the pixels its bin read."""
    K, C, pooled_h, pooled_w = grad_output.shape
    H, W = grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= K * C * pooled_h * pooled_w:
        return
    k, c, i, j = unravel(idx, C, pooled_h, pooled_w)
    n, y_bin, x_bin, bin_h, bin_w, grid_h, grid_w, _, _ = roi_align_bin(
        rois, offset, use_offset, spatial_scale, sampling_ratio, gamma, pooled_h, pooled_w, k, i, j)
    g = grad_output[k, c, i, j] * roi_align_weight(mask, use_mask, grid_h, grid_w, k, i, j)
    for iy in range(grid_h):
        for ix in range(grid_w):
            inside, y0, x0, ly, lx, _, _ = roi_align_sample(y_bin, x_bin, bin_h, bin_w, grid_h,
                                                            grid_w, iy, ix, H, W)
            if inside:
                _atomic_add_to_corners(grad_input, n, c, y0, x0, ly, lx, g)


@cuda.jit
def _roi_align_input_grad_planes(grad_output, rois, offset, mask, use_offset, use_mask,
                                 spatial_scale, sampling_ratio, gamma, grad_input):
    """Thread (n, c) adds everything plane grad_input[n, c] receives, in a fixed order."""
    N, C = grad_input.shape[0], grad_input.shape[1]
    idx = cuda.grid(1)
    if idx >= N * C:
        return
    roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, spatial_scale,
                         sampling_ratio, gamma, idx // C, idx % C, grad_input)


@cuda.jit
def _roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask,
                          spatial_scale, sampling_ratio, gamma, grad_offset, grad_mask):
    """Thread (k, i, j) writes the offset and mask gradients of bin (i, j) of RoI k."""
    K, _, pooled_h, pooled_w = grad_output.shape
    idx = cuda.grid(1)
    if idx >= K * pooled_h * pooled_w:
        return
    _, k, i, j = unravel(idx, K, pooled_h, pooled_w)
    gx, gy, gm = roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset,
                                      use_mask, spatial_scale, sampling_ratio, gamma, k, i, j)
    if use_offset:
        grad_offset[k, 0, i, j] = gx
        grad_offset[k, 1, i, j] = gy
    if use_mask:
        grad_mask[k, 0, i, j] = gm


def deform_roi_pool(input, rois, offset, mask, spatial_scale, sampling_ratio, gamma, out, work):
    """Write out (K, C, ph, pw)."""
    offset, use_offset = _or_dummy(offset, (1, 2, 1, 1), input)
    mask, use_mask = _or_dummy(mask, (1, 1, 1, 1), input)
    launch(_roi_align_forward, out.size, input, rois, offset, mask, use_offset, use_mask,
           spatial_scale, sampling_ratio, gamma, out)


def deform_roi_pool_backward(grad_output, input, rois, offset, mask, spatial_scale,
                             sampling_ratio, gamma, grad_input, grad_offset, grad_mask, work,
                             deterministic=False):
    """grad_input (N, C, H, W) += the input gradient (atomics, or with ``deterministic`` a
    fixed-order pass per plane); grad_offset and grad_mask written when given."""
    has_coords = offset is not None or mask is not None
    offset, use_offset = _or_dummy(offset, (1, 2, 1, 1), input)
    mask, use_mask = _or_dummy(mask, (1, 1, 1, 1), input)
    args = (grad_output, rois, offset, mask, use_offset, use_mask, spatial_scale, sampling_ratio,
            gamma, grad_input)
    if deterministic:
        launch(_roi_align_input_grad_planes, grad_input.shape[0] * grad_input.shape[1], *args)
    else:
        launch(_roi_align_input_grad_atomic, grad_output.size, *args)
    if has_coords:
        grad_offset = grad_offset if grad_offset is not None else cuda.device_array(
            (1, 2, 1, 1), input.dtype)
        grad_mask = grad_mask if grad_mask is not None else cuda.device_array(
            (1, 1, 1, 1), input.dtype)
        K, _, pooled_h, pooled_w = grad_output.shape
        launch(_roi_align_coord_grad, K * pooled_h * pooled_w, grad_output, input, rois, offset,
               mask, use_offset, use_mask, spatial_scale, sampling_ratio, gamma, grad_offset,
               grad_mask)


# -- deform_psroi_pool --------------------------------------------------------------------

@cuda.jit
def _psroi_forward(input, rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
                   sample_per_part, channels_each_class, out):
    """Thread (k, ctop, i, j) writes out[k, ctop, i, j]."""
    K, output_dim, pooled_size, _ = out.shape
    idx = cuda.grid(1)
    if idx >= K * output_dim * pooled_size * pooled_size:
        return
    k, ctop, i, j = unravel(idx, output_dim, pooled_size, pooled_size)
    out[k, ctop, i, j] = psroi_value(input, rois, trans, use_trans, spatial_scale, trans_std,
                                     group_size, part_size, sample_per_part, channels_each_class,
                                     pooled_size, k, ctop, i, j)


@cuda.jit
def _psroi_input_grad_atomic(grad_output, rois, trans, use_trans, spatial_scale, trans_std,
                             group_size, part_size, sample_per_part, channels_each_class,
                             grad_input):
    """Thread (k, ctop, i, j) scatters grad_output[k, ctop, i, j] to the pixels it read."""
    K, output_dim, pooled_size, _ = grad_output.shape
    H, W = grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= K * output_dim * pooled_size * pooled_size:
        return
    k, ctop, i, j = unravel(idx, output_dim, pooled_size, pooled_size)
    n, channel, y_first, x_first, step_h, step_w = psroi_bin(
        rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size, sample_per_part,
        channels_each_class, pooled_size, k, ctop, i, j)
    count = psroi_count(y_first, x_first, step_h, step_w, sample_per_part, H, W)
    if count == 0:
        return
    g = grad_output[k, ctop, i, j] / count
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            inside, y0, x0, ly, lx, _, _ = psroi_sample(y_first, x_first, step_h, step_w, ih, iw,
                                                        H, W)
            if inside:
                _atomic_add_to_corners(grad_input, n, channel, y0, x0, ly, lx, g)


@cuda.jit
def _psroi_input_grad_planes(grad_output, rois, trans, use_trans, spatial_scale, trans_std,
                             group_size, part_size, sample_per_part, channels_each_class,
                             grad_input):
    """Thread (n, c) adds everything plane grad_input[n, c] receives, in a fixed order."""
    N, C = grad_input.shape[0], grad_input.shape[1]
    idx = cuda.grid(1)
    if idx >= N * C:
        return
    psroi_plane_grad(grad_output, rois, trans, use_trans, spatial_scale, trans_std, group_size,
                     part_size, sample_per_part, channels_each_class, idx // C, idx % C,
                     grad_input)


@cuda.jit
def _psroi_trans_grad(grad_output, input, rois, trans, spatial_scale, trans_std, group_size,
                      part_size, sample_per_part, channels_each_class, grad_trans):
    """Thread (k, cls, part_i, part_j) writes the (x, y) pair of grad_trans it owns."""
    K, two_classes = grad_trans.shape[0], grad_trans.shape[1]
    n_classes = two_classes // 2
    idx = cuda.grid(1)
    if idx >= K * n_classes * part_size * part_size:
        return
    k, cls, part_i, part_j = unravel(idx, n_classes, part_size, part_size)
    gx, gy = psroi_trans_grad(grad_output, input, rois, trans, spatial_scale, trans_std,
                              group_size, part_size, sample_per_part, channels_each_class,
                              k, cls, part_i, part_j)
    grad_trans[k, 2 * cls, part_i, part_j] = gx
    grad_trans[k, 2 * cls + 1, part_i, part_j] = gy


def deform_psroi_pool(input, rois, trans, spatial_scale, trans_std, group_size, part_size,
                      sample_per_part, channels_each_class, out, work):
    """Write out (K, output_dim, P, P)."""
    trans, use_trans = _or_dummy(trans, (1, 2, 1, 1), input)
    launch(_psroi_forward, out.size, input, rois, trans, use_trans, spatial_scale, trans_std,
           group_size, part_size, sample_per_part, channels_each_class, out)


def deform_psroi_pool_backward(grad_output, input, rois, trans, spatial_scale, trans_std,
                               group_size, part_size, sample_per_part, channels_each_class,
                               grad_input, grad_trans, work, deterministic=False):
    """grad_input (N, C, H, W) += the input gradient (atomics, or with ``deterministic`` a
    fixed-order pass per plane); grad_trans written when there is a trans."""
    has_trans = trans is not None
    trans, use_trans = _or_dummy(trans, (1, 2, 1, 1), input)
    args = (grad_output, rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
            sample_per_part, channels_each_class, grad_input)
    if deterministic:
        launch(_psroi_input_grad_planes, grad_input.shape[0] * grad_input.shape[1], *args)
    else:
        launch(_psroi_input_grad_atomic, grad_output.size, *args)
    if has_trans:
        launch(_psroi_trans_grad, grad_trans.shape[0] * grad_trans.shape[1] // 2 * part_size ** 2,
               grad_output, input, rois, trans, spatial_scale, trans_std, group_size, part_size,
               sample_per_part, channels_each_class, grad_trans)
