"""The CPU target: Numba kernels and NumPy/BLAS matrix products.

Every target module (this one and ``dcn_ref.cuda``) offers the functions of the protocol
``dcn_ref.targets.Target``, with the same parameters, so the ops in ``dcn_ref.ops`` are
written once; the geometry of a call comes as a NamedTuple of ``dcn_ref/geometry.py``:

    memory          to_target, to_host, empty, zeros
    sampling engine deform_im2col, sample_backward (planar.py), for bilinear_sample
                    and offset_sample
    convolutions    conv2d, conv2d_backward, deform_conv2d, deform_conv2d_backward
                    (conv.py: channels-last columns and batch-wide GEMMs), and im2col,
                    col2im in the textbook layout for dcn_ref.ops.im2col
    RoI pooling     deform_roi_pool, deform_roi_pool_backward, deform_psroi_pool,
                    deform_psroi_pool_backward (roi.py)
    DCNv3/DCNv4     dcnv3, dcnv3_backward (dcnv3_kernels.py: channels last, PointGeometry)
    forward mode,   tangent_im2col, sample_backward_backward, dcnv3_jvp,
    second order    dcnv3_backward_backward (kernels in second_order.py), and
                    deform_conv2d_jvp, deform_conv2d_backward_backward (conv.py)

Arrays are C-contiguous NumPy arrays. On the CPU every result is deterministic, so
``deterministic`` is accepted and ignored.
"""
import numpy as np

from ..kernel_args import or_stand_in
from . import columns as _columns
from . import dcnv3_kernels as _dcnv3
from . import planar as _planar
from . import second_order as _second
from .conv import channels_last
from .conv import (conv2d, conv2d_backward, deform_conv2d,  # noqa: F401  (the target's interface)
                   deform_conv2d_backward, deform_conv2d_backward_backward, deform_conv2d_jvp)
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
    """The array itself: the CPU target's arrays are NumPy arrays."""
    return x


def empty(shape, dtype):
    """An uninitialised array of the target."""
    return np.empty(shape, dtype)


def zeros(shape, dtype):
    """An array of the target filled with zeros."""
    return np.zeros(shape, dtype)


# -- the sampling engine (layouts in dcn_ref/sampling.py) -------------------------------
# Outputs are allocated by the caller; sample_backward adds into grad_image.

def deform_im2col(image, offset, mask, mode, geometry, columns):
    """columns (Q, Cq, K, L) = samples of image (Q, Cq, H, W) at offset (Q, K, 2, L)."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, np.empty)
    _planar.deform_im2col(image, offset, mask, use_mask, mode, geometry, columns,
                          work=columns.size)


def sample_backward(grad_columns, image, offset, mask, mode, geometry, grad_image, grad_offset,
                    grad_mask, deterministic=False):
    """grad_image (Q, Cq, H, W) += the image gradient of deform_im2col; grad_offset
    (Q, K, 2, L) and, when there is a mask, grad_mask (Q, K, L) written."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, np.empty)
    grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1), image, np.empty)
    _planar.deform_backward(grad_columns, image, offset, mask, use_mask, mode, geometry,
                            grad_image, grad_offset, grad_mask, work=grad_columns.size)


# -- convolutions in the textbook layout, for dcn_ref.ops.im2col -------------------------

def im2col(x, geometry):
    """columns (N, C, K, L) in the textbook layout (the kernels' own is channels last)."""
    K, L = geometry.taps, geometry.pixels
    N, C = x.shape[:2]
    columns = np.empty((1, N * L, K, C), x.dtype)
    _columns.im2col(channels_last(x), x.shape[2], x.shape[3], geometry, columns,
                    work=columns.size)
    return np.ascontiguousarray(columns.reshape(N, L, K, C).transpose(0, 3, 2, 1))


def col2im(columns, geometry, input_shape, deterministic=True):
    """(N, C, H, W): columns (N, C, K, L) added back to the pixels they came from."""
    N, C, H, W = input_shape
    K, L = columns.shape[2], columns.shape[3]
    grad_x_cl = np.zeros((N, H * W + 1, C), columns.dtype)
    columns_cl = np.ascontiguousarray(columns.transpose(0, 3, 2, 1)).reshape(1, N * L, K, C)
    _columns.col2im(columns_cl, H, W, geometry, grad_x_cl, work=columns.size)
    return np.ascontiguousarray(grad_x_cl[:, : H * W].transpose(0, 2, 1)).reshape(input_shape)


