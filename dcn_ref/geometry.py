"""Named, typed geometry that the ops hand to the kernels of both targets.

A ``typing.NamedTuple`` of ints, floats and bools is a type Numba compiles: a kernel
reads ``geometry.stride_h`` by name, on the CPU (``numba.njit``) and on the GPU
(``numba.cuda.jit``) alike, and a field added later cannot shift the others.
"""
from typing import NamedTuple


class PointGeometry(NamedTuple):
    """Where DCNv3/DCNv4 sample, and where their offsets and weights are stored.

    The sampling grid (``dcn_ref.ops.dcnv3``): point p of group g of output pixel
    (ho, wo) is the kernel position (i, j), i = kernel column, j = kernel row, counted
    column-major (j fastest) and skipping the centre when ``remove_center``.

    The storage: the kernels read offsets and weights from arrays of shape
    (N, H_out, W_out, D) through three strides, so that DCNv3's two arrays and DCNv4's
    packed one are views of one layout:

        x offset of point p in group g  = offset[n, ho, wo, g*offset_stride + 2*p]
        y offset                        = the next entry
        weight                          = mask[n, ho, wo, mask_start + g*mask_stride + p]

    DCNv3 (separate arrays): offset_stride = 2P, mask_start = 0, mask_stride = P.
    DCNv4 (one packed array for both): offset_stride = mask_stride = 3P, mask_start = 2P.
    """
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    out_h: int
    out_w: int
    group: int
    group_channels: int
    points: int            # P = kernel_h*kernel_w, less one with remove_center
    offset_scale: float
    remove_center: bool
    offset_stride: int
    mask_start: int
    mask_stride: int
