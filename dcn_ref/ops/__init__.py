"""The ops of dcn_ref. Their conventions (layouts, coordinates, borders and kinks,
non-finite values, signatures) are stated in ``docs/conventions.md``. Each op ``f``
has ``f_backward(grad_output, <the inputs of f>)`` returning a NamedTuple of gradients
named after the inputs (``dcn_ref/grads.py``). The sampling ops (bilinear_sample,
offset_sample, deform_conv2d, dcnv3, dcnv4) also have forward mode,
``f_jvp(<the inputs of f>, *, <input>_dot=...)``, and second derivatives,
``f_backward_backward(grad_grads, grad_output, <the inputs of f>)``."""
from .bilinear_sample import (BilinearSampleBackwardGrads, BilinearSampleGrads, bilinear_sample,
                              bilinear_sample_backward, bilinear_sample_backward_backward,
                              bilinear_sample_jvp)
from .conv2d import Conv2dGrads, conv2d, conv2d_backward
from .dcnv3 import (DCNv3BackwardGrads, DCNv3Grads, dcnv3, dcnv3_backward,
                    dcnv3_backward_backward, dcnv3_jvp)
from .dcnv4 import (DCNv4BackwardGrads, DCNv4Grads, dcnv4, dcnv4_backward,
                    dcnv4_backward_backward, dcnv4_jvp)
from .deform_conv2d import (DeformConv2dBackwardGrads, DeformConv2dGrads, deform_conv2d,
                            deform_conv2d_backward, deform_conv2d_backward_backward,
                            deform_conv2d_jvp)
from .deform_psroi_pool import DeformPSRoIPoolGrads, deform_psroi_pool, deform_psroi_pool_backward
from .deform_roi_pool import DeformRoIPoolGrads, deform_roi_pool, deform_roi_pool_backward
from .im2col import col2im, im2col
from .offset_sample import (OffsetSampleBackwardGrads, OffsetSampleGrads, offset_sample,
                            offset_sample_backward, offset_sample_backward_backward,
                            offset_sample_jvp)

__all__ = [
    "bilinear_sample", "bilinear_sample_backward", "BilinearSampleGrads",
    "bilinear_sample_jvp", "bilinear_sample_backward_backward", "BilinearSampleBackwardGrads",
    "conv2d", "conv2d_backward", "Conv2dGrads",
    "deform_conv2d", "deform_conv2d_backward", "DeformConv2dGrads",
    "deform_conv2d_jvp", "deform_conv2d_backward_backward", "DeformConv2dBackwardGrads",
    "offset_sample", "offset_sample_backward", "OffsetSampleGrads",
    "offset_sample_jvp", "offset_sample_backward_backward", "OffsetSampleBackwardGrads",
    "deform_roi_pool", "deform_roi_pool_backward", "DeformRoIPoolGrads",
    "deform_psroi_pool", "deform_psroi_pool_backward", "DeformPSRoIPoolGrads",
    "dcnv3", "dcnv3_backward", "DCNv3Grads",
    "dcnv3_jvp", "dcnv3_backward_backward", "DCNv3BackwardGrads",
    "dcnv4", "dcnv4_backward", "DCNv4Grads",
    "dcnv4_jvp", "dcnv4_backward_backward", "DCNv4BackwardGrads",
    "im2col", "col2im",
]
