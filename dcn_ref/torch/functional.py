"""The ops of ``dcn_ref.ops`` for torch tensors: differentiable, traceable custom ops.

Every function here takes and returns tensors, has the signature of its op in
``dcn_ref.ops`` without ``target`` (``deform_conv2d`` has exactly the signature of
``torchvision.ops.deform_conv2d``), and calls the registered op
``torch.ops.dcn_ref.<name>``. Gradients flow to every tensor input through the library's
hand-derived ``<name>_backward``. The layouts and numerical conventions are those of the
op in ``dcn_ref.ops``; see its docstring. The tensors of a call share one dtype, float16,
bfloat16, float32 or float64; half-precision ones are computed in float32, and results
and gradients come back in their tensors' dtypes (inside ``torch.autocast``, see
``_autocast``).

Before dispatching, a function checks its arguments as the op does (``_checks``): a wrong
one is an ``ArgumentError`` (a ValueError and a RuntimeError) naming it, for CPU, CUDA
and meta tensors alike, and a call in forward-mode AD is refused (``_forward_mode``).
Under ``torch.compile`` and ``torch.fx`` tracing the function hands its arguments on,
and the op's fake implementation checks them.

The functions compile with TorchScript: the branch under ``torch.jit.is_scripting()`` is
what a scripted caller runs (the annotations are for it), calling the op directly, whose
own checks then apply.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from ._checks import checked
from ._register import register


def _two(value: Union[int, Tuple[int, int]]) -> List[int]:
    """An int or (h, w) pair as the [h, w] list of the schemas (TorchScript's path)."""
    if isinstance(value, int):
        return [value, value]
    return [value[0], value[1]]


# -- shapes of the outputs, for the fake (meta) implementations ------------------------

def _fake_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask):
    return input.new_empty(input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])


def _fake_dcnv3(input, offset, mask, kernel_size, stride, padding, dilation, group,
                offset_scale, remove_center):
    return input.new_empty(input.shape[0], offset.shape[1], offset.shape[2], input.shape[3])


def _fake_dcnv4(input, offset_mask, kernel_size, stride, padding, dilation, group,
                offset_scale, remove_center):
    return input.new_empty(input.shape[0], offset_mask.shape[1], offset_mask.shape[2],
                           input.shape[3])


def _fake_bilinear_sample(image, coords, padding_mode):
    return image.new_empty(image.shape[0], coords.shape[1])


def _fake_offset_sample(input, offset, padding_mode):
    return input.new_empty(input.shape)


def _fake_deform_roi_pool(input, rois, offset, output_size, spatial_scale, sampling_ratio,
                          gamma, mask):
    return input.new_empty(rois.shape[0], input.shape[1], output_size[0], output_size[1])


def _fake_deform_psroi_pool(input, rois, trans, spatial_scale, output_dim, group_size,
                            pooled_size, part_size, sample_per_part, trans_std, no_trans):
    channels = output_dim if output_dim is not None else input.shape[1] // group_size ** 2
    return input.new_empty(rois.shape[0], channels, pooled_size, pooled_size)


def _op(name, arguments, fake):
    """The op ``dcn_ref::<name>`` (registered here) behind the bridge's checks."""
    return checked(name, register(name, arguments, fake), arguments)


_deform_conv2d = _op(
    "deform_conv2d",
    "Tensor input, Tensor offset, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
    "int[] dilation, Tensor? mask",
    _fake_deform_conv2d)
_dcnv3 = _op(
    "dcnv3",
    "Tensor input, Tensor offset, Tensor mask, int[] kernel_size, int[] stride, int[] padding, "
    "int[] dilation, int group, float offset_scale, bool remove_center",
    _fake_dcnv3)
_dcnv4 = _op(
    "dcnv4",
    "Tensor input, Tensor offset_mask, int[] kernel_size, int[] stride, int[] padding, "
    "int[] dilation, int group, float offset_scale, bool remove_center",
    _fake_dcnv4)
