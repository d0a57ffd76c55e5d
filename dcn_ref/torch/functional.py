"""The ops of ``dcn_ref.ops`` for torch tensors: differentiable, traceable custom ops.

Every function here takes and returns tensors, has the signature of its op in
``dcn_ref.ops`` without ``target`` (``deform_conv2d`` has exactly the signature of
``torchvision.ops.deform_conv2d``), and calls the registered op
``torch.ops.dcn_ref.<name>``. Gradients flow to every tensor input through the library's
hand-derived ``<name>_backward``. The layouts and numerical conventions are those of the
op in ``dcn_ref.ops``; see its docstring.

Tensor arguments and integer pairs (stride, padding, ...) are checked here, so a wrong
value is a ValueError naming the argument, as in ``dcn_ref.ops``; every other check
(shapes, dtypes) is the op's own.
"""
import torch

from ..ops import _args
from ._register import register


def _pair(value, name, minimum):
    return list(_args.pair(value, name, minimum))


def _tensors(optional=(), **given):
    """Check that each argument is a tensor (or None when its name is in ``optional``)."""
    for name, value in given.items():
        if value is None and name in optional:
            continue
        if not isinstance(value, torch.Tensor):
            expected = "a torch.Tensor or None" if name in optional else "a torch.Tensor"
            raise ValueError(f"{name}: expected {expected}, got {type(value).__name__}")


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


_deform_conv2d = register(
    "deform_conv2d",
    "Tensor input, Tensor offset, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
    "int[] dilation, Tensor? mask",
    _fake_deform_conv2d)
_dcnv3 = register(
    "dcnv3",
    "Tensor input, Tensor offset, Tensor mask, int[] kernel_size, int[] stride, int[] padding, "
    "int[] dilation, int group, float offset_scale, bool remove_center",
    _fake_dcnv3)
_dcnv4 = register(
    "dcnv4",
    "Tensor input, Tensor offset_mask, int[] kernel_size, int[] stride, int[] padding, "
    "int[] dilation, int group, float offset_scale, bool remove_center",
    _fake_dcnv4)
_bilinear_sample = register(
    "bilinear_sample", "Tensor image, Tensor coords, str padding_mode",
    _fake_bilinear_sample)
_offset_sample = register(
    "offset_sample", "Tensor input, Tensor offset, str padding_mode",
    _fake_offset_sample)
_deform_roi_pool = register(
    "deform_roi_pool",
    "Tensor input, Tensor rois, Tensor? offset, int[] output_size, float spatial_scale, "
    "int sampling_ratio, float gamma, Tensor? mask",
    _fake_deform_roi_pool)
_deform_psroi_pool = register(
    "deform_psroi_pool",
    "Tensor input, Tensor rois, Tensor? trans, float spatial_scale, int? output_dim, "
    "int group_size, int pooled_size, int part_size, int sample_per_part, float trans_std, "
    "bool? no_trans",
    _fake_deform_psroi_pool)


# -- the public functions ----------------------------------------------------------------

def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0),
                  dilation=(1, 1), mask=None):
    """``torchvision.ops.deform_conv2d`` computed by ``dcn_ref.ops.deform_conv2d``.

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
    _tensors(("bias", "mask"), input=input, offset=offset, weight=weight, bias=bias, mask=mask)
    return _deform_conv2d(input, offset, weight, bias, _pair(stride, "stride", 1),
                          _pair(padding, "padding", 0), _pair(dilation, "dilation", 1), mask)


def dcnv3(input, offset, mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
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
    _tensors(input=input, offset=offset, mask=mask)
    return _dcnv3(input, offset, mask, _pair(kernel_size, "kernel_size", 1),
                  _pair(stride, "stride", 1), _pair(padding, "padding", 0),
                  _pair(dilation, "dilation", 1), int(group), float(offset_scale),
                  bool(remove_center))


def dcnv4(input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
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
    _tensors(input=input, offset_mask=offset_mask)
    return _dcnv4(input, offset_mask, _pair(kernel_size, "kernel_size", 1),
                  _pair(stride, "stride", 1), _pair(padding, "padding", 0),
                  _pair(dilation, "dilation", 1), int(group), float(offset_scale),
                  bool(remove_center))


def bilinear_sample(image, coords, padding_mode="zeros"):
    """Bilinear samples (``dcn_ref.ops.bilinear_sample``): image (B, H, W), coords (B, P, 2)
    as (y, x) -> Tensor of shape (B, P)."""
    _tensors(image=image, coords=coords)
    return _bilinear_sample(image, coords, padding_mode)


def offset_sample(input, offset, padding_mode="border"):
    """The Keras ConvOffset2D resampling (``dcn_ref.ops.offset_sample``): input (N, C, H, W),
    offset (N, 2C, H, W) as (dy, dx) per channel -> Tensor of shape (N, C, H, W)."""
    _tensors(input=input, offset=offset)
    return _offset_sample(input, offset, padding_mode)


def deform_roi_pool(input, rois, offset=None, output_size=7, spatial_scale=1.0,
                    sampling_ratio=0, gamma=0.1, mask=None):
    """Deformable RoI pooling (``dcn_ref.ops.deform_roi_pool``): input (N, C, H, W), rois
    (K, 5), offset (K, 2, ph, pw) or None, mask (K, 1, ph, pw) or None -> (K, C, ph, pw).
    ``rois`` gets no gradient."""
    _tensors(("offset", "mask"), input=input, rois=rois, offset=offset, mask=mask)
    return _deform_roi_pool(input, rois, offset, _pair(output_size, "output_size", 1),
                            float(spatial_scale), int(sampling_ratio), float(gamma), mask)


def deform_psroi_pool(input, rois, trans=None, spatial_scale=1.0, output_dim=None,
                      group_size=1, pooled_size=7, part_size=0, sample_per_part=1,
                      trans_std=0.0, no_trans=None):
    """Deformable position-sensitive RoI pooling (``dcn_ref.ops.deform_psroi_pool``): input
    (N, C, H, W), rois (K, 5), trans ``(K, 2*num_classes, part_size, part_size)`` or None ->
    (K, output_dim, pooled_size, pooled_size). ``rois`` gets no gradient."""
    _tensors(("trans",), input=input, rois=rois, trans=trans)
    return _deform_psroi_pool(input, rois, trans, float(spatial_scale),
                              None if output_dim is None else int(output_dim), int(group_size),
                              int(pooled_size), int(part_size), int(sample_per_part),
                              float(trans_std), None if no_trans is None else bool(no_trans))


__all__ = ["deform_conv2d", "dcnv3", "dcnv4", "bilinear_sample", "offset_sample",
           "deform_roi_pool", "deform_psroi_pool"]
