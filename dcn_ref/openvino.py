"""dcn_ref's ops in OpenVINO: conversion rules for its ONNX reader and its PyTorch converter.

OpenVINO has no rule for ONNX's ``DeformConv`` and none for the ``dcn_ref::*`` custom ops
of ``dcn_ref.torch``; these extensions add them (``pip install 'dcn-ref[export]'``):

    import openvino as ov
    from dcn_ref.openvino import onnx_extensions, pytorch_extensions

    model = ov.convert_model("model.onnx", extension=onnx_extensions())      # ONNX
    model = ov.convert_model(torch_model, example_input=args,                # PyTorch
                             input=[(-1, 8, 32, 32)], extension=pytorch_extensions())
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

``DeformConv`` and ``dcn_ref::deform_conv2d`` become opset 8's ``DeformableConvolution``
with ``bilinear_interpolation_pad=True``, the rule of torchvision, ONNX and dcn_ref (with
False, OpenVINO's default, a sample in the band (-1, 0) of either axis is dropped and one
in (H-1, H) is read as if it were on the last row); a bias is an ``Add``. ``dcnv3``,
``dcnv4``, ``bilinear_sample`` and ``offset_sample`` become their GridSample form
(``dcn_ref.gridsample_form``). OpenVINO's PyTorch converter makes every size of the model's
inputs dynamic unless told: a deformable convolution needs its channel counts (they fix
its group counts), so give the shapes with ``input=`` (``-1`` for a dynamic batch) when
one reads a model input directly. The GridSample forms compute their sizes in the graph.

OpenVINO's CPU plugin may compute in bfloat16 by default on CPUs that have it: pin
``INFERENCE_PRECISION_HINT`` to ``f32`` to get float32 numbers. Importing ``openvino``
makes Numba choose its ``tbb`` threading layer in that process.
"""
import numpy as np
import openvino as ov
import openvino.opset8 as ops8
import openvino.opset13 as ops
from openvino.frontend.onnx import ConversionExtension as OnnxConversionExtension
from openvino.frontend.pytorch import ConversionExtension as PyTorchConversionExtension

from . import gridsample_form as form


class OpenVINOBuilder:
    """The graph operations of ``dcn_ref.gridsample_form``, as OpenVINO operations. A size
    that is dynamic in the graph is a ``Size``, computed from the tensor's ShapeOf."""

    def size(self, x, axis):
        dim = x.get_partial_shape()[axis]
        if dim.is_static:
            return dim.get_length()
        return Size(ops.gather(ops.shape_of(x), _ints([axis]), _ints(0)).output(0))

    def size_vector(self, sizes, like):
        parts = [Size.lift(s).output for s in sizes]
        return ops.convert(ops.concat(parts, 0), like.get_element_type()).output(0)

    def arange(self, n, like):
        stop = ops.squeeze(Size.lift(n).output, _ints([0]))
        return ops.range(_ints(0), stop, _ints(1),
                         output_type=like.get_element_type()).output(0)

    def reshape(self, x, sizes):
        if all(isinstance(s, int) for s in sizes):
            shape = _ints(sizes)
        else:
            shape = ops.concat([Size.lift(s).output for s in sizes], 0).output(0)
        return ops.reshape(x, shape, special_zero=False).output(0)

    def transpose(self, x, perm):
        return ops.transpose(x, _ints(perm)).output(0)

    def slice(self, x, axis, start, stop):
        return ops8.slice(x, _ints([start]), _ints([stop]), _ints([1]), _ints([axis])).output(0)

    def swap_last(self, x):
        return ops.gather(x, _ints([1, 0]), _ints(-1)).output(0)

    def add(self, a, b):
        return ops.add(a, self._tensor(b, a)).output(0)

    def sub(self, a, b):
        return ops.subtract(a, self._tensor(b, a)).output(0)

    def mul(self, a, b):
        return ops.multiply(a, self._tensor(b, a)).output(0)

    def div(self, a, b):
        return ops.divide(a, self._tensor(b, a)).output(0)

    def sum(self, x, axis):
        return ops.reduce_sum(x, _ints([axis]), keep_dims=False).output(0)

    def grid_sample(self, x, grid, padding_mode):
        attributes = {"align_corners": False, "mode": "bilinear", "padding_mode": padding_mode}
        return ops.grid_sample(x, grid, attributes).output(0)

    @staticmethod
    def _tensor(value, like):
        if isinstance(value, ov.Output):
            return value
        return ops.constant(np.asarray(value, like.get_element_type().to_dtype())).output(0)


class Size:
    """A size that is known only when the graph runs: an int64 tensor of shape (1,), with
    the arithmetic the GridSample form does on sizes (* and // with ints and Sizes)."""

    def __init__(self, output):
        self.output = output

    @staticmethod
    def lift(value):
        return value if isinstance(value, Size) else Size(_ints([int(value)]))

    def __mul__(self, other):
        return Size(ops.multiply(self.output, Size.lift(other).output).output(0))

    __rmul__ = __mul__

    def __floordiv__(self, other):            # sizes are positive: Divide's floor is exact
        return Size(ops.divide(self.output, Size.lift(other).output).output(0))


def _ints(values):
    return ops.constant(np.asarray(values, np.int64)).output(0)