_bilinear_sample = _op(
    "bilinear_sample", "Tensor image, Tensor coords, str padding_mode",
    _fake_bilinear_sample)
_offset_sample = _op(
    "offset_sample", "Tensor input, Tensor offset, str padding_mode",
    _fake_offset_sample)
_deform_roi_pool = _op(
    "deform_roi_pool",
    "Tensor input, Tensor rois, Tensor? offset, int[] output_size, float spatial_scale, "
    "int sampling_ratio, float gamma, Tensor? mask",
    _fake_deform_roi_pool)
_deform_psroi_pool = _op(
    "deform_psroi_pool",
    "Tensor input, Tensor rois, Tensor? trans, float spatial_scale, int? output_dim, "
    "int group_size, int pooled_size, int part_size, int sample_per_part, float trans_std, "
    "bool? no_trans",
    _fake_deform_psroi_pool)


# -- the public functions ----------------------------------------------------------------

def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: Tuple[int, int] = (1, 1), padding: Tuple[int, int] = (0, 0),
                  dilation: Tuple[int, int] = (1, 1), mask: Optional[Tensor] = None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` computed by ``dcn_ref.ops.deform_conv2d``.

    Under TorchScript, ``stride``, ``padding`` and ``dilation`` are (h, w) pairs, as in
    torchvision's function.

    Parameters
    ----------
    input : Tensor of shape (N, C_in, H, W)
    offset : Tensor of shape (N, 2*G*kh*kw, H_out, W_out)
        Channel ``2*(g*kh*kw + i*kw + j)`` is the dy of tap (i, j) in offset group g, the
        next channel its dx.
    weight : Tensor of shape (C_out, C_in/groups, kh, kw)
    bias : Tensor of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
        Zeros added on each side.
    dilation : int or (h, w) pair
    mask : Tensor of shape (N, G*kh*kw, H_out, W_out) or None
        DCNv2 modulation, raw multipliers.

    Returns
    -------
    Tensor of shape (N, C_out, H_out, W_out), the dtype and device of ``input``.
    """
    if not torch.jit.is_scripting():
        return _deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    return torch.ops.dcn_ref.deform_conv2d(input, offset, weight, bias, _two(stride),
                                           _two(padding), _two(dilation), mask)


def dcnv3(input: Tensor, offset: Tensor, mask: Tensor,
          kernel_size: Union[int, Tuple[int, int]] = 3, stride: Union[int, Tuple[int, int]] = 1,
          padding: Union[int, Tuple[int, int]] = 0, dilation: Union[int, Tuple[int, int]] = 1,
          group: int = 1, offset_scale: float = 1.0, remove_center: bool = False) -> Tensor:
    """The DCNv3 core operator (``dcn_ref.ops.dcnv3``), channels last.

    Parameters
    ----------
    input : Tensor of shape (N, H, W, C)
    offset : Tensor of shape (N, H_out, W_out, group*P*2)
        (x, y) pairs per point.
    mask : Tensor of shape (N, H_out, W_out, group*P)
        Raw weights (no softmax inside).
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool

    Returns
    -------
    Tensor of shape (N, H_out, W_out, C).
    """
    if not torch.jit.is_scripting():
        return _dcnv3(input, offset, mask, kernel_size, stride, padding, dilation, group,
                      offset_scale, remove_center)
    return torch.ops.dcn_ref.dcnv3(input, offset, mask, _two(kernel_size), _two(stride),
                                   _two(padding), _two(dilation), group, offset_scale,
                                   remove_center)


def dcnv4(input: Tensor, offset_mask: Tensor, kernel_size: Union[int, Tuple[int, int]] = 3,
          stride: Union[int, Tuple[int, int]] = 1, padding: Union[int, Tuple[int, int]] = 0,
          dilation: Union[int, Tuple[int, int]] = 1, group: int = 1, offset_scale: float = 1.0,
          remove_center: bool = False) -> Tensor:
    """DCNv4 (``dcn_ref.ops.dcnv4``): offsets and weights packed in one tensor, channels last.

    Parameters
    ----------
    input : Tensor of shape (N, H, W, C)
    offset_mask : Tensor of shape (N, H_out, W_out, D)
        ``D >= group*P*3``: per group, 2P offsets as (x, y) pairs, then P weights.
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
        As in ``dcnv3``.

    Returns
    -------
    Tensor of shape (N, H_out, W_out, C).
    """
    if not torch.jit.is_scripting():
        return _dcnv4(input, offset_mask, kernel_size, stride, padding, dilation, group,
                      offset_scale, remove_center)
    return torch.ops.dcn_ref.dcnv4(input, offset_mask, _two(kernel_size), _two(stride),
                                   _two(padding), _two(dilation), group, offset_scale,
                                   remove_center)


def bilinear_sample(image: Tensor, coords: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Bilinear samples (``dcn_ref.ops.bilinear_sample``): image (B, H, W), coords (B, P, 2)
    as (y, x) -> Tensor of shape (B, P)."""
    if not torch.jit.is_scripting():
        return _bilinear_sample(image, coords, padding_mode)
    return torch.ops.dcn_ref.bilinear_sample(image, coords, padding_mode)


def offset_sample(input: Tensor, offset: Tensor, padding_mode: str = "border") -> Tensor:
    """The Keras ConvOffset2D resampling (``dcn_ref.ops.offset_sample``): input (N, C, H, W),
    offset (N, 2C, H, W) as (dy, dx) per channel -> Tensor of shape (N, C, H, W)."""
    if not torch.jit.is_scripting():
        return _offset_sample(input, offset, padding_mode)
    return torch.ops.dcn_ref.offset_sample(input, offset, padding_mode)


def deform_roi_pool(input: Tensor, rois: Tensor, offset: Optional[Tensor] = None,
                    output_size: Union[int, Tuple[int, int]] = 7, spatial_scale: float = 1.0,
                    sampling_ratio: int = 0, gamma: float = 0.1,
                    mask: Optional[Tensor] = None) -> Tensor:
    """Deformable RoI pooling (``dcn_ref.ops.deform_roi_pool``): input (N, C, H, W), rois
    (K, 5), offset (K, 2, ph, pw) or None, mask (K, 1, ph, pw) or None -> (K, C, ph, pw).
    ``rois`` gets no gradient."""
    if not torch.jit.is_scripting():
        return _deform_roi_pool(input, rois, offset, output_size, spatial_scale,
                                sampling_ratio, gamma, mask)
    return torch.ops.dcn_ref.deform_roi_pool(input, rois, offset, _two(output_size),
                                             spatial_scale, sampling_ratio, gamma, mask)


def deform_psroi_pool(input: Tensor, rois: Tensor, trans: Optional[Tensor] = None,
                      spatial_scale: float = 1.0, output_dim: Optional[int] = None,
                      group_size: int = 1, pooled_size: int = 7, part_size: int = 0,
                      sample_per_part: int = 1, trans_std: float = 0.0,
                      no_trans: Optional[bool] = None) -> Tensor:
    """Deformable position-sensitive RoI pooling (``dcn_ref.ops.deform_psroi_pool``): input
    (N, C, H, W), rois (K, 5), trans ``(K, 2*num_classes, part_size, part_size)`` or None ->
    (K, output_dim, pooled_size, pooled_size). ``rois`` gets no gradient."""
    if not torch.jit.is_scripting():
        return _deform_psroi_pool(input, rois, trans, spatial_scale, output_dim, group_size,
                                  pooled_size, part_size, sample_per_part, trans_std, no_trans)
    return torch.ops.dcn_ref.deform_psroi_pool(input, rois, trans, spatial_scale, output_dim,
                                               group_size, pooled_size, part_size,
                                               sample_per_part, trans_std, no_trans)


__all__ = ["deform_conv2d", "dcnv3", "dcnv4", "bilinear_sample", "offset_sample",
           "deform_roi_pool", "deform_psroi_pool"]
