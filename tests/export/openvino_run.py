"""Run in a process of its own by test_export.py, since importing openvino changes Numba's
threading layer for the whole process: the test model in OpenVINO, through its ONNX reader
(the exported file, with dcn_ref's DeformConv rule) and through its PyTorch converter (with
the rules for the dcn_ref ops), on a batch of 3; the outputs go to an .npz file.

    python openvino_run.py MODEL.onnx OUT.npz
"""
import sys

import numpy as np
import openvino as ov

from dcn_ref.openvino import onnx_extensions, pytorch_extensions
from export_models import OUTPUTS, make_inputs, make_model

F32 = {"INFERENCE_PRECISION_HINT": "f32"}      # not the bf16 the CPU plugin may pick


def run(model, inputs):
    compiled = ov.Core().compile_model(model, "CPU", F32)
    return compiled([x.numpy() for x in inputs])


def main(onnx_path, out_path):
    inputs = make_inputs(3, seed=1)
    results = {}
    from_onnx = run(ov.convert_model(onnx_path, extension=onnx_extensions()), inputs)
    from_torch = run(ov.convert_model(make_model(), example_input=make_inputs(2, seed=0),
                                      input=[(-1, 8, 8, 8), (-1, 12, 2)],
                                      extension=pytorch_extensions()), inputs)
    for i, name in enumerate(OUTPUTS):
        results[f"onnx/{name}"] = from_onnx[i]
        results[f"pytorch/{name}"] = from_torch[i]
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
