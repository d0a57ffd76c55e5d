"""The implementations ``dcn-ref conformance`` checks, each through its own API.

    torchvision            torchvision.ops.deform_conv2d on CPU tensors (and its autograd)
    torchvision:cuda       the same on CUDA tensors
    onnxruntime            a one-node ONNX model (DeformConv, opset 19) in ONNX Runtime's CPU
    openvino               opset 8's DeformableConvolution on OpenVINO's CPU plugin, float32
    openvino:pad=false       precision pinned, bilinear_interpolation_pad True (or False)
    MODULE:FUNCTION        any callable with torchvision's signature, torch tensors in and
                           out; gradients where its output carries autograd history

Each peer takes a case's ``Arrays`` and returns NumPy arrays; a peer that cannot be
loaded (a runtime not installed, a module that does not import) is a ``PeerError``.
"""
import importlib
import os
import sys

import numpy as np


class PeerError(ValueError):
    """The implementation named cannot be used (not installed, not found, not callable)."""


class Peer:
    """One implementation of deform_conv2d. ``forward(a)`` -> output; ``gradients(a,
    grad_output)`` -> (input, offset, weight[, bias][, mask]) or None when it has none."""
    name = ""
    description = ""

    def forward(self, a):
        raise NotImplementedError

    def gradients(self, a, grad_output):
        return None


class TorchFunction(Peer):
    """A function with torchvision's signature, on torch tensors of one device."""

    def __init__(self, name, function, device="cpu", description=None):
        import torch
        self.torch, self.name, self.function, self.device = torch, name, function, device
        self.description = description or f"{name} (torch tensors on {device})"

    def _tensors(self, a, requires_grad):
        t = {}
        for field in ("input", "offset", "weight", "bias", "mask"):
            value = getattr(a, field)
            if value is not None:
                value = self.torch.from_numpy(value).to(self.device)
                value.requires_grad_(requires_grad)
            t[field] = value
        return t

    def _call(self, t, a):
        return self.function(t["input"], t["offset"], t["weight"], t["bias"], stride=a.stride,
                             padding=a.padding, dilation=a.dilation, mask=t["mask"])

    def forward(self, a):
        with self.torch.no_grad():
            return _numpy(self._call(self._tensors(a, False), a))

    def gradients(self, a, grad_output):
        t = self._tensors(a, True)
        out = self._call(t, a)
        if not isinstance(out, self.torch.Tensor) or out.grad_fn is None:
            return None
        out.backward(self.torch.from_numpy(grad_output).to(self.device))
        return tuple(_numpy(t[f].grad) if t[f].grad is not None else np.zeros(t[f].shape)
                     for f in ("input", "offset", "weight", "bias", "mask") if t[f] is not None)


def _numpy(tensor):
    return tensor.detach().cpu().numpy()


