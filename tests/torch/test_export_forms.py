"""The export forms of the ops (dcn_ref.gridsample_form through the PyTorch builder), run
in eager PyTorch against the ops themselves; and the ops stay custom ops outside an ONNX
export. What ONNX Runtime and OpenVINO make of the forms is tests/export's."""
import numpy as np
import pytest
import torch

import dcn_ref.torch as dt
from dcn_ref import gridsample_form as form
from dcn_ref import ops
from dcn_ref.torch.export import TorchBuilder, decompositions

B = TorchBuilder()
t = torch.from_numpy


def out_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


# (kernel_size, stride, padding, dilation, group, offset_scale, remove_center)
DCNV3_GEOMETRIES = [(3, 1, 1, 1, 2, 1.0, False), ((3, 2), (2, 1), (1, 0), (1, 2), 3, 0.7, False),
                    (3, 1, 0, 1, 1, 1.5, True), (5, 2, 2, 1, 2, 1.0, True)]


@pytest.mark.parametrize("geometry", DCNV3_GEOMETRIES)
def test_dcnv3_and_dcnv4_forms_equal_the_ops(geometry):
    ks, st, pd, dl, group, offset_scale, remove_center = geometry
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (np.broadcast_to(v, 2) for v in (ks, st, pd, dl))
    rng = np.random.default_rng(0)
    N, H, W, C = 2, 7, 6, 6
    H_out, W_out = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    P = kh * kw - remove_center
    x = rng.normal(size=(N, H, W, C))
    offset = rng.normal(scale=2, size=(N, H_out, W_out, group * P * 2))  # many points outside
    mask = rng.normal(size=(N, H_out, W_out, group * P))
    args = (ks, st, pd, dl, group, offset_scale, remove_center)
    np.testing.assert_allclose(form.dcnv3(B, t(x), t(offset), t(mask), *args).numpy(),
                               ops.dcnv3(x, offset, mask, *args), rtol=0, atol=1e-12)
    packed = np.concatenate([offset.reshape(N, H_out, W_out, group, 2 * P),
                             mask.reshape(N, H_out, W_out, group, P)], -1)
    padding = rng.normal(size=(N, H_out, W_out, 5))                     # never read
    offset_mask = np.concatenate([packed.reshape(N, H_out, W_out, -1), padding], -1)
    np.testing.assert_allclose(form.dcnv4(B, t(x), t(offset_mask), *args).numpy(),
                               ops.dcnv4(x, offset_mask, *args), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_sampling_forms_equal_the_ops(padding_mode):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 5, 6))
    coords = rng.uniform(-2, 7, size=(3, 40, 2))           # inside, in both bands, outside
    coords[0, :6] = [[-1, 0], [0, -1], [4, 5], [4.5, 2], [2, 5.5], [-0.5, -0.5]]
    np.testing.assert_allclose(form.bilinear_sample(B, t(image), t(coords), padding_mode).numpy(),
                               ops.bilinear_sample(image, coords, padding_mode), rtol=0, atol=1e-12)
    x = rng.normal(size=(2, 3, 5, 6))
    offset = rng.normal(scale=3, size=(2, 6, 5, 6))
    np.testing.assert_allclose(form.offset_sample(B, t(x), t(offset), padding_mode).numpy(),
                               ops.offset_sample(x, offset, padding_mode), rtol=0, atol=1e-12)


def test_the_ops_stay_custom_ops_outside_an_onnx_export():
    class Model(torch.nn.Module):
        def forward(self, x, offset, mask):
            return dt.dcnv3(x, offset, mask, padding=1, group=2)

    rng = np.random.default_rng(2)
    args = (t(rng.normal(size=(1, 4, 4, 4))), t(rng.normal(size=(1, 4, 4, 36))),
            t(rng.normal(size=(1, 4, 4, 18))))
    program = torch.export.export(Model(), args)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["dcn_ref.dcnv3.default"]
    # ...and become their forms through the decomposition table, for torch.onnx.export
    decomposed = program.run_decompositions(decompositions())
    targets = {str(n.target) for n in decomposed.graph.nodes if n.op == "call_function"}
    assert any(n.startswith("aten.grid_sampler") for n in targets), targets
    assert not any("dcn_ref" in n for n in targets), targets
    np.testing.assert_allclose(decomposed.module()(*args).numpy(), Model()(*args).numpy(),
                               rtol=0, atol=1e-12)
