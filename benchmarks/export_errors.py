"""How far the exported ops are from dcn_ref's own output, runtime by runtime.

    python benchmarks/export_errors.py

Exports the test model of tests/export (every exportable op of dcn_ref.torch: a DCNv2
layer, a grouped deform_conv2d with two offset groups, the DCNv3 and DCNv4 blocks, dcnv3
and dcnv4 with rectangular kernels, strides and remove_center, bilinear_sample and
offset_sample in both padding modes) with ``torch.onnx.export(..., dynamo=True)`` at batch
2 with a dynamic batch, runs it at batch 3 in ONNX Runtime (CPU) and in OpenVINO (its ONNX
reader, and its PyTorch converter on the model itself; in a process of its own, see
tests/export/openvino_run.py), and prints each output's largest error against dcn_ref in
float32: max |runtime - dcn_ref|, and that over the largest |dcn_ref| (at least 1).
Needs the torch and export extras.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "export")
sys.path.insert(0, TESTS)

from export_models import OUTPUTS, make_inputs, make_model  # noqa: E402


def errors(got, expected):
    diff = float(np.abs(got - expected).max())
    return diff, diff / max(1.0, float(np.abs(expected).max()))


def main():
    model = make_model()
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, make_inputs(2, seed=0), dynamo=True, verbose=False,
                                dynamic_shapes=({0: batch}, {0: batch}),
                                input_names=["x", "coords"], output_names=list(OUTPUTS))
    inputs = make_inputs(3, seed=1)
    with torch.no_grad():
        expected = [out.numpy() for out in model(*inputs)]
    with tempfile.TemporaryDirectory() as folder:
        path, out = os.path.join(folder, "model.onnx"), os.path.join(folder, "openvino.npz")
        program.save(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        from_ort = session.run(None, {"x": inputs[0].numpy(), "coords": inputs[1].numpy()})
        subprocess.run([sys.executable, os.path.join(TESTS, "openvino_run.py"), path, out],
                       check=True, capture_output=True)
        openvino = dict(np.load(out))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}; exported at batch 2 "
          f"(dynamic), run at batch 3, float32")
    print(f"{'output':<24} {'shape':<16} {'ONNX Runtime':>20} {'OpenVINO (ONNX)':>20} "
          f"{'OpenVINO (PyTorch)':>20}")
    for i, name in enumerate(OUTPUTS):
        cells = [errors(from_ort[i], expected[i]), errors(openvino[f"onnx/{name}"], expected[i]),
                 errors(openvino[f"pytorch/{name}"], expected[i])]
        print(f"{name:<24} {str(expected[i].shape):<16} " + " ".join(
            f"{abs_:>9.1e} ({rel:.1e})" for abs_, rel in cells))
    print("each cell: max |runtime - dcn_ref| (the same over the largest |dcn_ref|, at least 1)")


if __name__ == "__main__":
    main()
