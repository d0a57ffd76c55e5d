"""The CPU target: Numba kernels and NumPy/BLAS matrix products.

Every target module (this one and ``dcn_ref.cuda``) offers the same functions, so the ops
in ``dcn_ref.ops`` are written once:

    memory          to_target, to_host, empty, zeros
    sampling engine deform_im2col, sample_backward (planar.py), for bilinear_sample
                    and offset_sample
    convolutions    conv2d, conv2d_backward, deform_conv2d, deform_conv2d_backward
                    (conv.py: channels-last columns and batch-wide GEMMs), and im2col,
                    col2im in the textbook layout for dcn_ref.ops.im2col
    RoI pooling     deform_roi_pool, deform_roi_pool_backward, deform_psroi_pool,
                    deform_psroi_pool_backward (roi.py)
    DCNv3/DCNv4     dcnv3, dcnv3_backward (dcnv3_kernels.py: channels last, PointGeometry)

Arrays are C-contiguous NumPy arrays. On the CPU every result is deterministic, so
``deterministic`` is accepted and ignored.
"""
import numpy as np

from . import columns as _columns
from . import dcnv3_kernels as _dcnv3
from . import planar as _planar
from .conv import _channels_last
from .conv import conv2d, deform_conv2d  # noqa: F401  (part of the target's interface)
from .conv import conv2d_backward as _conv2d_backward
from .conv import deform_conv2d_backward as _deform_conv2d_backward
from .roi import (deform_psroi_pool, deform_psroi_pool_backward, deform_roi_pool,  # noqa: F401
                  deform_roi_pool_backward)

name = "cpu"


# -- memory ---------------------------------------------------------------------------

def to_target(x):
    """A C-contiguous, writable array of the target (the same array when it already is one).

    Read-only inputs (memory maps, ``np.broadcast_to`` views, arrays flagged read-only) are
    copied: Numba types a read-only array apart from a writable one, so passing one as is
    would compile every kernel again for each mix of read-only arguments. The kernels never
    write their inputs either way.
    """
    x = np.ascontiguousarray(x)
    return x if x.flags.writeable else x.copy()


def to_host(x):
    return x


def empty(shape, dtype):
    return np.empty(shape, dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype)


def _mask_or_dummy(mask, like):
    """Numba kernels need an array in every argument: a 1x1x1 stand-in when there is no mask."""
    return (mask, True) if mask is not None else (np.zeros((1, 1, 1), like.dtype), False)


# -- the sampling engine (layouts in dcn_ref/sampling.py) -------------------------------
# Outputs are allocated by the caller; sample_backward adds into grad_image.

def deform_im2col(image, offset, mask, mode, grid, columns):
    """columns (Q, Cq, K, L) = samples of image (Q, Cq, H, W) at offset (Q, K, 2, L)."""
    mask, use_mask = _mask_or_dummy(mask, image)
    _planar.deform_im2col(columns.size, image, offset, mask, use_mask, mode, tuple(grid), columns)


def sample_backward(grad_columns, image, offset, mask, mode, grid, grad_image, grad_offset,
                    grad_mask, deterministic=False):
    """grad_image (Q, Cq, H, W) += the image gradient of deform_im2col; grad_offset
    (Q, K, 2, L) and, when there is a mask, grad_mask (Q, K, L) written."""
    mask, use_mask = _mask_or_dummy(mask, image)
    if grad_mask is None:
        grad_mask = np.empty((1, 1, 1), image.dtype)
    _planar.deform_backward(grad_columns.size, grad_columns, image, offset, mask, use_mask, mode,
                            tuple(grid), grad_image, grad_offset, grad_mask)


# -- convolutions ----------------------------------------------------------------------

def im2col(x, grid):
    """columns (N, C, K, L) in the textbook layout (the kernels' own is channels last)."""
    columns = np.empty((1, x.shape[0], grid[2] * grid[3], grid[0] * grid[1], x.shape[1]), x.dtype)
    _columns.im2col(columns.size, _channels_last(x), x.shape[2], x.shape[3], tuple(grid), columns)
    return np.ascontiguousarray(columns[0].transpose(0, 3, 2, 1))


def col2im(columns, grid, input_shape):
    """(N, C, H, W): columns (N, C, K, L) added back to the pixels they came from."""
    N, C, H, W = input_shape
    grad_x_cl = np.zeros((N, H * W + 1, C), columns.dtype)
    channels_last = np.ascontiguousarray(columns.transpose(0, 3, 2, 1))[None]   # (1, N, L, K, C)
    _columns.col2im(columns.size, channels_last, H, W, tuple(grid), grad_x_cl)
    return np.ascontiguousarray(grad_x_cl[:, : H * W].transpose(0, 2, 1)).reshape(input_shape)


def conv2d_backward(grad_out, x, weight, has_bias, groups, grid, deterministic=False):
    """(grad_input, grad_weight, grad_bias or None)."""
    return _conv2d_backward(grad_out, x, weight, has_bias, groups, grid)


def deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, groups, G, grid, out_hw,
                           deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None)."""
    return _deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, groups, G, grid,
                                   out_hw)


# -- DCNv3 / DCNv4 (layouts in cpu/dcnv3_kernels.py and geometry.py) ---------------------

def _point_work(input, geometry):
    return input.shape[0] * geometry.out_h * geometry.out_w * geometry.points * input.shape[3]


def dcnv3(input, offset, mask, geometry):
    """out (N, H_out, W_out, C): the weighted samples of input (N, H, W, C)."""
    out = np.empty((input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]), input.dtype)
    _dcnv3.dcnv3_forward(_point_work(input, geometry), input, offset, mask, geometry, out)
    return out


def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask,
                   deterministic=False):
    """grad_input += the input gradient; every point's entries of grad_offset and grad_mask
    (shaped like offset and mask, possibly the same array) written."""
    _dcnv3.dcnv3_backward(_point_work(input, geometry), grad_out, input, offset, mask, geometry,
                          grad_input, grad_offset, grad_mask)