# -- DCNv3 / DCNv4 (layouts in cpu/dcnv3_kernels.py and geometry.py) ---------------------

def _point_work(input, geometry):
    return input.shape[0] * geometry.out_h * geometry.out_w * geometry.points * input.shape[3]


def dcnv3(input, offset, mask, geometry):
    """out (N, H_out, W_out, C): the weighted samples of input (N, H, W, C)."""
    out = np.empty((input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]), input.dtype)
    _dcnv3.dcnv3_forward(input, offset, mask, geometry, out, work=_point_work(input, geometry))
    return out


def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask,
                   deterministic=False):
    """grad_input += the input gradient; every point's entries of grad_offset and grad_mask
    (shaped like offset and mask, possibly the same array) written."""
    _dcnv3.dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset,
                          grad_mask, work=_point_work(input, geometry))


# -- forward mode and second derivatives (second_order.py) ---------------------------------
# The tangents of offsets and masks are arrays (zeros where nothing moves; mask_dot is
# read only when there is a mask); the image's tangent may be None.

def tangent_im2col(image, offset, mask, mode, geometry, image_dot, offset_dot, mask_dot,
                   columns_dot):
    """columns_dot (Q, Cq, K, L) = the tangent of deform_im2col's columns along image_dot,
    offset_dot and mask_dot."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, np.empty)
    mask_dot, _ = or_stand_in(mask_dot, (1, 1, 1), image, np.empty)
    image_dot, use_image_dot = or_stand_in(image_dot, (1, 1, 1, 1), image, np.empty)
    _second.tangent_im2col(image, image_dot, use_image_dot, offset, mask, use_mask, offset_dot,
                           mask_dot, mode, geometry, columns_dot, work=columns_dot.size)


def sample_backward_backward(grad_columns, image, offset, mask, mode, geometry, image_dot,
                             offset_dot, mask_dot, grad_image, grad_offset, grad_mask,
                             deterministic=False):
    """grad_image, grad_offset and, when there is a mask, grad_mask += the gradients of
    ``<grad_columns, columns_dot>`` (columns_dot as in tangent_im2col)."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, np.empty)
    mask_dot, _ = or_stand_in(mask_dot, (1, 1, 1), image, np.empty)
    grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1), image, np.empty)
    image_dot, use_image_dot = or_stand_in(image_dot, (1, 1, 1, 1), image, np.empty)
    _second.second_backward(grad_columns, image, image_dot, use_image_dot, offset, mask, use_mask,
                            offset_dot, mask_dot, mode, geometry, grad_image, grad_offset,
                            grad_mask, work=grad_columns.size)


def dcnv3_jvp(input, offset, mask, geometry, input_dot, offset_dot, mask_dot):
    """out_dot (N, H_out, W_out, C): the tangent of dcnv3's output."""
    out_dot = np.empty((input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]),
                       input.dtype)
    input_dot, use_input_dot = or_stand_in(input_dot, (1, 1, 1, 1), input, np.empty)
    _second.dcnv3_tangent(input, input_dot, use_input_dot, offset, mask, offset_dot, mask_dot,
                          geometry, out_dot, work=_point_work(input, geometry))
    return out_dot


def dcnv3_backward_backward(grad_out, input, offset, mask, geometry, input_dot, offset_dot,
                            mask_dot, grad_input, grad_offset, grad_mask, deterministic=False):
    """grad_input, grad_offset and grad_mask += the gradients of ``<grad_out, out_dot>``
    (out_dot as in dcnv3_jvp) with respect to input, offset and mask."""
    input_dot, use_input_dot = or_stand_in(input_dot, (1, 1, 1, 1), input, np.empty)
    _second.dcnv3_second_backward(grad_out, input, input_dot, use_input_dot, offset, mask,
                                  offset_dot, mask_dot, geometry, grad_input, grad_offset,
                                  grad_mask, work=_point_work(input, geometry))
