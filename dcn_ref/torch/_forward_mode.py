"""Forward-mode automatic differentiation and the bridge's functions: answered by the op's
hand-derived rule, or refused by name.

Reverse mode (``backward()``, ``torch.autograd.grad``) uses the ops' hand-derived backward
passes. Forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``) needs
Jacobian-vector products: ``bilinear_sample``, ``offset_sample``, ``deform_conv2d``,
``dcnv3`` and ``dcnv4`` have them (``dcn_ref.ops.<op>_jvp``, registered here as the custom
op ``dcn_ref::<op>_jvp`` by ``_second_order.register``); the RoI pooling ops do not. Left
to itself, PyTorch runs a custom op on dual tensors as if their tangents were zero and
returns zero tangents, a silently wrong derivative. So every function of
``dcn_ref.torch`` (and every module, through them) asks here before it dispatches:

- ``refuse``: a call with a tangent on any tensor, to an op without a rule, is a
  ``NotImplementedError`` (a ``RuntimeError``) that names the op;
- ``has_tangents`` and ``dual``: a call with tangents, to an op with a rule, runs the op
  on the primal tensors and returns its result as a dual tensor whose tangent is the
  op's JVP along the inputs' tangents (None for an input without one).

Forward mode over reverse mode (the tangent of a gradient, as ``torch.func.hessian`` or a
``forward_ad`` region around ``torch.autograd.grad`` asks for) would need the backward
pass's own JVP, which no op has: the op ran on the primals, so its saved tensors carry no
tangent and the gradient's tangent would silently be missing. So the backward of a
result computed in forward mode (``computed_in_forward_mode``) is refused by name, as is
a backward whose own inputs carry tangents.

This is the one place the functions ask about forward mode.
"""
import contextvars

import torch
from torch.autograd import forward_ad

#: op name -> (its JVP custom op, the positions of its differentiable inputs among its
#: schema's arguments)
_RULES = {}


_IN_DUAL = contextvars.ContextVar("dcn_ref_in_forward_mode", default=False)


def computed_in_forward_mode():
    """True while ``dual`` runs an op on the primals (its autograd context records it)."""
    return _IN_DUAL.get()


def refuse_backward(name):
    """The refusal of a backward pass through a result computed in forward mode."""
    raise NotImplementedError(
        f"dcn_ref.torch.{name}: reverse mode through a result of forward-mode AD (forward "
        f"over reverse, e.g. torch.func.hessian) is not offered: it needs the backward "
        f"pass's own JVP; take the gradient outside the dual level, or use "
        f"torch.autograd.grad(..., create_graph=True) twice (second derivatives)")


def register(name, jvp_op, differentiable):
    """Answer forward mode through the op ``name`` with ``jvp_op(*args, *tangents)``, the
    tangents those of the arguments at the positions ``differentiable``."""
    _RULES[name] = (jvp_op, differentiable)


def has_tangents(tensors):
    """Whether any of ``tensors`` (None entries skipped) carries a forward-mode tangent."""
    return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def refuse(name, tensors):
    """Raise when any of ``tensors`` carries a tangent and the op ``name`` has no rule."""
    if name not in _RULES and has_tangents(tensors):
        raise NotImplementedError(
            f"dcn_ref.torch.{name}: forward-mode AD (torch.func.jvp, "
            f"torch.autograd.forward_ad) is not offered: the op's derivatives are "
            f"hand-derived backward passes, for reverse mode (backward(), "
            f"torch.autograd.grad)")


def _split(a):
    if not isinstance(a, torch.Tensor):
        return a, None
    unpacked = forward_ad.unpack_dual(a)
    return unpacked.primal, unpacked.tangent


def dual(name, op, args):
    """``op(*args)`` (the registered ``dcn_ref::<name>``, its arguments as its schema takes
    them) for arguments that carry tangents: the result on the primals, as a dual tensor
    whose tangent is the op's JVP."""
    jvp_op, differentiable = _RULES[name]
    primals, tangents = zip(*(_split(a) for a in args))
    token = _IN_DUAL.set(True)
    try:
        out = op(*primals)
    finally:
        _IN_DUAL.reset(token)
    tangent = jvp_op(*primals, *(tangents[i] for i in differentiable))
    return forward_ad.make_dual(out, tangent)
