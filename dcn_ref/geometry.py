"""Named, typed geometry that the ops hand to the kernels of both targets.

A ``typing.NamedTuple`` of ints, floats and bools is a type Numba compiles: a kernel
reads ``geometry.stride_h`` by name, on the CPU (``numba.njit``) and on the GPU
(``numba.cuda.jit``) alike, and a field added later cannot shift the others.

    ConvGeometry          where the taps of a convolution read (conv2d, deform_conv2d,
                          im2col, and the sampling engine behind bilinear_sample and
                          offset_sample)
    PointGeometry         where DCNv3/DCNv4 sample, and how their offsets are stored
    RoIPoolGeometry       the bins and samples of deform_roi_pool
    PSRoIPoolGeometry     the bins, groups and parts of deform_psroi_pool

The ops (``dcn_ref.ops``) check the arguments and build these; the targets
(``dcn_ref.cpu``, ``dcn_ref.cuda``) only read them. Properties (``taps``, ``pixels``)
are for host code: a kernel reads fields.
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


class ConvGeometry(NamedTuple):
    """Where tap k of output pixel l reads: the grid of a convolution.

    Tap ``k = i*kernel_w + j`` of output pixel ``l = oy*out_w + ox`` reads the grid point

        y = oy*stride_h - pad_h + i*dilation_h        (plus its offset dy, if deformable)
        x = ox*stride_w - pad_w + j*dilation_w

    ``groups`` is the number of convolution groups, ``offset_groups`` (G) the number of
    offset groups of a deformable convolution (1 for a plain one). The sampling engine
    (``dcn_ref/sampling.py``) reads only kernel_w, out_w and the strides, pads and
    dilations; ``bilinear_sample`` collapses the grid onto the origin (stride = dilation
    = 0), so that the offset of a point is its coordinate.
    """
    kernel_h: int
    kernel_w: int
    out_h: int
    out_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    groups: int = 1
    offset_groups: int = 1

    @property
    def taps(self):
        """K = kernel_h * kernel_w (host code)."""
        return self.kernel_h * self.kernel_w

    @property
    def pixels(self):
        """L = out_h * out_w, the output pixels of one plane (host code)."""
        return self.out_h * self.out_w


def conv_geometry(kernel_hw, out_hw, stride, padding, dilation, groups=1, offset_groups=1):
    """A ``ConvGeometry`` from (h, w) pairs of Python ints."""
    return ConvGeometry(
        kernel_h=kernel_hw[0], kernel_w=kernel_hw[1], out_h=out_hw[0], out_w=out_hw[1],
        stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dilation_h=dilation[0], dilation_w=dilation[1], groups=groups,
        offset_groups=offset_groups)


class RoIPoolGeometry(NamedTuple):
    """The bins of ``deform_roi_pool`` (layouts and formulas in ``dcn_ref/roi_sampling.py``).

    Each RoI is cut into pooled_h x pooled_w bins; a bin averages sampling_ratio x
    sampling_ratio samples (0: an adaptive grid per RoI); offsets are scaled by gamma and
    the RoI's size; coordinates by spatial_scale. ``max_bin_samples`` is the most samples
    any bin of the call takes (the CPU sizes its work by it).
    """
    pooled_h: int
    pooled_w: int
    spatial_scale: float
    sampling_ratio: int
    gamma: float
    max_bin_samples: int


class PSRoIPoolGeometry(NamedTuple):
    """The bins of ``deform_psroi_pool`` (layouts and formulas in ``dcn_ref/roi_sampling.py``).

    pooled_size x pooled_size bins; bin (i, j) reads the score maps of its cell of the
    group_size x group_size position-sensitive grid, shifted by the offset (``trans``) of
    its cell of the part_size x part_size offset grid, scaled by trans_std; each bin takes
    ``sample_per_part**2`` samples. Output channel ctop uses offset class
    ``ctop // channels_each_class``.
    """
    pooled_size: int
    output_dim: int
    group_size: int
    part_size: int
    sample_per_part: int
    channels_each_class: int
    spatial_scale: float
    trans_std: float
