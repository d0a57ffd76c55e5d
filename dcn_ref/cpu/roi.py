"""deform_roi_pool and deform_psroi_pool on the CPU.

The maths of one bin, one output value and one image plane is ``dcn_ref/roi_sampling.py``
and ``dcn_ref/psroi_sampling.py``, the same functions the CUDA kernels call; the kernels
here only walk over the elements. Forward passes and the offset gradients loop over outputs
or bins, which nobody else writes. The input gradient is a scatter, and RoIs share images,
so a loop over RoIs would have two iterations add into the same pixel: it loops over image
planes (n, c) instead, each gathering every RoI of image n in a fixed order, so the result
is deterministic.

Arrays are C-contiguous NumPy arrays, allocated by the ops; ``grad_input`` is added into.
The pooling parameters come as a ``RoIPoolGeometry`` or ``PSRoIPoolGeometry``; the number
of bilinear samples they imply picks the serial or the parallel build (``compile.py``).
"""
import numpy as np
from numba import prange

from ..kernel_args import or_stand_in
from ..psroi_sampling import psroi_plane_grad, psroi_trans_grad, psroi_value
from ..roi_sampling import roi_align_coord_grad, roi_align_plane_grad, roi_align_value
from .compile import kernel


# -- deform_roi_pool ----------------------------------------------------------------------

@kernel
def _roi_align_forward(input, rois, offset, mask, use_offset, use_mask, geometry, out):
    R, C, pooled_h, pooled_w = out.shape
    for rc in prange(R * C):  # each iteration writes only out[r, c]
        r = rc // C
        c = rc % C
        for i in range(pooled_h):
            for j in range(pooled_w):
                out[r, c, i, j] = roi_align_value(input, rois, offset, mask, use_offset, use_mask,
                                                  geometry, r, c, i, j)


@kernel
def _roi_align_input_grad(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                          grad_input):
    N, C = grad_input.shape[0], grad_input.shape[1]
    for nc in prange(N * C):  # each iteration writes only grad_input[n, c]
        roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                             nc // C, nc % C, grad_input)


@kernel
def _roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask, geometry,
                          grad_offset, grad_mask):
    R, _, pooled_h, pooled_w = grad_output.shape
    for rij in prange(R * pooled_h * pooled_w):  # each writes only bin (r, i, j)'s gradients
        r = rij // (pooled_h * pooled_w)
        i = (rij // pooled_w) % pooled_h
        j = rij % pooled_w
        d_dx, d_dy, d_mask = roi_align_coord_grad(grad_output, input, rois, offset, mask,
                                                  use_offset, use_mask, geometry, r, i, j)
        if use_offset:
            grad_offset[r, 0, i, j] = d_dx
            grad_offset[r, 1, i, j] = d_dy
        if use_mask:
            grad_mask[r, 0, i, j] = d_mask


def _roi_align_work(out, geometry):
    return out.size * geometry.max_bin_samples


def deform_roi_pool(input, rois, offset, mask, geometry, out):
    """Write out (R, C, ph, pw)."""
    offset, use_offset = or_stand_in(offset, (1, 2, 1, 1), input, np.empty)
    mask, use_mask = or_stand_in(mask, (1, 1, 1, 1), input, np.empty)
    _roi_align_forward(input, rois, offset, mask, use_offset, use_mask, geometry, out,
                       work=_roi_align_work(out, geometry))


def deform_roi_pool_backward(grad_output, input, rois, offset, mask, geometry, grad_input,
                             grad_offset, grad_mask, deterministic=False):
    """grad_input (N, C, H, W) += the input gradient; grad_offset (R, 2, ph, pw) and grad_mask
    (R, 1, ph, pw) written when the op had an offset and a mask. Always deterministic."""
    work = _roi_align_work(grad_output, geometry)
    has_coords = offset is not None or mask is not None
    offset, use_offset = or_stand_in(offset, (1, 2, 1, 1), input, np.empty)
    mask, use_mask = or_stand_in(mask, (1, 1, 1, 1), input, np.empty)
    _roi_align_input_grad(grad_output, rois, offset, mask, use_offset, use_mask, geometry,
                          grad_input, work=work)
    if has_coords:
        grad_offset, _ = or_stand_in(grad_offset, (1, 2, 1, 1), input, np.empty)
        grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1, 1), input, np.empty)
        _roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask,
                              geometry, grad_offset, grad_mask, work=work)


# -- deform_psroi_pool --------------------------------------------------------------------

@kernel
def _psroi_forward(input, rois, trans, use_trans, geometry, out):
    R, output_dim, pooled_size, _ = out.shape
    for rc in prange(R * output_dim):  # each iteration writes only out[r, ctop]
        r = rc // output_dim
        ctop = rc % output_dim
        for i in range(pooled_size):
            for j in range(pooled_size):
                out[r, ctop, i, j] = psroi_value(input, rois, trans, use_trans, geometry, r, ctop,
                                                 i, j)


@kernel
def _psroi_input_grad(grad_output, rois, trans, use_trans, geometry, grad_input):
    N, C = grad_input.shape[0], grad_input.shape[1]
    for nc in prange(N * C):  # each iteration writes only grad_input[n, c]
        psroi_plane_grad(grad_output, rois, trans, use_trans, geometry, nc // C, nc % C,
                         grad_input)


@kernel
def _psroi_trans_grad(grad_output, input, rois, trans, geometry, grad_trans):
    R, two_classes = grad_trans.shape[0], grad_trans.shape[1]
    n_classes = two_classes // 2
    part_size = geometry.part_size
    parts = part_size * part_size
    for task in prange(R * n_classes * parts):  # each writes only one (x, y) pair of grad_trans
        r = task // (n_classes * parts)
        cls = (task // parts) % n_classes
        part_i = (task % parts) // part_size
        part_j = task % part_size
        d_dx, d_dy = psroi_trans_grad(grad_output, input, rois, trans, geometry, r, cls, part_i,
                                      part_j)
        grad_trans[r, 2 * cls, part_i, part_j] = d_dx
        grad_trans[r, 2 * cls + 1, part_i, part_j] = d_dy


def _psroi_work(out, geometry):
    return out.size * geometry.sample_per_part ** 2


def deform_psroi_pool(input, rois, trans, geometry, out):
    """Write out (R, output_dim, pooled_size, pooled_size)."""
    trans, use_trans = or_stand_in(trans, (1, 2, 1, 1), input, np.empty)
    _psroi_forward(input, rois, trans, use_trans, geometry, out, work=_psroi_work(out, geometry))


def deform_psroi_pool_backward(grad_output, input, rois, trans, geometry, grad_input, grad_trans,
                               deterministic=False):
    """grad_input (N, C, H, W) += the input gradient; grad_trans written when there is a
    trans. Always deterministic."""
    work = _psroi_work(grad_output, geometry)
    has_trans = trans is not None
    trans, use_trans = or_stand_in(trans, (1, 2, 1, 1), input, np.empty)
    _psroi_input_grad(grad_output, rois, trans, use_trans, geometry, grad_input, work=work)
    if has_trans:
        _psroi_trans_grad(grad_output, input, rois, trans, geometry, grad_trans, work=work)
