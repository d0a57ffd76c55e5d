"""What ``torch.onnx.export`` turns dcn_ref's ops into: standard ONNX, with no extra step.

While ``torch.onnx.export(..., dynamo=True)`` traces a model (``torch.onnx.is_in_onnx_export()``),
each op of ``dcn_ref.torch`` computes its **export form** instead of calling its custom op,
so the exporter sees standard operators only and a model built from ``dcn_ref.torch``
exports as it is:

    deform_conv2d    one DeformConv node (ONNX opset 19): groups and offset groups are
                     read from the shapes, a missing bias or mask is a missing input
    dcnv3, dcnv4,    the GridSample form (``dcn_ref.gridsample_form``): reshapes, one
    bilinear_sample, GridSample, a weighted sum (GridSample's "linear" mode is opset 20,
    offset_sample    the exporter's default opset)
    deform_roi_pool, no standard form (how many samples a bin takes depends on its box):
    deform_psroi_pool they stay custom ops, and the export stops with "No ONNX function
                     found for <OpOverload(op='dcn_ref.deform_roi_pool', ...)>"

The batch, and the image sizes of the GridSample forms, may be dynamic; groups and
channel counts are static. An ``ExportedProgram`` made beforehand by ``torch.export``
holds the custom ops themselves: ``program.run_decompositions(decompositions())`` turns
them into their forms before ``torch.onnx.export(program)``.

The TorchScript-based exporter (``dynamo=False``, deprecated by PyTorch) gets a symbolic
for ``deform_conv2d`` (DeformConv: pass ``opset_version=19`` or newer) and traces the
GridSample forms of the others.
"""
import torch
import torch.nn.functional as F
import torch.onnx

from .. import gridsample_form as form

#: The first ONNX opset with DeformConv; GridSample's bilinear mode is in every opset since 16.
DEFORM_CONV_OPSET = 19


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


def deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask):
    """dcn_ref::deform_conv2d -> one DeformConv node."""
    groups, offset_groups = form.deform_conv2d_groups(input.shape, weight.shape, offset.shape)
    attributes = dict(dilations=list(dilation), group=groups, kernel_shape=list(weight.shape[2:]),
                      offset_group=offset_groups, pads=[*padding, *padding], strides=list(stride))
    out_shape = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    return torch.onnx.ops.symbolic("DeformConv", (input, weight, offset, bias, mask), attributes,
                                   dtype=input.dtype, shape=out_shape, version=DEFORM_CONV_OPSET)


def dcnv3(input, offset, mask, kernel_size, stride, padding, dilation, group, offset_scale,
          remove_center):
    """dcn_ref::dcnv3 -> its GridSample form."""
    return form.dcnv3(TorchBuilder(), input, offset, mask, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


def dcnv4(input, offset_mask, kernel_size, stride, padding, dilation, group, offset_scale,
          remove_center):
    """dcn_ref::dcnv4 -> its GridSample form."""
    return form.dcnv4(TorchBuilder(), input, offset_mask, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


def bilinear_sample(image, coords, padding_mode):
    """dcn_ref::bilinear_sample -> its GridSample form."""
    return form.bilinear_sample(TorchBuilder(), image, coords, padding_mode)


def offset_sample(input, offset, padding_mode):
    """dcn_ref::offset_sample -> its GridSample form."""
    return form.offset_sample(TorchBuilder(), input, offset, padding_mode)


#: The export form of each op that has one, taking the op's schema arguments. The RoI
#: pools have none: how many samples a bin takes depends on the size of its box.
FORMS = {"deform_conv2d": deform_conv2d, "dcnv3": dcnv3, "dcnv4": dcnv4,
         "bilinear_sample": bilinear_sample, "offset_sample": offset_sample}


def exportable(name, op):
    """``op`` (the custom op ``dcn_ref::<name>``), computing its export form instead while
    an ONNX exporter traces. The TorchScript-based exporter, which traces with
    ``torch.jit``, keeps ``deform_conv2d`` as the op, for its symbolic below. An op
    without a form stays the op, which the exporter names as one it cannot translate."""
    if name not in FORMS:
        return op
    export_form = FORMS[name]
    keeps_op = name == "deform_conv2d"

    def call(*args):
        if torch.onnx.is_in_onnx_export() and not (keeps_op and torch.jit.is_tracing()):
            return export_form(*args)
        return op(*args)

    call.__name__ = call.__qualname__ = name
    return call


def decompositions():
    """The export forms as a decomposition table, for an ``ExportedProgram`` that holds the
    ``dcn_ref`` ops: ``torch.onnx.export(program.run_decompositions(decompositions()))``.

    Returns
    -------
    dict
        ``torch.ops.dcn_ref.<name>.default`` -> its export form, for every op that has one
        (not the RoI pools).
    """
    return {getattr(torch.ops.dcn_ref, name).default: fn for name, fn in FORMS.items()}


# -- the TorchScript-based exporter, torch.onnx.export(..., dynamo=False) ------------------

def _legacy_deform_conv2d(g, input, offset, weight, bias, stride, padding, dilation, mask):
    """dcn_ref::deform_conv2d -> DeformConv, for the TorchScript-based exporter."""
    from torch.onnx import symbolic_helper as sym
    sizes = [sym._get_tensor_sizes(v) for v in (input, weight, offset)]
    groups, offset_groups = form.deform_conv2d_groups(*sizes)
    inputs = [input, weight, offset]
    if not sym._is_none(mask):
        if sym._is_none(bias):                  # DeformConv takes the mask after the bias
            dtype = torch.onnx.JitScalarType.from_value(weight).dtype()
            bias = g.op("Constant", value_t=torch.zeros(sizes[1][0], dtype=dtype))
        inputs += [bias, mask]
    elif not sym._is_none(bias):
        inputs.append(bias)
    stride, padding, dilation = (sym._parse_arg(v, "is") for v in (stride, padding, dilation))
    return g.op("DeformConv", *inputs, dilations_i=dilation, group_i=groups,
                kernel_shape_i=sizes[1][2:], offset_group_i=offset_groups,
                pads_i=[*padding, *padding], strides_i=stride)


torch.onnx.register_custom_op_symbolic("dcn_ref::deform_conv2d", _legacy_deform_conv2d,
                                       DEFORM_CONV_OPSET)