def _sizes(x):
    """The sizes of x, None where one is dynamic."""
    return tuple(d.get_length() if d.is_static else None for d in x.get_partial_shape())


def deformable_convolution(input, offset, weight, bias, stride, padding, dilation, mask,
                           bilinear_interpolation_pad=True):
    """torchvision's deform_conv2d as OpenVINO operations: opset 8's DeformableConvolution
    (groups and offset groups from the shapes) and an Add for the bias (None: none)."""
    b = OpenVINOBuilder()
    groups, offset_groups = form.deform_conv2d_groups(*(_sizes(v) for v in (input, weight, offset)))
    out = ops8.deformable_convolution(
        input, offset, weight, list(stride), list(padding), list(padding), list(dilation),
        mask=mask, group=groups, deformable_group=offset_groups,
        bilinear_interpolation_pad=bilinear_interpolation_pad).output(0)
    if bias is not None:
        out = b.add(out, b.reshape(bias, [1, -1, 1, 1]))
    return out


# -- the ONNX reader ---------------------------------------------------------------------

def onnx_extensions(bilinear_interpolation_pad=True):
    """The rule for ONNX's DeformConv, for ``openvino.convert_model(path, extension=...)``
    or ``openvino.Core().add_extension``.

    Parameters
    ----------
    bilinear_interpolation_pad : bool, default True
        The border rule of the DeformableConvolution it becomes; True is ONNX's own rule.

    Returns
    -------
    list of openvino.frontend.onnx.ConversionExtension
    """
    def convert(node):
        inputs = [_onnx_input(node, i) for i in range(5)]
        input, weight, offset, bias, mask = inputs
        pads = _onnx_attribute(node, "pads", [0, 0, 0, 0])
        if list(pads[:2]) != list(pads[2:]):
            raise ValueError(f"DeformConv: expected the same pads at both ends, got {pads}")
        out = deformable_convolution(
            input, offset, weight, bias, _onnx_attribute(node, "strides", [1, 1]), pads[:2],
            _onnx_attribute(node, "dilations", [1, 1]), mask, bilinear_interpolation_pad)
        return [out]
    return [OnnxConversionExtension("DeformConv", convert)]


def _onnx_input(node, index):
    """Input ``index`` of an ONNX node, None where it is absent (or given as "")."""
    if index >= node.get_input_size():
        return None
    value = node.get_input(index)
    return None if value.get_node().get_type_name() == "NullNode" else value


def _onnx_attribute(node, name, default):
    return list(node.get_attribute(name)) if node.has_attribute(name) else default


# -- the PyTorch converter ---------------------------------------------------------------

def pytorch_extensions(bilinear_interpolation_pad=True):
    """The rules for the ``dcn_ref::*`` ops, for ``openvino.convert_model(torch_model,
    example_input=..., input=..., extension=...)``.

    Parameters
    ----------
    bilinear_interpolation_pad : bool, default True
        The border rule of the DeformableConvolution that ``deform_conv2d`` becomes.

    Returns
    -------
    list of openvino.frontend.pytorch.ConversionExtension
        One for each op that has a standard form: ``deform_conv2d``, ``dcnv3``, ``dcnv4``,
        ``bilinear_sample``, ``offset_sample``. The RoI pools have none (their samples per
        bin depend on the box); OpenVINO names them as ops it cannot convert.
    """
    def tensors(node, count):
        return [None if _is_none(node, i) else node.get_input(i) for i in range(count)]

    def deform_conv2d(node):
        input, offset, weight, bias = tensors(node, 4)
        mask = None if _is_none(node, 7) else node.get_input(7)
        stride, padding, dilation = (node.get_values_from_const_input(i) for i in (4, 5, 6))
        return [deformable_convolution(input, offset, weight, bias, stride, padding, dilation,
                                       mask, bilinear_interpolation_pad)]

    def dcnv3(node):
        input, offset, mask = tensors(node, 3)
        return [form.dcnv3(OpenVINOBuilder(), input, offset, mask, *_constants(node, 3, 10))]

    def dcnv4(node):
        input, offset_mask = tensors(node, 2)
        return [form.dcnv4(OpenVINOBuilder(), input, offset_mask, *_constants(node, 2, 9))]

    def bilinear_sample(node):
        image, coords = tensors(node, 2)
        return [form.bilinear_sample(OpenVINOBuilder(), image, coords, *_constants(node, 2, 3))]

    def offset_sample(node):
        input, offset = tensors(node, 2)
        return [form.offset_sample(OpenVINOBuilder(), input, offset, *_constants(node, 2, 3))]

    rules = {"deform_conv2d": deform_conv2d, "dcnv3": dcnv3, "dcnv4": dcnv4,
             "bilinear_sample": bilinear_sample, "offset_sample": offset_sample}
    return [PyTorchConversionExtension(f"dcn_ref::{name}", rule) for name, rule in rules.items()]


def _is_none(node, index):
    """Whether argument ``index`` of a converted op is None (an absent optional tensor)."""
    value = node.get_input(index)
    return (value.get_element_type() == ov.Type.dynamic
            and node.get_values_from_const_input(index) is None)


def _constants(node, start, stop):
    """The op's non-tensor arguments start..stop-1 (ints, int lists, floats, bools, str)."""
    return [node.get_values_from_const_input(i) for i in range(start, stop)]
