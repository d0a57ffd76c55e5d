"""The bridge as a drop-in for torchvision's deformable convolution: what code written for
torchvision relies on (TorchScript, torch.fx, its errors, empty and non-contiguous batches,
gradients), and the same for the other functions and modules.

References: the loop version of the equations (``dcn_ref.reference``), finite differences
(``torch.autograd.gradcheck``) and the eager functions themselves for the compiled forms.
"""
import warnings

import pytest
import torch
from torch import nn

import dcn_ref.torch as dt
from dcn_ref import reference
from torch_cases import cases

CASES = {case_id: (fn, args) for case_id, _, fn, args in cases()}

# torchvision's own test geometry: rectangular kernel, channel groups, offset groups,
# asymmetric stride, padding and dilation
GEOMETRY = dict(stride=(2, 1), padding=(1, 0), dilation=(2, 1))


def script(obj):
    with warnings.catch_warnings():            # torch.jit.script is deprecated in torch 2.x
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(obj)


def deform_args(batch, contiguous, seed=0):
    """input (batch, 6, 5, 4), 3 offset groups, a (2, 3, 3, 2) weight in 2 groups, float64,
    every tensor requiring grad; not contiguous: each a transposed copy's transposed view."""
    g = torch.Generator().manual_seed(seed)
    out_h, out_w = (5 + 2 - 2 * 2 - 1) // 2 + 1, (4 - 1 - 1) + 1

    def make(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, offset = make(batch, 6, 5, 4), make(batch, 3 * 2 * 6, out_h, out_w)
    mask, weight, bias = make(batch, 3 * 6, out_h, out_w), make(2, 3, 3, 2), make(2)
    tensors = [x, offset, mask, weight, bias]
    if not contiguous:
        tensors = [t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.ndim > 1 else t
                   for t in tensors]
        assert batch == 0 or not any(t.is_contiguous() for t in tensors[:4])
    return [t.requires_grad_() for t in tensors]


def loops(x, offset, weight, bias, mask):
    d = (lambda t: None if t is None else t.detach().numpy())
    return torch.from_numpy(reference.deform_conv2d(d(x), d(offset), d(weight), d(bias),
                                                    mask=d(mask), **GEOMETRY))


# -- torchvision's checks ----------------------------------------------------------------

@pytest.mark.parametrize("batch", [0, 3])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "transposed"])
def test_the_module_equals_the_loops_in_any_layout_and_batch(batch, contiguous):
    x, offset, mask, weight, bias = deform_args(batch, contiguous)
    layer = dt.DeformConv2d(6, 2, (3, 2), groups=2, **GEOMETRY).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    for m in (mask, None):
        out = layer(x, offset, m)
        assert out.shape == (batch, 2, 2, 3)
        torch.testing.assert_close(out, loops(x, offset, weight, bias, m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [0, 2])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "transposed"])
def test_gradients_of_the_function_and_of_its_scripted_form_pass_gradcheck(batch, contiguous):
    x, offset, mask, weight, bias = deform_args(batch, contiguous, seed=1)
    scripted = script(dt.deform_conv2d)
    for fn in (dt.deform_conv2d, scripted):
        assert torch.autograd.gradcheck(
            lambda x, o, m, w, b: fn(x, o, w, b, mask=m, **GEOMETRY),
            (x, offset, mask, weight, bias), fast_mode=True)
        assert torch.autograd.gradcheck(
            lambda x, o, w, b: fn(x, o, w, b, GEOMETRY["stride"], GEOMETRY["padding"],
                                  GEOMETRY["dilation"], None),
            (x, offset, weight, bias), fast_mode=True)


def test_wrong_offset_and_mask_shapes_are_runtime_errors_in_torchvisions_words():
    x, offset, mask, _, _ = deform_args(2, True)
    layer = dt.DeformConv2d(6, 2, (3, 2), groups=2, **GEOMETRY).double()
    with pytest.raises(RuntimeError, match="the shape of the offset"):
        layer(x, offset[:, :2])
    with pytest.raises(RuntimeError, match=r"mask.shape\[1\] is not valid"):
        layer(x, offset, mask[:, :2])
    with pytest.raises(ValueError, match=r"^offset: expected a positive multiple of 2\*kh\*kw"):
        layer(x, offset[:, :2])


# -- TorchScript ---------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", CASES)
def test_every_function_scripts_and_its_scripted_form_equals_it(case_id):
    fn, args = CASES[case_id]
    scripted = script(fn)
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    eager, compiled = fn(*args), scripted(*args)
    assert torch.equal(compiled, eager)
    grad = torch.randn(eager.shape, dtype=eager.dtype, generator=torch.Generator().manual_seed(0))
    for g_scripted, g_eager in zip(torch.autograd.grad(compiled, wrt, grad),
                                   torch.autograd.grad(eager, wrt, grad)):
        assert torch.equal(g_scripted, g_eager)


def randomised(module):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


@pytest.mark.parametrize("make, shape", [
    (lambda: dt.DeformConv2d(8, 8, 3, padding=1), None),
    (lambda: dt.DCNv3(8, group=2), (1, 4, 5, 8)),
    (lambda: dt.DCNv3(8, group=2, center_feature_scale=True, remove_center=True), (1, 4, 5, 8)),
    (lambda: dt.DCNv4(8, group=2), (1, 16, 8)),
    (lambda: dt.DCNv4(8, group=2, dw_kernel_size=3, center_feature_scale=True,
                      without_pointwise=True), (1, 16, 8)),
], ids=["DeformConv2d", "DCNv3", "DCNv3_center_scale", "DCNv4", "DCNv4_dw_no_pointwise"])
def test_every_module_scripts_and_its_scripted_form_equals_it(make, shape):
    module = randomised(make().double())
    g = torch.Generator().manual_seed(1)
    if shape is None:
        inputs = (torch.randn(1, 8, 4, 4, generator=g, dtype=torch.float64),
                  torch.randn(1, 18, 4, 4, generator=g, dtype=torch.float64))
    else:
        inputs = (torch.randn(shape, generator=g, dtype=torch.float64),)
    assert torch.equal(script(module)(*inputs), module(*inputs))


# -- torch.fx -------------------------------------------------------------------------------

class OffsetsAndDeformConv(nn.Module):
    """offsets from a convolution, then the deformable convolution: a model holding one."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Conv2d(4, 18, 3, padding=1)
        self.deform = dt.DeformConv2d(4, 5, 3, padding=1)

    def forward(self, x):
        return self.deform(x, self.offset(x))


def test_fx_traces_a_model_holding_the_module_and_the_graph_computes_the_same():
    from torchvision.models.feature_extraction import get_graph_node_names
    model = OffsetsAndDeformConv().double()
    traced = torch.fx.symbolic_trace(model)
    targets = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert targets == [torch.ops.dcn_ref.deform_conv2d.default]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    assert torch.equal(traced(x), model(x))
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == eval_nodes and "deform.deform_conv2d_default" in train_nodes

