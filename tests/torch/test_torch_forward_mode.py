"""Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) through the bridge: the ops
with a hand-derived JVP give the tangent of dcn_ref.ops.<op>_jvp (and pass gradcheck's
forward-mode check against finite differences, in tests/torch/test_torch_second_order.py);
the RoI pooling ops, which have none, refuse by name and never answer with zero tangents;
forward over reverse is refused by name too. Reverse mode is unaffected."""
import inspect

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import dcn_ref.torch as dt
from dcn_ref import ops
from torch_cases import cases

CASES = {case_id: (name, fn, args) for case_id, name, fn, args in cases()}
WITH_RULE = {"bilinear_sample", "offset_sample", "deform_conv2d", "dcnv3", "dcnv4"}
REFUSED = r"^dcn_ref\.torch\.{}: forward-mode AD \(torch\.func\.jvp, torch\.autograd\.forward_ad\) is not offered"


def first_tensor(args):
    return next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad)


def numpy_args(args):
    return [a.detach().numpy() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("case_id", [c for c in CASES if CASES[c][0] in WITH_RULE])
def test_jvp_of_every_function_with_a_rule_is_the_ops_jvp(case_id):
    name, fn, args = CASES[case_id]
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    primals = tuple(args[i].detach() for i in tensors)
    tangents = tuple(torch.randn_like(p) for p in primals)

    def of(*given):
        full = list(args)
        for i, t in zip(tensors, given):
            full[i] = t
        return fn(*full)

    value, tangent = torch.func.jvp(of, primals, tangents)
    op_args = numpy_args(args)
    names = list(inspect.signature(getattr(ops, name)).parameters)   # the bridge's order too
    expected = getattr(ops, f"{name}_jvp")(
        *op_args, **{f"{names[i]}_dot": t.numpy() for i, t in zip(tensors, tangents)})
    torch.testing.assert_close(tangent, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, fn(*args).detach(), rtol=0, atol=0)
    # the same through forward_ad, with the dual tensors requiring grad or not
    for requires_grad in (False, True):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p.clone().requires_grad_(requires_grad), t)
                     for p, t in zip(primals, tangents)]
            out = fwAD.unpack_dual(of(*duals))
            torch.testing.assert_close(out.tangent, tangent, rtol=0, atol=0)


@pytest.mark.parametrize("case_id", [c for c in CASES if CASES[c][0] not in WITH_RULE])
def test_jvp_of_a_function_without_a_rule_is_refused_by_name(case_id):
    name, fn, args = CASES[case_id]
    i = first_tensor(args)

    def of(t):
        return fn(*args[:i], t, *args[i + 1:])

    primal = args[i].detach()
    with pytest.raises(NotImplementedError, match=REFUSED.format(name)):
        torch.func.jvp(of, (primal,), (torch.ones_like(primal),))
    # with the dual tensor requiring grad or not
    for requires_grad in (False, True):
        with fwAD.dual_level(), pytest.raises(RuntimeError, match=REFUSED.format(name)):
            of(fwAD.make_dual(primal.clone().requires_grad_(requires_grad),
                              torch.ones_like(primal)))


@pytest.mark.parametrize("make, shape", [
    (lambda: dt.DeformConv2d(2, 3, 3, padding=1), None),
    (lambda: dt.DCNv3(4, group=2), (1, 3, 3, 4)),
    (lambda: dt.DCNv4(8, group=2), (1, 9, 8)),
], ids=["DeformConv2d", "DCNv3", "DCNv4"])
def test_jvp_through_every_module_equals_centred_differences(make, shape):
    torch.manual_seed(0)
    module = make().double()
    if shape is None:
        x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
        offset = torch.rand(1, 18, 4, 4, dtype=torch.float64) * 0.8 + 0.1   # off the kinks
        call, primal = (lambda o: module(x, o)), offset
    else:
        call, primal = module, torch.randn(shape, dtype=torch.float64)
    direction = torch.randn_like(primal)
    _, tangent = torch.func.jvp(call, (primal,), (direction,))
    eps = 1e-6
    with torch.no_grad():
        numeric = (call(primal + eps * direction) - call(primal - eps * direction)) / (2 * eps)
    torch.testing.assert_close(tangent, numeric, rtol=1e-6, atol=1e-7)


def test_forward_over_reverse_is_refused_by_name():
    name, fn, args = CASES["deform_conv2d"]
    x = args[0].detach().clone().requires_grad_()
    with fwAD.dual_level():
        out = fn(fwAD.make_dual(x, torch.ones_like(x)), *args[1:])
        with pytest.raises(NotImplementedError, match=r"^dcn_ref\.torch\.deform_conv2d: reverse "
                                                      r"mode through a result of forward-mode AD"):
            torch.autograd.grad(out.sum(), x, create_graph=True)


def test_a_jvp_that_does_not_reach_the_op_is_left_alone():
    # the tangent flows around the op: its inputs carry none, so nothing is refused
    x, w = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.randn(1, 18, 4, 4, dtype=torch.float64)
    out = dt.deform_conv2d(x, offset, w, padding=1)
    s = torch.tensor(2.0, dtype=torch.float64)
    value, tangent = torch.func.jvp(lambda s: dt.deform_conv2d(x, offset, w, padding=1) * s,
                                    (s,), (torch.tensor(1.0, dtype=torch.float64),))
    assert torch.equal(value, out * 2) and torch.equal(tangent, out)
