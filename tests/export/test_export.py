"""A model of every exportable op of dcn_ref.torch, exported once with
torch.onnx.export(..., dynamo=True) at batch 2 with a dynamic batch, then run at batch 3 in
ONNX Runtime and in OpenVINO (its ONNX reader, and its PyTorch converter on the model
itself), each compared with dcn_ref's own output."""
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

import dcn_ref.torch as dt
from dcn_ref.torch.export import decompositions
from export_models import OUTPUTS, make_inputs, make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HERE = os.path.dirname(__file__)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_matches(got, expected, name):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * scale, err_msg=name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(path of the ONNX file, the model, its inputs at batch 3, dcn_ref's outputs there)."""
    model = make_model()
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, make_inputs(2, seed=0), dynamo=True,
                                dynamic_shapes=({0: batch}, {0: batch}),
                                input_names=["x", "coords"], output_names=list(OUTPUTS))
    path = tmp_path_factory.mktemp("export") / "everything.onnx"
    program.save(str(path))
    inputs = make_inputs(3, seed=1)
    with torch.no_grad():
        expected = [out.numpy() for out in model(*inputs)]
    return path, inputs, expected


def test_the_export_is_standard_onnx_with_one_deformconv_per_deform_conv2d(exported):
    model = onnx.load(str(exported[0]))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) >= 19
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}     # nothing custom
    types = Counter(n.op_type for n in model.graph.node)
    # the DCNv2 layer and the grouped deform_conv2d; 2 dcnv3, 2 dcnv4, 2 bilinear, 2 offset
    assert (types["DeformConv"], types["GridSample"]) == (2, 8)
    grouped = [n for n in model.graph.node if n.op_type == "DeformConv"
               and {a.name: a for a in n.attribute}["group"].i == 2]
    assert len(grouped) == 1 and len(grouped[0].input) == 3          # no bias, no mask
    attributes = {a.name: list(a.ints) or a.i for a in grouped[0].attribute}
    assert attributes["offset_group"] == 2 and attributes["kernel_shape"] == [2, 3]
    batch = [i.type.tensor_type.shape.dim[0] for i in model.graph.input]
    assert all(d.dim_param and not d.dim_value for d in batch)         # a dynamic batch


def test_onnxruntime_runs_it_at_another_batch_and_matches(exported):
    path, inputs, expected = exported
    outputs = session(path).run(None, {"x": inputs[0].numpy(), "coords": inputs[1].numpy()})
    for name, got, want in zip(OUTPUTS, outputs, expected):
        assert got.shape == want.shape and got.shape[0] == 3, name
        assert_matches(got, want, name)


def test_openvino_runs_it_through_its_onnx_reader_and_its_pytorch_converter(exported, tmp_path):
    # in a process of its own: importing openvino here would change Numba's threading
    # layer for the rest of the session (tests/export/conftest.py skips without it)
    path, inputs, expected = exported
    out = tmp_path / "openvino.npz"
    imported_before = "openvino" in sys.modules          # by another test file of this worker
    result = subprocess.run([sys.executable, os.path.join(HERE, "openvino_run.py"), str(path),
                             str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("openvino" in sys.modules) == imported_before  # only the child imported it
    got = np.load(out)
    for route in ("onnx", "pytorch"):
        for name, want in zip(OUTPUTS, expected):
            assert got[f"{route}/{name}"].shape == want.shape, (route, name)
            assert_matches(got[f"{route}/{name}"], want, f"{route}/{name}")


class RoIModel(torch.nn.Module):
    def forward(self, x, rois):
        return dt.deform_roi_pool(x, rois, output_size=2)


def test_the_roi_pools_stop_the_export_naming_the_op():
    x, rois = torch.randn(1, 2, 6, 6), torch.tensor([[0.0, 0.5, 0.5, 4.0, 4.0]])
    with pytest.raises(Exception, match=r"No ONNX function found for .*dcn_ref\.deform_roi_pool"):
        torch.onnx.export(RoIModel(), (x, rois), dynamo=True)


class SmallModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dcn = dt.DeformConv2d(4, 4, 3, padding=1, bias=False)

    def forward(self, x, offset, mask):
        def last(t):                                           # (N, C, H, W) -> (N, H, W, C)
            return t.permute(0, 2, 3, 1)
        return self.dcn(x, offset, mask), dt.dcnv3(last(x), last(offset.repeat(1, 2, 1, 1)),
                                                   last(mask.repeat(1, 2, 1, 1)), 3,
                                                   padding=1, group=2)


def small_inputs(batch):
    g = torch.Generator().manual_seed(batch)
    return (torch.randn(batch, 4, 5, 5, generator=g), torch.randn(batch, 18, 5, 5, generator=g),
            torch.rand(batch, 9, 5, 5, generator=g))


def test_an_exported_program_exports_after_the_decompositions(tmp_path):
    model = SmallModel()
    program = torch.export.export(model, small_inputs(2))
    onnx_program = torch.onnx.export(program.run_decompositions(decompositions()), dynamo=True)
    onnx_program.save(str(tmp_path / "small.onnx"))
    inputs = small_inputs(2)
    outputs = session(tmp_path / "small.onnx").run(None, dict(zip(
        ["x", "offset", "mask"], (t.numpy() for t in inputs))))
    for got, want in zip(outputs, model(*inputs)):
        assert_matches(got, want.detach().numpy(), "small")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")    # the exporter's own,
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # and its tracer's on constants
def test_the_torchscript_exporter_writes_deformconv_and_traces_the_gridsample_forms(tmp_path):
    model = SmallModel()                            # deform_conv2d with a mask and no bias
    path = tmp_path / "legacy.onnx"
    names = ["x", "offset", "mask"]
    torch.onnx.export(model, small_inputs(2), str(path), dynamo=False, opset_version=19,
                      input_names=names, output_names=["dcn", "dcnv3"],
                      dynamic_axes={n: {0: "batch"} for n in names + ["dcn", "dcnv3"]})
    types = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert (types["DeformConv"], types["GridSample"]) == (1, 1), types
    inputs = small_inputs(3)
    outputs = session(path).run(None, dict(zip(names, (t.numpy() for t in inputs))))
    for got, want in zip(outputs, model(*inputs)):
        assert_matches(got, want.detach().numpy(), "legacy")
