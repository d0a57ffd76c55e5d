"""What ``torch.onnx.export`` turns dcn_ref's ops into: standard ONNX, with no extra step.

Importing ``dcn_ref.torch`` registers, for each op ``dcn_ref::<name>``, a decomposition in
PyTorch's decomposition table that applies only while ``torch.onnx.export(...,
dynamo=True)`` runs (``torch.onnx.is_in_onnx_export()``; everywhere else it declines, and
the op stays one opaque custom op). The exporter decomposes every op that has no ONNX
translation of its own, so a model built from ``dcn_ref.torch`` exports as it is:

    deform_conv2d    one DeformConv node (ONNX opset 19): groups and offset groups are
                     read from the shapes, a missing bias or mask is a missing input
    dcnv3, dcnv4,    the GridSample form (``dcn_ref.gridsample_form``): reshapes,
    bilinear_sample, one GridSample, a weighted sum (GridSample with "linear" mode is
    offset_sample    opset 20, the exporter's default)
    deform_roi_pool, no standard form (the samples of a bin depend on the box):
    deform_psroi_pool the export stops with an error that names the op

Every size but the batch is static in the exported graph; the batch can be dynamic.
The legacy TorchScript-based exporter (``dynamo=False``) gets a symbolic for
``deform_conv2d`` (DeformConv, opset_version >= 19) and an error naming the op for the others.
"""
import torch
import torch.nn.functional as F
import torch.onnx
from torch._decomp import register_decomposition

from .. import gridsample_form as form

#: The first ONNX opset with DeformConv; GridSample's bilinear mode is in every opset since 16.
DEFORM_CONV_OPSET = 19


class ExportError(RuntimeError):
    """An op of dcn_ref that has no standard ONNX form."""


class TorchBuilder:
    """The graph operations of ``dcn_ref.gridsample_form``, as torch operations (sizes are
    ints, or SymInts where ``torch.export`` traces a dynamic size)."""

    def size(self, x, axis):
        return x.shape[axis]

    def size_vector(self, sizes, like):
        return torch.stack([torch.full((), s, dtype=like.dtype, device=like.device)
                            for s in sizes])

    def arange(self, n, like):
        return torch.arange(n, dtype=like.dtype, device=like.device)

    def reshape(self, x, sizes):
        return x.reshape(sizes)

    def transpose(self, x, perm):
        return x.permute(perm)

    def slice(self, x, axis, start, stop):
        return x.narrow(axis, start, stop - start)

    def swap_last(self, x):
        return x.flip(-1)

    def add(self, a, b):
        return a + self._tensor(b, a)

    def sub(self, a, b):
        return a - self._tensor(b, a)

    def mul(self, a, b):
        return a * self._tensor(b, a)

    def div(self, a, b):
        return a / self._tensor(b, a)

    def sum(self, x, axis):
        return x.sum(axis)

    def grid_sample(self, x, grid, padding_mode):
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode,
                             align_corners=False)

    @staticmethod
    def _tensor(value, like):
        if isinstance(value, torch.Tensor):
            return value
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _exporting():
    return torch.onnx.is_in_onnx_export()


def _decomposition(name):
    """Register ``fn`` as the ONNX-export decomposition of ``dcn_ref::<name>``."""
    return register_decomposition(getattr(torch.ops.dcn_ref, name).default)


@_decomposition("deform_conv2d")
def deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask):
    """dcn_ref::deform_conv2d -> one DeformConv node."""
    if not _exporting():
        return NotImplemented
    groups, offset_groups = form.deform_conv2d_groups(input.shape, weight.shape, offset.shape)
    attributes = dict(dilations=list(dilation), group=groups, kernel_shape=list(weight.shape[2:]),
                      offset_group=offset_groups, pads=[*padding, *padding], strides=list(stride))
    out_shape = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    return torch.onnx.ops.symbolic("DeformConv", (input, weight, offset, bias, mask), attributes,
                                   dtype=input.dtype, shape=out_shape, version=DEFORM_CONV_OPSET)


@_decomposition("dcnv3")
def dcnv3(input, offset, mask, kernel_size, stride, padding, dilation, group, offset_scale,
          remove_center):
    """dcn_ref::dcnv3 -> its GridSample form."""
    if not _exporting():
        return NotImplemented
    return form.dcnv3(TorchBuilder(), input, offset, mask, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


@_decomposition("dcnv4")
def dcnv4(input, offset_mask, kernel_size, stride, padding, dilation, group, offset_scale,
          remove_center):
    """dcn_ref::dcnv4 -> its GridSample form."""
    if not _exporting():
        return NotImplemented
    return form.dcnv4(TorchBuilder(), input, offset_mask, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


@_decomposition("bilinear_sample")
def bilinear_sample(image, coords, padding_mode):
    """dcn_ref::bilinear_sample -> its GridSample form."""
    if not _exporting():
        return NotImplemented
    return form.bilinear_sample(TorchBuilder(), image, coords, padding_mode)


@_decomposition("offset_sample")
def offset_sample(input, offset, padding_mode):
    """dcn_ref::offset_sample -> its GridSample form."""
    if not _exporting():
        return NotImplemented
    return form.offset_sample(TorchBuilder(), input, offset, padding_mode)


def _not_exportable(name, reason):
    def refuse(*args, **kwargs):
        if not _exporting():
            return NotImplemented
        raise ExportError(f"dcn_ref::{name} cannot be exported to ONNX: {reason}")
    refuse.__name__ = refuse.__qualname__ = name
    _decomposition(name)(refuse)


_ROI_REASON = ("no standard ONNX operator or GridSample form computes it (how many samples a "
               "bin takes depends on the size of its box)")
_not_exportable("deform_roi_pool", _ROI_REASON)
_not_exportable("deform_psroi_pool", _ROI_REASON)



# -- the TorchScript-based exporter, torch.onnx.export(..., dynamo=False) ------------------

def _legacy_deform_conv2d(g, input, offset, weight, bias, stride, padding, dilation, mask):
    """dcn_ref::deform_conv2d -> DeformConv, for the TorchScript-based exporter."""
    from torch.onnx import symbolic_helper as sym
    sizes = [sym._get_tensor_sizes(v) for v in (input, weight, offset)]
    groups, offset_groups = form.deform_conv2d_groups(*sizes)
    inputs = [input, weight, offset]
    if not sym._is_none(mask):
        if sym._is_none(bias):                  # DeformConv takes the mask after the bias
            bias = g.op("Constant", value_t=torch.zeros(sizes[1][0]))
        inputs += [bias, mask]
    elif not sym._is_none(bias):
        inputs.append(bias)
    stride, padding, dilation = (sym._parse_arg(v, "is") for v in (stride, padding, dilation))
    return g.op("DeformConv", *inputs, dilations_i=dilation, group_i=groups,
                kernel_shape_i=sizes[1][2:], offset_group_i=offset_groups,
                pads_i=[*padding, *padding], strides_i=stride)


def _legacy_refusal(name):
    def refuse(g, *args):
        raise ExportError(f"dcn_ref::{name} cannot be exported by the TorchScript-based "
                          f"exporter; use torch.onnx.export(..., dynamo=True)")
    return refuse


torch.onnx.register_custom_op_symbolic("dcn_ref::deform_conv2d", _legacy_deform_conv2d,
                                       DEFORM_CONV_OPSET)
for _name in ("dcnv3", "dcnv4", "bilinear_sample", "offset_sample", "deform_roi_pool",
              "deform_psroi_pool"):
    torch.onnx.register_custom_op_symbolic(f"dcn_ref::{_name}", _legacy_refusal(_name), 9)
