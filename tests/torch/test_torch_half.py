"""Half precision through the bridge: float16 and bfloat16 tensors are computed in float32
and rounded back, ``torch.autocast`` on the CPU runs the ops in float32, and
``torch.library.opcheck`` and ``torch.compile`` hold for the new dtypes.

The references are the NumPy ops (``dcn_ref.ops``) in float32 and float64 on the values the
half-precision tensors hold, and torchvision's deform_conv2d in float32."""
import copy
import inspect

import numpy as np
import pytest
import torch
import torchvision

import dcn_ref.torch as dt
from dcn_ref import ops
from dcn_ref.gradcheck import rel_error
from dcn_ref.torch import mmcv
from test_torch_distributed import TinyDeformable
from torch_cases import cases, op_args

CASES = {case_id: (name, args) for case_id, name, _, args in cases()}
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def unit_roundoff(dtype):
    """u: rounding to nearest moves a normal number x by at most u*|x| (half the spacing)."""
    return torch.finfo(dtype).eps / 2


def to_dtype(args, dtype, which=None):
    """The tensors of ``args`` (those at the positions ``which``, default all) in ``dtype``,
    as leaves that keep their requires_grad."""
    return [a.detach().to(dtype).requires_grad_(a.requires_grad)
            if isinstance(a, torch.Tensor) and (which is None or i in which) else a
            for i, a in enumerate(args)]


def numpy_op(name, args, dtype, grad_output=None):
    """``dcn_ref.ops.<name>`` (or its backward, given ``grad_output``) on the values of the
    tensors in ``args`` held exactly in ``dtype`` (float32 or float64)."""
    def exactly(t):
        return t.detach().double().numpy().astype(dtype)

    values = [exactly(a) if isinstance(a, torch.Tensor) else a for a in args]
    if grad_output is None:
        return getattr(ops, name)(*values)
    return getattr(ops, f"{name}_backward")(exactly(grad_output), *values)


def differentiable(name, args):
    """[(argument name, tensor)] of the op's arguments that require grad."""
    names = inspect.signature(getattr(ops, name)).parameters
    return [(n, a) for n, a in zip(names, args)
            if isinstance(a, torch.Tensor) and a.requires_grad]


def grad_output_for(out):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return g.to(out.dtype)


@pytest.mark.parametrize("dtype", HALF.values(), ids=HALF)
@pytest.mark.parametrize("case_id", CASES)
def test_half_results_and_gradients_are_the_float32_ones_rounded(case_id, dtype):
    name, args = CASES[case_id]
    half = to_dtype(args, dtype)
    out = getattr(dt, name)(*half)
    wrt = differentiable(name, half)
    grad_output = grad_output_for(out)
    grads = torch.autograd.grad(out, [a for _, a in wrt], grad_output)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    # what the bridge computes: the NumPy op in float32 on the values the tensors hold
    # (float16 and bfloat16 values are exact in float32), rounded to the dtype
    assert torch.equal(out, torch.from_numpy(numpy_op(name, half, np.float32)).to(dtype))
    expected = numpy_op(name, half, np.float32, grad_output)
    for (n, _), g in zip(wrt, grads):
        assert torch.equal(g, torch.from_numpy(getattr(expected, n)).to(dtype)), n
    # against float64 on the same values: the rounding to the dtype (u*|y|, and u times the
    # smallest normal number below it), plus float32's own error on these small sums (its
    # tests hold it to 1e-5 of the largest entry)
    exact = [numpy_op(name, half, np.float64)]
    exact_grads = numpy_op(name, half, np.float64, grad_output)
    ours = [out] + list(grads)
    exact += [getattr(exact_grads, n) for n, _ in wrt]
    u, tiny = unit_roundoff(dtype), torch.finfo(dtype).smallest_normal
    for what, got, want in zip(["out"] + [n for n, _ in wrt], ours, exact):
        error = np.abs(got.detach().double().numpy() - want)
        bound = u * (np.abs(want) + tiny) + 1e-5 * np.abs(want).max(initial=0.0)
        assert (error <= bound).all(), (what, float((error - bound).max()))


