"""deform_roi_pool and deform_psroi_pool on the CPU.

The maths of one bin, one output value and one image plane is ``dcn_ref/roi_sampling.py``,
the same functions the CUDA kernels call; the kernels here only walk over the elements.
Forward passes and the offset gradients loop over outputs or bins, which nobody else
writes. The input gradient is a scatter, and RoIs share images, so a loop over RoIs would
have two iterations add into the same pixel: it loops over image planes (n, c) instead,
each gathering every RoI of image n in a fixed order, so the result is deterministic.

Arrays are C-contiguous NumPy arrays, allocated by the ops; ``grad_input`` is added into.
``work`` (an estimate of the number of bilinear samples) picks the serial or the parallel
build (``compile.py``).
"""
import numpy as np
from numba import prange

from ..roi_sampling import (psroi_plane_grad, psroi_trans_grad, psroi_value, roi_align_coord_grad,
                            roi_align_plane_grad, roi_align_value)
from .compile import kernel


def _or_dummy(a, shape, like):
    """Numba kernels need an array in every argument: a small stand-in when ``a`` is None."""
    return (a, True) if a is not None else (np.zeros(shape, like.dtype), False)


# -- deform_roi_pool ----------------------------------------------------------------------

@kernel
def _roi_align_forward(input, rois, offset, mask, use_offset, use_mask, spatial_scale,
                       sampling_ratio, gamma, out):
    K, C, pooled_h, pooled_w = out.shape
    for kc in prange(K * C):  # each iteration writes only out[k, c]
        k = kc // C
        c = kc % C
        for i in range(pooled_h):
            for j in range(pooled_w):
                out[k, c, i, j] = roi_align_value(input, rois, offset, mask, use_offset, use_mask,
                                                  spatial_scale, sampling_ratio, gamma, pooled_h,
                                                  pooled_w, k, c, i, j)


