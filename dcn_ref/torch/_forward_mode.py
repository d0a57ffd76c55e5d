"""Forward-mode automatic differentiation and the bridge's functions: refused by name.

The derivatives dcn_ref offers are its hand-derived backward passes, vector-Jacobian
products, which reverse mode (``backward()``, ``torch.autograd.grad``) uses. Forward mode
(``torch.func.jvp``, ``torch.autograd.forward_ad``) needs Jacobian-vector products, which
no op has yet; left to itself, PyTorch runs a custom op on dual tensors as if their
tangents were zero and returns zero tangents, a silently wrong derivative. So every
function of ``dcn_ref.torch`` (and every module, through them) asks ``refuse`` before it
dispatches, and a call with a tangent on any tensor is a ``NotImplementedError`` (a
``RuntimeError``) that names the op.

This is the one place the functions ask about forward mode: a hand-derived rule for an
op would be registered with that op's autograd formula (``_register.py``) and the op
left out of the refusal here.
"""
from torch.autograd import forward_ad


def refuse(name, tensors):
    """Raise when any of ``tensors`` (None entries skipped) carries a forward-mode tangent."""
    if any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise NotImplementedError(
            f"dcn_ref.torch.{name}: forward-mode AD (torch.func.jvp, "
            f"torch.autograd.forward_ad) is not offered: the op's derivatives are "
            f"hand-derived backward passes, for reverse mode (backward(), "
            f"torch.autograd.grad)")
