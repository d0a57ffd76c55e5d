"""deform_roi_pool and deform_psroi_pool on the GPU: one thread per element.

The per-element maths is ``dcn_ref/roi_sampling.py`` and ``dcn_ref/psroi_sampling.py``,
the same functions the CPU kernels call. Forward passes: a thread per output value. Offset
(trans) and mask gradients: a thread per bin (per trans pair), summing over what shares
it, so no two threads write the same element. The input gradient is a scatter: by default
a thread per output value adds its share to the pixels its samples read with
``cuda.atomic.add`` (fast; the order of the additions, and so the last bits, change from
run to run); with ``deterministic`` a thread per image plane (n, c) runs the CPU's
fixed-order plane loop instead (bitwise reproducible, but only N*C threads, each walking
over every RoI of its image).

Arrays are C-contiguous device arrays allocated by the ops; ``grad_input`` is added into.
"""
from numba import cuda

from ..kernel_args import or_stand_in
from ..psroi_sampling import (psroi_bin, psroi_count, psroi_plane_grad, psroi_sample,
                              psroi_trans_grad, psroi_value)
from ..roi_sampling import (roi_align_bin, roi_align_coord_grad, roi_align_plane_grad,
                            roi_align_sample, roi_align_value, roi_align_weight)
from ..sampling import corner
from .launch import launch, unravel
from .memory import empty


@cuda.jit(device=True)
def _atomic_add_to_corners(grad_input, n, c, cell, g):
    """grad_input[n, c] += g times each corner's bilinear weight, with atomics."""
    H, W = grad_input.shape[2], grad_input.shape[3]
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < H and 0 <= s < W:
            cuda.atomic.add(grad_input, (n, c, r, s), w * g)


# -- deform_roi_pool ----------------------------------------------------------------------

@cuda.jit
def _roi_align_forward(input, rois, offset, mask, use_offset, use_mask, geometry, out):
    """Thread (r, c, i, j) writes out[r, c, i, j]."""
    R, C, pooled_h, pooled_w = out.shape
    idx = cuda.grid(1)
    if idx >= R * C * pooled_h * pooled_w:
        return
    r, c, i, j = unravel(idx, C, pooled_h, pooled_w)
    out[r, c, i, j] = roi_align_value(input, rois, offset, mask, use_offset, use_mask, geometry,
                                      r, c, i, j)


@cuda.jit
def _roi_align_input_grad_atomic(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                                 grad_input):
    """Thread (r, c, i, j) scatters grad_output[r, c, i, j] to the pixels its bin read."""
    R, C, pooled_h, pooled_w = grad_output.shape
    H, W = grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= R * C * pooled_h * pooled_w:
        return
    r, c, i, j = unravel(idx, C, pooled_h, pooled_w)
    bin = roi_align_bin(rois, offset, use_offset, geometry, r, i, j)
    g = grad_output[r, c, i, j] * roi_align_weight(mask, use_mask, bin, r, i, j)
    for iy in range(bin.grid_h):
        for ix in range(bin.grid_w):
            cell = roi_align_sample(bin, iy, ix, H, W)
            if cell.inside:
                _atomic_add_to_corners(grad_input, bin.n, c, cell, g)


@cuda.jit
def _roi_align_input_grad_planes(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                                 grad_input):
    """Thread (n, c) adds everything plane grad_input[n, c] receives, in a fixed order."""
    N, C = grad_input.shape[0], grad_input.shape[1]
    idx = cuda.grid(1)
    if idx >= N * C:
        return
    roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                         idx // C, idx % C, grad_input)


@cuda.jit
def _roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask, geometry,
                          grad_offset, grad_mask):
    """Thread (r, i, j) writes the offset and mask gradients of bin (i, j) of RoI r."""
    R, _, pooled_h, pooled_w = grad_output.shape
    idx = cuda.grid(1)
    if idx >= R * pooled_h * pooled_w:
        return
    _, r, i, j = unravel(idx, R, pooled_h, pooled_w)
    d_dx, d_dy, d_mask = roi_align_coord_grad(grad_output, input, rois, offset, mask,
                                              use_offset, use_mask, geometry, r, i, j)
    if use_offset:
        grad_offset[r, 0, i, j] = d_dx
        grad_offset[r, 1, i, j] = d_dy
    if use_mask:
        grad_mask[r, 0, i, j] = d_mask


def deform_roi_pool(input, rois, offset, mask, geometry, out):
    """Write out (R, C, ph, pw)."""
    offset, use_offset = or_stand_in(offset, (1, 2, 1, 1), input, empty)
    mask, use_mask = or_stand_in(mask, (1, 1, 1, 1), input, empty)
    launch(_roi_align_forward, out.size, input, rois, offset, mask, use_offset, use_mask,
           geometry, out)