@pytest.mark.parametrize("case_id", CASES)
def test_under_cpu_autocast_each_op_runs_in_float32_and_returns_its_inputs_dtype(case_id):
    """A bfloat16 first tensor among float32 ones: refused outside autocast (one dtype per
    call); inside, all are cast to float32, and the result is rounded to bfloat16."""
    name, args = CASES[case_id]
    fn = getattr(dt, name)
    mixed = to_dtype(to_dtype(args, torch.float32), torch.bfloat16, which={0})
    with pytest.raises(dt.ArgumentError, match=r"expected dtype bfloat16 \(the dtype of "):
        fn(*mixed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*mixed)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.from_numpy(numpy_op(name, mixed, np.float32)).bfloat16())
    wrt = differentiable(name, mixed)
    grad_output = grad_output_for(out)
    grads = torch.autograd.grad(out, [a for _, a in wrt], grad_output)
    expected = numpy_op(name, mixed, np.float32, grad_output)
    for (n, a), g in zip(wrt, grads):
        assert g.dtype == a.dtype, n          # bfloat16 for the first tensor, else float32
        assert torch.equal(g, torch.from_numpy(getattr(expected, n)).to(a.dtype)), n


def test_float64_is_left_alone_by_autocast():
    name, args = CASES["deform_conv2d"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dt.deform_conv2d(*args)
        with pytest.raises(dt.ArgumentError, match=r"^offset: expected dtype float64 \(the "
                                                   r"dtype of input\), got float32 \(autocast's "
                                                   r"cast of bfloat16\)$"):
            dt.deform_conv2d(*to_dtype(args, torch.bfloat16, which={1}))
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.from_numpy(numpy_op(name, args, np.float64)))