class OnnxRuntime(Peer):
    """DeformConv (opset 19) as a one-node model in ONNX Runtime's CPU execution provider."""
    name = "onnxruntime"

    def __init__(self):
        try:
            import onnx
            import onnxruntime
        except ImportError as exc:
            raise PeerError(f"onnxruntime: not installed ({exc.name}); pip install "
                            f"'dcn-ref[export]'") from None
        self.onnx, self.ort = onnx, onnxruntime
        self.description = f"ONNX Runtime {onnxruntime.__version__}, CPU, DeformConv opset 19"

    def _model(self, a):
        helper, TensorProto = self.onnx.helper, self.onnx.TensorProto
        elem = TensorProto.FLOAT if a.input.dtype == np.float32 else TensorProto.DOUBLE
        kh, kw = a.weight.shape[2:]
        names = ["X", "W", "offset", "B" if a.bias is not None else "", "mask"]
        if a.mask is None:
            names = names[:4] if a.bias is not None else names[:3]
        node = helper.make_node(
            "DeformConv", names, ["Y"], dilations=list(a.dilation),
            group=a.input.shape[1] // a.weight.shape[1], kernel_shape=[kh, kw],
            offset_group=a.offset.shape[1] // (2 * kh * kw), pads=[*a.padding, *a.padding],
            strides=list(a.stride))
        inputs = [helper.make_tensor_value_info(n, elem, None) for n in names if n]
        graph = helper.make_graph([node], "deform_conv2d", inputs,
                                  [helper.make_tensor_value_info("Y", elem, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 10          # what ONNX Runtime reads (newer onnx writes 11+)
        return model.SerializeToString(), [n for n in names if n]

    def forward(self, a):
        model, names = self._model(a)
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = self.ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = dict(zip(names, (v for v in (a.input, a.weight, a.offset, a.bias, a.mask)
                                 if v is not None)))
        return session.run(None, feeds)[0]


class OpenVINO(Peer):
    """opset 8's DeformableConvolution (and an Add for the bias) on OpenVINO's CPU plugin,
    with float32 inference precision."""

    def __init__(self, bilinear_interpolation_pad=True):
        try:
            import openvino
            from .. import openvino as rules
        except ImportError as exc:
            raise PeerError(f"openvino: not installed ({exc.name}); pip install "
                            f"'dcn-ref[export]'") from None
        self.ov, self.rules, self.pad = openvino, rules, bilinear_interpolation_pad
        self.name = "openvino" if bilinear_interpolation_pad else "openvino:pad=false"
        self.description = (f"OpenVINO {openvino.__version__.split('-')[0]}, CPU, "
                            f"DeformableConvolution-8, bilinear_interpolation_pad="
                            f"{bilinear_interpolation_pad}")
        self.core = openvino.Core()

    def forward(self, a):
        ops = self.ov.opset8
        given = {k: v for k, v in a._asdict().items()
                 if k in ("input", "offset", "weight", "bias", "mask") and v is not None}
        params = {k: ops.parameter(list(v.shape), v.dtype, name=k) for k, v in given.items()}
        out = self.rules.deformable_convolution(
            params["input"].output(0), params["offset"].output(0), params["weight"].output(0),
            params["bias"].output(0) if "bias" in params else None, a.stride, a.padding,
            a.dilation, params["mask"].output(0) if "mask" in params else None, self.pad)
        model = self.ov.Model([out], list(params.values()))
        compiled = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled([given[k] for k in params])[0]


def peer(name):
    """The implementation called ``name`` (see the module docstring); PeerError if it
    cannot be loaded."""
    if name == "torchvision" or name == "torchvision:cuda":
        try:
            import torch
            import torchvision
        except ImportError as exc:
            raise PeerError(f"{name}: not installed ({exc.name}); pip install "
                            f"'dcn-ref[torch]'") from None
        device = "cuda" if name.endswith(":cuda") else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise PeerError(f"{name}: PyTorch sees no CUDA device")
        return TorchFunction(name, torchvision.ops.deform_conv2d, device,
                             f"torchvision {torchvision.__version__.split('+')[0]}, "
                             f"deform_conv2d on {device.upper()}")
    if name == "onnxruntime":
        return OnnxRuntime()
    if name in ("openvino", "openvino:pad=true", "openvino:pad=false"):
        return OpenVINO(bilinear_interpolation_pad=not name.endswith("false"))
    module_name, sep, function_name = name.partition(":")
    if not (sep and module_name and function_name):
        raise PeerError(f"expected torchvision, torchvision:cuda, onnxruntime, openvino, "
                        f"openvino:pad=false or MODULE:FUNCTION, got {name!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:   # as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PeerError(f"{name}: cannot import {module_name} ({type(exc).__name__}: {exc})") \
            from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PeerError(f"{name}: {module_name} has no function {function_name}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise PeerError(f"{name}: MODULE:FUNCTION takes torch tensors; pip install "
                        f"'dcn-ref[torch]'") from None
    return TorchFunction(name, function)
