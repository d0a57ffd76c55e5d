"""Second derivatives and forward mode of the ops that have them, as PyTorch custom ops.

For an op ``f`` of ``dcn_ref.ops`` with ``f_jvp`` and ``f_backward_backward``, ``register``
defines two more custom ops in the namespace ``dcn_ref``:

    dcn_ref::f_jvp                (<arguments>, Tensor? <input>_dot, ...) -> Tensor
    dcn_ref::f_backward_backward  (Tensor? grad_grads_<input>, ..., Tensor grad_output,
                                   <arguments>) -> Tensor[]

(one tangent, one grad_grad, per differentiable input, None for zero; separate arguments,
not a list, because PyTorch's autograd does not follow the tensors of a list argument and
would cut a path through them without a word), each with a fake implementation, and it
gives ``dcn_ref::f_backward`` (``_register.py``) its autograd
formula, which calls ``f_backward_backward``: so ``torch.autograd.grad(...,
create_graph=True)`` differentiates the hand-derived backward pass by its hand-derived
derivative (gradient penalties, Hessian-vector products, ``gradgradcheck``). Gradients of
the backward's outputs that a loss does not use arrive as None, and count as zero without
being computed. The double backward op has no autograd formula: third derivatives are not
offered, and PyTorch says so naming the op, also for
``torch.autograd.functional.hvp``'s "double-backward trick", which differentiates the
double backward with respect to its ``grad_grads`` (``vhp`` needs only second
derivatives, and for a Hessian gives the same vector).

``f_jvp`` is handed to ``_forward_mode``, which answers ``torch.func.jvp`` and
``torch.autograd.forward_ad`` with it. Nothing here computes anything: the maths lives in
``dcn_ref.ops``.
"""
import torch

from .. import ops
from ..grads import BY_OP
from . import _forward_mode
from ._checks import check
from ._convert import to_tensor


def _tensor(a, device, like):
    """The op's result ``a`` as a tensor on ``device`` of the dtype of ``like`` (computed in
    float32 for a half-precision one, ``_convert``)."""
    return to_tensor(a, device, like.dtype)


def register(name, schema, backward_op, fake, run):
    """Define ``dcn_ref::<name>_jvp`` and ``dcn_ref::<name>_backward_backward`` when
    ``dcn_ref.ops`` has them, register the first as ``name``'s forward-mode rule and give
    ``backward_op`` (``dcn_ref::<name>_backward``) its autograd formula.

    Parameters
    ----------
    name : str
        The op's name in ``dcn_ref.ops``.
    schema : list of Argument
        Its schema's arguments (``_checks.parse``).
    backward_op : the custom op ``dcn_ref::<name>_backward``.
    fake : callable
        The forward op's fake: an empty tensor of the output's shape.
    run : callable
        ``_register._run``: a function of ``dcn_ref.ops`` on the arrays of the tensors.
    """
    if not hasattr(ops, f"{name}_backward_backward"):
        return
    grads = BY_OP[name]._fields
    names = [a.name for a in schema]
    is_tensor = [a.is_tensor for a in schema]
    arguments = ", ".join(f"{a.type} {a.name}" for a in schema)
    qualified = f"dcn_ref::{name}"

    k = len(grads)

    def jvp(*args):
        args, tangents = args[:-k], args[-k:]
        op = getattr(ops, f"{name}_jvp")
        out, device = run(lambda *a: op(*a[:len(names)], **dict(zip(
                              [f"{g}_dot" for g in grads], a[len(names):]))),
                          tuple(args) + tuple(tangents), names + [f"{g}_dot" for g in grads],
                          is_tensor + [True] * len(grads))
        return _tensor(out, device, args[0])

    def fake_jvp(*args):
        args = args[:-k]
        check(name, schema, args)
        return fake(*args)

    def backward_backward(*args):
        grad_grads, grad_output, args = args[:k], args[k], args[k + 1:]
        op = getattr(ops, f"{name}_backward_backward")
        result, device = run(lambda *a: op(BY_OP[name](*a[:k]), *a[k:]),
                             tuple(grad_grads) + (grad_output,) + args,
                             [f"grad_grads.{g}" for g in grads] + ["grad_output"] + names,
                             [True] * (k + 1) + is_tensor)
        given = dict(zip(names, args))
        return [_tensor(result.grad_output, device, grad_output)] + [
            args[0].new_empty(0) if given[g] is None else _tensor(getattr(result, g), device,
                                                                  given[g])
            for g in grads]

    def fake_backward_backward(*args):
        grad_output, args = args[k], args[k + 1:]
        check(name, schema, args, grad_output)
        given = dict(zip(names, args))
        return [grad_output.new_empty(grad_output.shape)] + [
            args[0].new_empty(0) if given[g] is None else given[g].new_empty(given[g].shape)
            for g in grads]

    tangents = ", ".join(f"Tensor? {g}_dot" for g in grads)
    grad_grads = ", ".join(f"Tensor? grad_grads_{g}" for g in grads)
    jvp_op = torch.library.custom_op(f"{qualified}_jvp", jvp, mutates_args=(),
                                     schema=f"({arguments}, {tangents}) -> Tensor")
    jvp_op.register_fake(fake_jvp)
    backward_backward_op = torch.library.custom_op(
        f"{qualified}_backward_backward", backward_backward, mutates_args=(),
        schema=f"({grad_grads}, Tensor grad_output, {arguments}) -> Tensor[]")
    backward_backward_op.register_fake(fake_backward_backward)

    def setup_context(ctx, inputs, output):
        grad_output, *args = inputs
        ctx.save_for_backward(grad_output, *(a for a, t in zip(args, is_tensor) if t))
        ctx.others = [None if t else a for a, t in zip(args, is_tensor)]
        ctx.set_materialize_grads(False)    # an unused gradient arrives as None: zero

    def autograd_backward(ctx, grad_grads):
        grad_output, *saved = ctx.saved_tensors
        saved = iter(saved)
        args = [next(saved) if t else a for a, t in zip(ctx.others, is_tensor)]
        given = dict(zip(names, args))
        # the backward's outputs in grads' order; an empty one stands for an input that
        # was None, and its gradient is None too
        grad_grads = [None if gg is None or given[g] is None else gg
                      for g, gg in zip(grads, grad_grads)]
        wanted = ctx.needs_input_grad
        if not any(wanted) or all(gg is None for gg in grad_grads):
            return (None,) * len(wanted)
        result = backward_backward_op(*grad_grads, grad_output, *args)
        by_name = dict(zip(grads, result[1:]))
        return (result[0] if wanted[0] else None,) + tuple(
            by_name[n] if n in by_name and a is not None and w else None
            for n, a, w in zip(names, args, wanted[1:]))

    backward_op.register_autograd(autograd_backward, setup_context=setup_context)
    _forward_mode.register(name, jvp_op, [names.index(g) for g in grads])