def autocast_training_step(model, x):
    """Loss and the gradients of x and every parameter, the model under CPU autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    return loss, torch.autograd.grad(loss, [x, *model.parameters()])


def test_a_model_trains_under_cpu_autocast_and_matches_torchvision_in_float32():
    """TinyDeformable under autocast: its convolutions run in bfloat16, so the deformable
    layer gets bfloat16 input, offsets and mask beside float32 weights; its result is what
    torchvision computes in float32 from the same tensors, rounded to bfloat16."""
    torch.manual_seed(0)
    model = TinyDeformable()
    with torch.no_grad():
        model.offset_mask.weight.mul_(3.0)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    loss, grads = autocast_training_step(model, x)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert [g.dtype for g in grads] == [torch.float32] * len(grads)

    deform = model.deform
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.relu(model.conv(x))
        offset_mask = model.offset_mask(h)
        assert h.dtype == offset_mask.dtype == torch.bfloat16
        offset, mask = offset_mask[:, :18], torch.sigmoid(offset_mask[:, 18:])
        ours = deform(h, offset, mask)
    theirs = torchvision.ops.deform_conv2d(h.float(), offset.float(), deform.weight, deform.bias,
                                           padding=1, mask=mask.float()).bfloat16()
    assert ours.dtype == torch.bfloat16
    # float32 results 1e-6 apart may round to neighbouring bfloat16 numbers: one unit apart
    assert rel_error(ours.float().detach(), theirs.float().detach()) <= 2 ** -7
    wrt = [deform.weight, deform.bias, offset, mask]
    grad = torch.randn(ours.shape).bfloat16()
    ours_grads = torch.autograd.grad(ours, wrt, grad, retain_graph=True)
    theirs_grads = torch.autograd.grad(theirs, wrt, grad)
    for what, g, t in zip(["weight", "bias", "offset", "mask"], ours_grads, theirs_grads):
        tolerance = 1e-5 if g.dtype == torch.float32 else 2 ** -7
        assert g.dtype == t.dtype and rel_error(g.float(), t.float()) <= tolerance, what

    with torch.no_grad():                      # the training step: SGD lowers the loss
        for p, g in zip(model.parameters(), grads[1:]):
            p -= 0.05 * g
    assert autocast_training_step(model, x)[0] < loss


def test_compile_fullgraph_under_cpu_autocast_equals_eager():
    def f(x, offset, weight):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return dt.deform_conv2d(x, offset, weight, padding=1)

    _, args = CASES["deform_conv2d"]
    x, offset, weight = to_dtype([args[0], *to_dtype(args[1:3], torch.float32)], torch.bfloat16,
                                 which={0})
    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, offset, weight)
    eager = f(x, offset, weight)
    assert out.dtype == torch.bfloat16 and torch.equal(out, eager)
    grads = torch.autograd.grad(out.sum(), [x, offset, weight])
    eager_grads = torch.autograd.grad(eager.sum(), [x, offset, weight])
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32]
    assert all(torch.equal(g, e) for g, e in zip(grads, eager_grads))


@pytest.mark.parametrize("case_id", ["deform_conv2d", "dcnv3", "deform_roi_pool"])
def test_opcheck_in_float16_of_the_op_and_its_backward(case_id):
    name, args = CASES[case_id]
    half = op_args(to_dtype(args, torch.float16))
    torch.library.opcheck(getattr(torch.ops.dcn_ref, name).default, half)
    grad = torch.ones_like(getattr(dt, name)(*half))
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in half]
    torch.library.opcheck(getattr(torch.ops.dcn_ref, f"{name}_backward").default,
                          (grad, *detached),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_compile_fullgraph_in_half_precision_equals_eager():
    _, args = CASES["dcnv4"]
    half = to_dtype(args, torch.bfloat16)
    torch._dynamo.reset()
    compiled = torch.compile(dt.dcnv4, fullgraph=True, backend="aot_eager")
    out, eager = compiled(*half), dt.dcnv4(*half)
    assert out.dtype == torch.bfloat16 and torch.equal(out, eager)
    grads = torch.autograd.grad(out.sum(), [half[0], half[1]])
    eager_grads = torch.autograd.grad(eager.sum(), [half[0], half[1]])
    assert all(torch.equal(g, e) and g.dtype == torch.bfloat16 for g, e in zip(grads, eager_grads))


def test_meta_tensors_in_half_precision_give_results_of_their_dtype():
    for dtype in HALF.values():
        _, args = CASES["deform_conv2d"]
        meta = [a.detach().to("meta", dtype).requires_grad_() if isinstance(a, torch.Tensor)
                else a for a in args]
        out = dt.deform_conv2d(*meta)
        grads = torch.autograd.grad(out.sum(), [meta[0], meta[2]])
        assert out.device.type == "meta" and out.dtype == dtype
        assert [g.dtype for g in grads] == [dtype, dtype]


# -- the modules ------------------------------------------------------------------------------

MODULES = {
    "DeformConv2d": (lambda: dt.DeformConv2d(4, 6, 3, padding=1),
                     lambda: (torch.randn(2, 4, 5, 5), torch.randn(2, 18, 5, 5),
                              torch.rand(2, 9, 5, 5))),
    "DCNv3": (lambda: dt.DCNv3(8, group=2), lambda: (torch.randn(1, 4, 5, 8),)),
    "DCNv4": (lambda: dt.DCNv4(8, group=2, dw_kernel_size=3),
              lambda: (torch.randn(1, 16, 8),)),
    "mmcv.DeformConv2dPack": (lambda: mmcv.DeformConv2dPack(4, 6, 3, padding=1),
                              lambda: (torch.randn(2, 4, 5, 5),)),
    "mmcv.ModulatedDeformConv2dPack": (lambda: mmcv.ModulatedDeformConv2dPack(4, 6, 3, padding=1),
                                       lambda: (torch.randn(2, 4, 5, 5),)),
    "mmcv.DeformRoIPoolPack": (lambda: mmcv.DeformRoIPoolPack(3, 4, deform_fc_channels=8),
                               lambda: (torch.randn(1, 4, 8, 8), torch.tensor([[0, 1, 1, 6, 6.]]))),
    "mmcv.ModulatedDeformRoIPoolPack": (
        lambda: mmcv.ModulatedDeformRoIPoolPack(3, 4, deform_fc_channels=8),
        lambda: (torch.randn(1, 4, 8, 8), torch.tensor([[0, 1, 1, 6, 6.]]))),
}


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "autocast"])
@pytest.mark.parametrize("module_name", MODULES)
def test_modules_in_half_precision_and_under_autocast(module_name, precision):
    """The module in float16 or bfloat16 (``module.to(dtype)``), or in float32 under CPU
    autocast to bfloat16: every layer, torch's and ours, rounds its result once, so the
    output is within a few units of the precision of the module in float64 on the same
    (rounded) parameters and inputs. The gradients are the op's, exact for its inputs
    (above); the module's are not compared with float64 entry by entry, since a sample
    point's offset rounded across a pixel boundary changes the offset's gradient by a jump."""
    make, inputs = MODULES[module_name]
    torch.manual_seed(0)
    module, args = make(), inputs()
    with torch.no_grad():                  # every parameter random, the zero-started ones too
        for p in module.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    dtype = torch.bfloat16 if precision == "autocast" else HALF[precision]
    if precision != "autocast":
        module, args = module.to(dtype), [a.to(dtype) for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "autocast"):
        out = module(*args)
    reference = copy.deepcopy(module).double()(*[a.double() for a in args])
    error = rel_error(out.detach().double(), reference.detach())
    assert error <= 16 * unit_roundoff(dtype)
    # under autocast the ops return their input's dtype (float32 here), DCNv3's and
    # DCNv4's output projections (linear layers) bfloat16
    assert out.dtype == (torch.float32 if precision == "autocast" and "DCN" not in module_name
                         else dtype)
    out.backward(torch.randn(out.shape).to(out.dtype))
    for name, p in module.named_parameters():
        assert p.grad.dtype == p.dtype, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
