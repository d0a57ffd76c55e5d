"""The peers of ``dcn-ref bench``: the inference runtimes' deformable convolutions, and
torch's plain convolution as the physical reference.

Inference runtimes have CPU kernels of their own for a deformable convolution, forward only:

    OpenVINO      ``DeformableConvolution`` (opset 8) with ``bilinear_interpolation_pad=True``
                  (torchvision's border rule; without it a sample within one pixel of the
                  border reads differently), compiled for the CPU with
                  ``INFERENCE_PRECISION_HINT=f32`` (its CPU plugin runs bf16 where the CPU
                  has it, unless told) and ``INFERENCE_NUM_THREADS`` = our thread count;
                  the precision that ran is read back and printed
    ONNX Runtime  ``DeformConv`` (opset 19, IR version 10: it refuses the higher IR versions
                  a recent ``onnx`` writes), intra-op threads = our thread count, one
                  inter-op thread, and its threads' spinning after each run turned off
                  (``session.intra_op.allow_spinning=0``): spinning threads would take the
                  cores from the calls timed after it, and the interleaved figures would lie

Each is optional (``pip install 'dcn-ref[peers]'``): a runtime that is not installed is
left out. Their forward and ours are timed round by round in one process, on the bench's
float32 inputs, and each peer's output is compared with ours.

The physical reference is torch's ``conv2d`` (oneDNN) on the same shape: a deformable
convolution does the same products and, on top, the sampling. Its table gives our
deformable forward and forward+backward over torch's plain ones, timed round by round.

Importing ``openvino`` loads oneTBB, and a Numba that has not yet started its threads then
picks its ``tbb`` threading layer instead of ``omp``. A user's process has run our kernels
with ``omp`` long before, so the bench runs ours before it imports a peer, and prints the
layer that ran.
"""
import numpy as np

from .shapes import SHAPES
from .timing import interleaved_ms


def _forward(shape, a):
    from .. import ops
    return lambda: ops.deform_conv2d(a["input"], a["offset"], a["weight"], None,
                                     stride=shape.stride, padding=1, mask=a["mask"])


def _both(shape, a):
    from .. import ops
    p = {"stride": shape.stride, "padding": 1}

    def run():
        ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, mask=a["mask"], **p)
        ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                   mask=a["mask"], **p)
    return run


# -- the runtimes ------------------------------------------------------------------------

def openvino_call(shape, a, threads):
    """(call, precision) running OpenVINO's DeformableConvolution on a's arrays, or None
    when openvino is not installed."""
    try:
        import openvino as ov
        import openvino.opset8 as opset
    except ImportError:
        return None
    names = ["input", "offset"] + (["mask"] if a["mask"] is not None else [])
    params = {k: opset.parameter(a[k].shape, np.float32, name=k) for k in names}
    node = opset.deformable_convolution(
        params["input"], params["offset"], opset.constant(a["weight"]),
        strides=[shape.stride] * 2, pads_begin=[1, 1], pads_end=[1, 1], dilations=[1, 1],
        mask=params.get("mask"), bilinear_interpolation_pad=True)
    model = ov.Model([node], [params[k] for k in names])
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feed = {k: a[k] for k in names}

    def call():
        return request.infer(feed)[0]
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")      # an ov.Type: "f32"
    return call, getattr(precision, "to_string", lambda: str(precision))()


