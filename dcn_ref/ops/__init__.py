"""The ops of dcn_ref. Their conventions (layouts, coordinates, borders and kinks,
non-finite values, signatures) are stated in ``docs/conventions.md``. Each op ``f``
has ``f_backward(grad_output, <the inputs of f>)`` returning a NamedTuple of gradients
named after the inputs (``dcn_ref/grads.py``)."""
from .bilinear_sample import BilinearSampleGrads, bilinear_sample, bilinear_sample_backward
from .conv2d import Conv2dGrads, conv2d, conv2d_backward
from .dcnv3 import DCNv3Grads, dcnv3, dcnv3_backward
from .dcnv4 import DCNv4Grads, dcnv4, dcnv4_backward
from .deform_conv2d import DeformConv2dGrads, deform_conv2d, deform_conv2d_backward
from .deform_psroi_pool import DeformPSRoIPoolGrads, deform_psroi_pool, deform_psroi_pool_backward
from .deform_roi_pool import DeformRoIPoolGrads, deform_roi_pool, deform_roi_pool_backward
from .im2col import col2im, im2col
from .offset_sample import OffsetSampleGrads, offset_sample, offset_sample_backward

__all__ = [
    "bilinear_sample", "bilinear_sample_backward", "BilinearSampleGrads",
    "conv2d", "conv2d_backward", "Conv2dGrads",
    "deform_conv2d", "deform_conv2d_backward", "DeformConv2dGrads",
    "offset_sample", "offset_sample_backward", "OffsetSampleGrads",
    "deform_roi_pool", "deform_roi_pool_backward", "DeformRoIPoolGrads",
    "deform_psroi_pool", "deform_psroi_pool_backward", "DeformPSRoIPoolGrads",
    "dcnv3", "dcnv3_backward", "DCNv3Grads",
    "dcnv4", "dcnv4_backward", "DCNv4Grads",
    "im2col", "col2im",
]
