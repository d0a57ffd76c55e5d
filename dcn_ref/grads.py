"""What every op's backward returns: a NamedTuple of gradients named after its inputs.

``f_backward(grad_output, <the inputs of f>)`` of every op ``f`` in ``dcn_ref.ops``
returns the NamedTuple of ``f`` below, one field for each differentiable input, in the
order of ``f``'s parameters; a field is None where its input was None (no bias, no mask).
The slow loop references (``dcn_ref/reference*.py``) return the same NamedTuples, so a
test compares the two field by field. ``BY_OP`` maps each op's name to its NamedTuple
(the PyTorch bridge reads the differentiable inputs from it).

The second derivatives work the same way one level up: ``f_backward_backward(grad_grads,
grad_output, <the inputs of f>)`` differentiates ``f_backward`` and returns the
NamedTuple ``<F>BackwardGrads`` below, one field for each of the backward's inputs
(``grad_output`` first, then the op's differentiable inputs); ``BACKWARD_BY_OP`` maps each
op that has one to it.

They live here, below the ops and the references, so that both import them from one
place and neither imports the other.
"""
from typing import NamedTuple


class BilinearSampleGrads(NamedTuple):
    """The gradients of ``bilinear_sample``."""
    image: object
    coords: object


class Conv2dGrads(NamedTuple):
    """The gradients of ``conv2d``; bias is None when no bias was given."""
    input: object
    weight: object
    bias: object


class DeformConv2dGrads(NamedTuple):
    """The gradients of ``deform_conv2d``; bias and mask are None when not given."""
    input: object
    offset: object
    weight: object
    bias: object
    mask: object


class OffsetSampleGrads(NamedTuple):
    """The gradients of ``offset_sample``."""
    input: object
    offset: object


class DeformRoIPoolGrads(NamedTuple):
    """The gradients of ``deform_roi_pool``; offset and mask are None when not given."""
    input: object
    offset: object
    mask: object


class DeformPSRoIPoolGrads(NamedTuple):
    """The gradients of ``deform_psroi_pool``; trans is None when there was none."""
    input: object
    trans: object


class DCNv3Grads(NamedTuple):
    """The gradients of ``dcnv3``."""
    input: object
    offset: object
    mask: object


class DCNv4Grads(NamedTuple):
    """The gradients of ``dcnv4``."""
    input: object
    offset_mask: object


#: Each differentiable op's name and the NamedTuple its backward returns.
BY_OP = {
    "bilinear_sample": BilinearSampleGrads,
    "conv2d": Conv2dGrads,
    "deform_conv2d": DeformConv2dGrads,
    "offset_sample": OffsetSampleGrads,
    "deform_roi_pool": DeformRoIPoolGrads,
    "deform_psroi_pool": DeformPSRoIPoolGrads,
    "dcnv3": DCNv3Grads,
    "dcnv4": DCNv4Grads,
}


# -- the gradients of the backward passes (second derivatives) -------------------------

class BilinearSampleBackwardGrads(NamedTuple):
    """The gradients of ``bilinear_sample_backward``."""
    grad_output: object
    image: object
    coords: object


class DeformConv2dBackwardGrads(NamedTuple):
    """The gradients of ``deform_conv2d_backward``; bias and mask are None when not given."""
    grad_output: object
    input: object
    offset: object
    weight: object
    bias: object
    mask: object


class OffsetSampleBackwardGrads(NamedTuple):
    """The gradients of ``offset_sample_backward``."""
    grad_output: object
    input: object
    offset: object


class DCNv3BackwardGrads(NamedTuple):
    """The gradients of ``dcnv3_backward``."""
    grad_output: object
    input: object
    offset: object
    mask: object


class DCNv4BackwardGrads(NamedTuple):
    """The gradients of ``dcnv4_backward``."""
    grad_output: object
    input: object
    offset_mask: object


#: Each op with second derivatives, and the NamedTuple its ``_backward_backward`` returns.
BACKWARD_BY_OP = {
    "bilinear_sample": BilinearSampleBackwardGrads,
    "deform_conv2d": DeformConv2dBackwardGrads,
    "offset_sample": OffsetSampleBackwardGrads,
    "dcnv3": DCNv3BackwardGrads,
    "dcnv4": DCNv4BackwardGrads,
}
