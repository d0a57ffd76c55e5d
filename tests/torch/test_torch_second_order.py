"""Second derivatives and forward mode through the bridge, against finite differences:
``torch.autograd.gradgradcheck`` (the gradient of the hand-derived backward, through
``dcn_ref::<op>_backward_backward``) and ``torch.autograd.gradcheck`` with
``check_forward_ad`` (the JVP, through ``dcn_ref::<op>_jvp``), float64, for every op that
has them; a gradient penalty trains through ``DeformConv2d``; third derivatives are
refused by PyTorch, naming the op.

The checks run in gradcheck's fast mode (random projections of the Jacobians against
finite differences of the same projections): what they test here is the bridge's wiring,
each gradient reaching its tensor; every entry of every second derivative is checked
against finite differences at the NumPy level (tests/test_second_order.py)."""
import pytest
import torch

import dcn_ref.torch as dt
from torch_cases import cases, op_args

WITH_RULE = {"bilinear_sample", "offset_sample", "deform_conv2d", "dcnv3", "dcnv4"}
CASES = {case_id: (fn, args) for case_id, name, fn, args in cases() if name in WITH_RULE}
NAMES = {case_id: name for case_id, name, _, _ in cases()}


def split(args):
    """(the tensors that require grad, a function of them calling fn with the rest)."""
    where = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    return tuple(args[i] for i in where), where


@pytest.mark.parametrize("case_id", CASES)
def test_gradgradcheck_and_forward_mode_gradcheck(case_id):
    fn, args = CASES[case_id]
    tensors, where = split(args)

    def of(*given):
        full = list(args)
        for i, t in zip(where, given):
            full[i] = t
        return fn(*full)

    # tighter than the defaults (rtol 1e-3): differences of these piecewise bilinear
    # functions are exact to rounding away from the kinks
    tolerances = {"rtol": 1e-6, "atol": 1e-8, "fast_mode": True, "check_batched_grad": False}
    assert torch.autograd.gradcheck(of, tensors, check_forward_ad=True, **tolerances)
    assert torch.autograd.gradgradcheck(of, tensors, **tolerances)


@pytest.mark.parametrize("case_id", CASES)
def test_opcheck_of_the_jvp_and_double_backward_ops(case_id):
    """Schemas, fake implementations (shapes for meta tensors and torch.compile) and the
    ops under AOT dispatch, as torch.library.opcheck tests them."""
    fn, args = CASES[case_id]
    name = NAMES[case_id]
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in op_args(args)]
    tensors = [a for a in detached if isinstance(a, torch.Tensor)]
    torch.manual_seed(0)
    torch.library.opcheck(getattr(torch.ops.dcn_ref, f"{name}_jvp").default,
                          (*detached, *(torch.randn_like(t) for t in tensors)))
    grad_grads = [torch.randn_like(t) for t in tensors]
    grad_grads[0] = None                                      # None: zero
    torch.library.opcheck(getattr(torch.ops.dcn_ref, f"{name}_backward_backward").default,
                          (*grad_grads, torch.randn_like(fn(*args)).detach(), *detached))


def test_a_gradient_penalty_trains_through_deform_conv2d():
    """R1-style penalty: the loss is the output's mean square plus ||d loss/d input||^2,
    whose gradient with respect to the weights and offsets needs the second derivatives.
    A few steps of SGD bring it down."""
    torch.manual_seed(0)
    layer = dt.DeformConv2d(2, 3, 3, padding=1).double()
    offset_conv = torch.nn.Conv2d(2, 18, 3, padding=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    params = list(layer.parameters()) + list(offset_conv.parameters())
    optimiser = torch.optim.SGD(params, lr=0.1)
    losses = []
    for _ in range(6):
        xi = x.clone().requires_grad_()
        out = layer(xi, offset_conv(xi))
        (grad_x,) = torch.autograd.grad(out.square().mean(), xi, create_graph=True)
        loss = out.square().mean() + grad_x.square().sum()
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_third_derivatives_are_refused_naming_the_op():
    fn, args = CASES["bilinear_sample"]
    image, coords = args[0], args[1]
    (grad_coords,) = torch.autograd.grad(fn(image, coords, "zeros").sum(), coords,
                                         create_graph=True)
    (second,) = torch.autograd.grad(grad_coords.square().sum(), image, create_graph=True)
    with pytest.raises(RuntimeError, match="dcn_ref.bilinear_sample_backward_backward"):
        second.sum().backward()


def test_hessian_vector_products():
    """vhp (grad of grad . v) equals centred differences of the gradient along v; hvp's
    double-backward trick, which differentiates the double backward with respect to its
    grad_grads (a third-order graph), is refused naming the op, never answered with the
    zeros of a path PyTorch cut."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = 0.1 + 0.8 * torch.rand(1, 18, 4, 4, dtype=torch.float64)   # off the kinks

    def f(o):
        return dt.deform_conv2d(x, o, weight, padding=(1, 1)).square().sum()

    def gradient(o):
        o = o.detach().requires_grad_()
        return torch.autograd.grad(f(o), o)[0]

    v = torch.randn_like(offset)
    _, product = torch.autograd.functional.vhp(f, offset, v)
    numeric = (gradient(offset + 1e-6 * v) - gradient(offset - 1e-6 * v)) / 2e-6
    torch.testing.assert_close(product, numeric, rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="dcn_ref.deform_conv2d_backward_backward"):
        torch.autograd.functional.hvp(f, offset, v)
