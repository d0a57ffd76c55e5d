"""Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) is refused by every function
and module of the bridge, with an error naming the op, and never answered with zero
tangents; reverse mode is unaffected."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import dcn_ref.torch as dt
from torch_cases import cases

CASES = {case_id: (name, fn, args) for case_id, name, fn, args in cases()}
REFUSED = r"^dcn_ref\.torch\.{}: forward-mode AD \(torch\.func\.jvp, torch\.autograd\.forward_ad\) is not offered"


def first_tensor(args):
    return next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad)


@pytest.mark.parametrize("case_id", CASES)
def test_jvp_of_every_function_is_refused_by_name(case_id):
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
def test_jvp_through_every_module_is_refused_by_name(make, shape):
    module = make().double()
    if shape is None:
        x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
        offset = torch.randn(1, 18, 4, 4, dtype=torch.float64)
        call, primal, op = (lambda o: module(x, o)), offset, "deform_conv2d"
    else:
        call, primal = module, torch.randn(shape, dtype=torch.float64)
        op = "dcnv3" if isinstance(module, dt.DCNv3) else "dcnv4"
    with pytest.raises(NotImplementedError, match=REFUSED.format(op)):
        torch.func.jvp(call, (primal,), (torch.ones_like(primal),))


def test_a_jvp_that_does_not_reach_the_op_is_left_alone():
    # the tangent flows around the op: its inputs carry none, so nothing is refused
    x, w = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.randn(1, 18, 4, 4, dtype=torch.float64)
    out = dt.deform_conv2d(x, offset, w, padding=1)
    s = torch.tensor(2.0, dtype=torch.float64)
    value, tangent = torch.func.jvp(lambda s: dt.deform_conv2d(x, offset, w, padding=1) * s,
                                    (s,), (torch.tensor(1.0, dtype=torch.float64),))
    assert torch.equal(value, out * 2) and torch.equal(tangent, out)