@kernel
def _roi_align_input_grad(grad_output, rois, offset, mask, use_offset, use_mask, spatial_scale,
                          sampling_ratio, gamma, grad_input):
    N, C = grad_input.shape[0], grad_input.shape[1]
    for nc in prange(N * C):  # each iteration writes only grad_input[n, c]
        roi_align_plane_grad(grad_output, rois, offset, mask, use_offset, use_mask, spatial_scale,
                             sampling_ratio, gamma, nc // C, nc % C, grad_input)


@kernel
def _roi_align_coord_grad(grad_output, input, rois, offset, mask, use_offset, use_mask,
                          spatial_scale, sampling_ratio, gamma, grad_offset, grad_mask):
    K, _, pooled_h, pooled_w = grad_output.shape
    for kij in prange(K * pooled_h * pooled_w):  # each writes only bin (k, i, j)'s gradients
        k = kij // (pooled_h * pooled_w)
        i = (kij // pooled_w) % pooled_h
        j = kij % pooled_w
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
    _roi_align_forward(work, input, rois, offset, mask, use_offset, use_mask, spatial_scale,
                       sampling_ratio, gamma, out)


def deform_roi_pool_backward(grad_output, input, rois, offset, mask, spatial_scale,
                             sampling_ratio, gamma, grad_input, grad_offset, grad_mask, work,
                             deterministic=False):
    """grad_input (N, C, H, W) += the input gradient; grad_offset (K, 2, ph, pw) and grad_mask
    (K, 1, ph, pw) written when the op had an offset and a mask. Always deterministic."""
    has_coords = offset is not None or mask is not None
    offset, use_offset = _or_dummy(offset, (1, 2, 1, 1), input)
    mask, use_mask = _or_dummy(mask, (1, 1, 1, 1), input)
    _roi_align_input_grad(work, grad_output, rois, offset, mask, use_offset, use_mask,
                          spatial_scale, sampling_ratio, gamma, grad_input)
    if has_coords:
        grad_offset = grad_offset if grad_offset is not None else np.empty((1, 2, 1, 1), input.dtype)
        grad_mask = grad_mask if grad_mask is not None else np.empty((1, 1, 1, 1), input.dtype)
        _roi_align_coord_grad(work, grad_output, input, rois, offset, mask,
                              use_offset, use_mask, spatial_scale, sampling_ratio, gamma,
                              grad_offset, grad_mask)


# -- deform_psroi_pool --------------------------------------------------------------------

@kernel
def _psroi_forward(input, rois, trans, use_trans, spatial_scale, trans_std, group_size, part_size,
                   sample_per_part, channels_each_class, out):
    K, output_dim, pooled_size, _ = out.shape
    for kc in prange(K * output_dim):  # each iteration writes only out[k, ctop]
        k = kc // output_dim
        ctop = kc % output_dim
        for i in range(pooled_size):
            for j in range(pooled_size):
                out[k, ctop, i, j] = psroi_value(input, rois, trans, use_trans, spatial_scale,
                                                 trans_std, group_size, part_size,
                                                 sample_per_part, channels_each_class,
                                                 pooled_size, k, ctop, i, j)


@kernel
def _psroi_input_grad(grad_output, rois, trans, use_trans, spatial_scale, trans_std, group_size,
                      part_size, sample_per_part, channels_each_class, grad_input):
    N, C = grad_input.shape[0], grad_input.shape[1]
    for nc in prange(N * C):  # each iteration writes only grad_input[n, c]
        psroi_plane_grad(grad_output, rois, trans, use_trans, spatial_scale, trans_std,
                         group_size, part_size, sample_per_part, channels_each_class,
                         nc // C, nc % C, grad_input)


@kernel
def _psroi_trans_grad(grad_output, input, rois, trans, spatial_scale, trans_std, group_size,
                      part_size, sample_per_part, channels_each_class, grad_trans):
    K, two_classes = grad_trans.shape[0], grad_trans.shape[1]
    n_classes = two_classes // 2
    parts = part_size * part_size
    for task in prange(K * n_classes * parts):  # each writes only one (x, y) pair of grad_trans
        k = task // (n_classes * parts)
        cls = (task // parts) % n_classes
        part_i = (task % parts) // part_size
        part_j = task % part_size
        gx, gy = psroi_trans_grad(grad_output, input, rois, trans, spatial_scale, trans_std,
                                  group_size, part_size, sample_per_part, channels_each_class,
                                  k, cls, part_i, part_j)
        grad_trans[k, 2 * cls, part_i, part_j] = gx
        grad_trans[k, 2 * cls + 1, part_i, part_j] = gy


def deform_psroi_pool(input, rois, trans, spatial_scale, trans_std, group_size, part_size,
                      sample_per_part, channels_each_class, out, work):
    """Write out (K, output_dim, P, P)."""
    trans, use_trans = _or_dummy(trans, (1, 2, 1, 1), input)
    _psroi_forward(work, input, rois, trans, use_trans, spatial_scale, trans_std, group_size,
                   part_size, sample_per_part, channels_each_class, out)


def deform_psroi_pool_backward(grad_output, input, rois, trans, spatial_scale, trans_std,
                               group_size, part_size, sample_per_part, channels_each_class,
                               grad_input, grad_trans, work, deterministic=False):
    """grad_input (N, C, H, W) += the input gradient; grad_trans written when there is a
    trans. Always deterministic."""
    has_trans = trans is not None
    trans, use_trans = _or_dummy(trans, (1, 2, 1, 1), input)
    _psroi_input_grad(work, grad_output, rois, trans, use_trans, spatial_scale, trans_std,
                      group_size, part_size, sample_per_part, channels_each_class, grad_input)
    if has_trans:
        _psroi_trans_grad(work, grad_output, input, rois, trans, spatial_scale, trans_std,
                          group_size, part_size, sample_per_part, channels_each_class, grad_trans)
