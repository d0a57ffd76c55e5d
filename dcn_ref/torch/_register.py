"""One op of ``dcn_ref.ops`` as a differentiable PyTorch custom op.

For an op ``f`` of ``dcn_ref.ops`` and the argument list of its schema, ``register`` defines
two custom ops in the namespace ``dcn_ref``:

    dcn_ref::f           (<arguments>) -> Tensor
    dcn_ref::f_backward  (Tensor grad_output, <arguments>) -> Tensor[]

The first converts its tensors (``_convert``), calls ``dcn_ref.ops.f`` and converts the
result back, in the dtype of its first tensor; the second does the same with
``dcn_ref.ops.f_backward`` and returns one gradient per differentiable input, each in its
input's dtype (an empty tensor stands for an input that was None). The tensors of one
call share a dtype; float16 and bfloat16 ones are computed in float32 and the results
rounded back. Inside ``torch.autocast`` the forward op follows ``_autocast``'s rule.
The autograd formula of ``f`` calls ``f_backward``, so the hand-derived backward passes
are what PyTorch differentiates with, in eager mode and in graphs traced by
``torch.compile`` alike. Each op also gets a fake implementation (shapes only), which
``torch.compile``, ``torch.library.opcheck`` and meta tensors use; it runs the op's
argument checks first (``_checks.check``), so that a fake call refuses what a real one
refuses. A ValueError of ``dcn_ref.ops`` leaves an op as an ``ArgumentError``. Nothing
here computes anything: the maths lives in ``dcn_ref.ops``.

The backward op has no autograd formula itself: gradients of gradients are not offered.
"""
import torch

from .. import ops
from ..grads import BY_OP
from . import _autocast
from ._checks import argument_errors, check, one_device, one_dtype, parse
from ._convert import kernels_on, to_array, to_tensor
from .export import exportable

NAMESPACE = "dcn_ref"


def _run(fn, args, names, is_tensor):
    """``fn`` on the arrays viewing the tensor arguments, on their device (and stream)."""
    with argument_errors():
        tensors = [(n, a) for n, a, t in zip(names, args, is_tensor) if t]
        device = one_device(tensors)
        one_dtype(tensors)         # after the float32 copies the ops could not tell
        arrays = [to_array(a) if t else a for a, t in zip(args, is_tensor)]
        with kernels_on(device):
            return fn(*arrays), device


def register(name, arguments, fake):
    """Define ``dcn_ref::<name>`` and ``dcn_ref::<name>_backward`` (see the module docstring).

    Parameters
    ----------
    name : str
        The op's name in ``dcn_ref.ops``; ``<name>_backward`` must exist there too.
    arguments : str
        The schema's argument list, in the order of ``dcn_ref.ops.<name>``'s positional
        arguments, e.g. "Tensor image, Tensor coords, str padding_mode".
    fake : callable
        ``fake(*args)``: an empty tensor of the output's shape, dtype and device.

    Returns
    -------
    The forward op (``torch.ops.dcn_ref.<name>``), which computes its export form instead
    while an ONNX exporter traces (``export.exportable``).
    """
    grads = BY_OP[name]._fields     # the differentiable inputs, as the op's backward names them
    schema = parse(arguments)
    names = [a.name for a in schema]
    is_tensor = [a.is_tensor for a in schema]

    def forward(*args):
        out, device = _run(getattr(ops, name), args, names, is_tensor)
        return to_tensor(out, device, args[0].dtype)

    def backward(grad_output, *args):
        result, device = _run(getattr(ops, f"{name}_backward"), (grad_output,) + args,
                              ["grad_output"] + names, [True] + is_tensor)
        given = dict(zip(names, args))
        return [args[0].new_empty(0) if given[g] is None
                else to_tensor(getattr(result, g), device, given[g].dtype) for g in grads]

    def checked_fake(*args):
        check(name, schema, args)
        return fake(*args)

    def fake_backward(grad_output, *args):
        check(name, schema, args, grad_output)
        given = dict(zip(names, args))
        return [args[0].new_empty(0) if given[g] is None else given[g].new_empty(given[g].shape)
                for g in grads]

    qualified = f"{NAMESPACE}::{name}"
    forward_op = torch.library.custom_op(qualified, forward, mutates_args=(),
                                         schema=f"({arguments}) -> Tensor")
    backward_op = torch.library.custom_op(f"{qualified}_backward", backward, mutates_args=(),
                                          schema=f"(Tensor grad_output, {arguments}) -> Tensor[]")
    forward_op.register_fake(checked_fake)
    backward_op.register_fake(fake_backward)
    _autocast.register(forward_op, name)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*(a for a, t in zip(inputs, is_tensor) if t))
        ctx.others = [None if t else a for a, t in zip(inputs, is_tensor)]

    def autograd_backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else a for a, t in zip(ctx.others, is_tensor)]
        wanted = [n in grads and a is not None and ctx.needs_input_grad[i]
                  for i, (n, a) in enumerate(zip(names, args))]
        if not any(wanted):
            return (None,) * len(args)
        result = dict(zip(grads, backward_op(grad_output, *args)))
        return tuple(result[n] if w else None for n, w in zip(names, wanted))

    forward_op.register_autograd(autograd_backward, setup_context=setup_context)
    return exportable(name, forward_op)