def deform_roi_pool_backward(grad_output, input, rois, offset, mask, geometry, grad_input,
                             grad_offset, grad_mask, deterministic=False):
    """grad_input (N, C, H, W) += the input gradient (atomics, or with ``deterministic`` a
    fixed-order pass per plane); grad_offset and grad_mask written when given."""
    has_coords = offset is not None or mask is not None
    offset, use_offset = or_stand_in(offset, (1, 2, 1, 1), input, empty)
    mask, use_mask = or_stand_in(mask, (1, 1, 1, 1), input, empty)
    args = (grad_output, rois, offset, mask, use_offset, use_mask, geometry, grad_input)
    if deterministic:
        launch(_roi_align_input_grad_planes, grad_input.shape[0] * grad_input.shape[1], *args)
    else:
        launch(_roi_align_input_grad_atomic, grad_output.size, *args)
    if has_coords:
        grad_offset, _ = or_stand_in(grad_offset, (1, 2, 1, 1), input, empty)
        grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1, 1), input, empty)
        R, _, pooled_h, pooled_w = grad_output.shape
        launch(_roi_align_coord_grad, R * pooled_h * pooled_w, grad_output, input, rois, offset,
               mask, use_offset, use_mask, geometry, grad_offset, grad_mask)


# -- deform_psroi_pool --------------------------------------------------------------------

@cuda.jit
def _psroi_forward(input, rois, trans, use_trans, geometry, out):
    """Thread (r, ctop, i, j) writes out[r, ctop, i, j]."""
    R, output_dim, pooled_size, _ = out.shape
    idx = cuda.grid(1)
    if idx >= R * output_dim * pooled_size * pooled_size:
        return
    r, ctop, i, j = unravel(idx, output_dim, pooled_size, pooled_size)
    out[r, ctop, i, j] = psroi_value(input, rois, trans, use_trans, geometry, r, ctop, i, j)


@cuda.jit
def _psroi_input_grad_atomic(grad_output, rois, trans, use_trans, geometry, grad_input):
    """Thread (r, ctop, i, j) scatters grad_output[r, ctop, i, j] to the pixels it read."""
    R, output_dim, pooled_size, _ = grad_output.shape
    H, W = grad_input.shape[2], grad_input.shape[3]
    idx = cuda.grid(1)
    if idx >= R * output_dim * pooled_size * pooled_size:
        return
    r, ctop, i, j = unravel(idx, output_dim, pooled_size, pooled_size)
    bin = psroi_bin(rois, trans, use_trans, geometry, r, ctop, i, j)
    sample_per_part = geometry.sample_per_part
    count = psroi_count(bin, sample_per_part, H, W)
    if count == 0:
        return
    g = grad_output[r, ctop, i, j] / count
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            cell = psroi_sample(bin, ih, iw, H, W)
            if cell.inside:
                _atomic_add_to_corners(grad_input, bin.n, bin.channel, cell, g)


@cuda.jit
def _psroi_input_grad_planes(grad_output, rois, trans, use_trans, geometry, grad_input):
    """Thread (n, c) adds everything plane grad_input[n, c] receives, in a fixed order."""
    N, C = grad_input.shape[0], grad_input.shape[1]
    idx = cuda.grid(1)
    if idx >= N * C:
        return
    psroi_plane_grad(grad_output, rois, trans, use_trans, geometry, idx // C, idx % C, grad_input)


@cuda.jit
def _psroi_trans_grad(grad_output, input, rois, trans, geometry, grad_trans):
    """Thread (r, cls, part_i, part_j) writes the (x, y) pair of grad_trans it owns."""
    R, two_classes = grad_trans.shape[0], grad_trans.shape[1]
    n_classes = two_classes // 2
    part_size = geometry.part_size
    idx = cuda.grid(1)
    if idx >= R * n_classes * part_size * part_size:
        return
    r, cls, part_i, part_j = unravel(idx, n_classes, part_size, part_size)
    d_dx, d_dy = psroi_trans_grad(grad_output, input, rois, trans, geometry, r, cls, part_i, part_j)
    grad_trans[r, 2 * cls, part_i, part_j] = d_dx
    grad_trans[r, 2 * cls + 1, part_i, part_j] = d_dy


def deform_psroi_pool(input, rois, trans, geometry, out):
    """Write out (R, output_dim, pooled_size, pooled_size)."""
    trans, use_trans = or_stand_in(trans, (1, 2, 1, 1), input, empty)
    launch(_psroi_forward, out.size, input, rois, trans, use_trans, geometry, out)


def deform_psroi_pool_backward(grad_output, input, rois, trans, geometry, grad_input, grad_trans,
                               deterministic=False):
    """grad_input (N, C, H, W) += the input gradient (atomics, or with ``deterministic`` a
    fixed-order pass per plane); grad_trans written when there is a trans."""
    has_trans = trans is not None
    trans, use_trans = or_stand_in(trans, (1, 2, 1, 1), input, empty)
    args = (grad_output, rois, trans, use_trans, geometry, grad_input)
    if deterministic:
        launch(_psroi_input_grad_planes, grad_input.shape[0] * grad_input.shape[1], *args)
    else:
        launch(_psroi_input_grad_atomic, grad_output.size, *args)
    if has_trans:
        launch(_psroi_trans_grad, grad_trans.shape[0] * grad_trans.shape[1] // 2
               * geometry.part_size ** 2, grad_output, input, rois, trans, geometry, grad_trans)