def onnxruntime_call(shape, a, threads):
    """(call, "f32") running ONNX Runtime's DeformConv on a's arrays, or None when onnx or
    onnxruntime is not installed."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    names = ["input", "offset"] + (["mask"] if a["mask"] is not None else [])
    node = helper.make_node("DeformConv", ["input", "weight", "offset", "", *names[2:]],
                            ["out"], kernel_shape=[3, 3], strides=[shape.stride] * 2,
                            pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=1)
    graph = helper.make_graph(
        [node], "deform_conv2d",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, a[k].shape) for k in names],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a["weight"], "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)],
                              ir_version=10)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feed = {k: a[k] for k in names}

    def call():
        return session.run(None, feed)[0]
    return call, "f32"


RUNTIMES = {"OpenVINO": openvino_call, "ONNX Runtime": onnxruntime_call}


# -- the tables ----------------------------------------------------------------------------

def measure(inputs, repeat, threads):
    """{"peers": {shape: {"ours": ms, name: (ms, precision, max |diff|)}}, "torch_conv":
    {shape: (ours fwd, torch fwd, ours f+b, torch f+b)} or None, "layer": Numba's layer}."""
    import numba
    for name, a in inputs.items():          # ours first: Numba's threads start with its layer
        _forward(SHAPES[name], a)()
    figures = {"layer": numba.threading_layer(), "peers": {}, "torch_conv": None}
    for name, a in inputs.items():
        shape = SHAPES[name]
        ours = _forward(shape, a)
        reference = ours()
        peers = {}
        for runtime, build in RUNTIMES.items():
            built = build(shape, a, threads)
            if built is not None:
                peers[runtime] = built
        times = interleaved_ms([ours] + [call for call, _ in peers.values()], repeat)
        row = {"ours": times[0]}
        for (runtime, (call, precision)), ms in zip(peers.items(), times[1:]):
            row[runtime] = (ms, precision, float(np.abs(call() - reference).max()))
        figures["peers"][name] = row
    figures["torch_conv"] = _torch_conv(inputs, repeat)
    return figures


def _torch_conv(inputs, repeat):
    try:
        import torch
    except ImportError:
        return None
    result = {}
    for name, a in inputs.items():
        shape = SHAPES[name]
        x = torch.tensor(a["input"], requires_grad=True)
        w = torch.tensor(a["weight"], requires_grad=True)
        g = torch.tensor(a["grad"])

        def conv(x=x, w=w, shape=shape):
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, None, stride=shape.stride, padding=1)

        def conv_both(x=x, w=w, g=g, shape=shape):
            torch.nn.functional.conv2d(x, w, None, stride=shape.stride, padding=1).backward(g)

        result[name] = tuple(interleaved_ms([_forward(shape, a), conv, _both(shape, a),
                                             conv_both], repeat))
    return result


def report(figures, repeat, threads, out=print):
    """Print the peers table and the torch-conv table."""
    out("")
    out(f"peers, float32 forward, {threads} threads each, median of {repeat} rounds "
        f"(interleaved), ms; Numba's threading layer: {figures['layer']}")
    rows = figures["peers"]
    if not any(len(row) > 1 for row in rows.values()):
        out("  (no peer installed: pip install 'dcn-ref[peers]' for OpenVINO and ONNX Runtime)")
    else:
        out(f"{'shape':<7}{'dcn_ref':>9}" + "".join(
            f"{name:>14}{'precision':>10}{name + '/ours':>18}{'max |diff|':>12}"
            for name in RUNTIMES))
        for name, row in rows.items():
            line = f"{'(' + name + ')':<7}{row['ours']:>9.1f}"
            for runtime in RUNTIMES:
                if runtime in row:
                    ms, precision, diff = row[runtime]
                    line += f"{ms:>14.1f}{precision:>10}{ms / row['ours']:>18.2f}{diff:>12.1e}"
                else:
                    line += f"{'-':>14}{'':>10}{'':>18}{'':>12}"
            out(line)
    if figures["torch_conv"] is not None:
        out("")
        out(f"deform_conv2d against torch's conv2d on the same shape, median of {repeat} rounds "
            f"(interleaved), ms")
        out(f"{'shape':<7}{'ours fwd':>10}{'conv fwd':>10}{'ratio':>8}{'ours f+b':>10}"
            f"{'conv f+b':>10}{'ratio':>8}")
        for name, (f, cf, b, cb) in figures["torch_conv"].items():
            out(f"{'(' + name + ')':<7}{f:>10.1f}{cf:>10.1f}{f / cf:>8.2f}{b:>10.1f}{cb:>10.1f}"
                f"{b / cb:>8.2f}")


def run(inputs, repeat, out=print):
    """Measure and print; return the figures."""
    import numba
    threads = numba.get_num_threads()
    figures = measure(inputs, repeat, threads)
    report(figures, repeat, threads, out)
    return figures
