"""dcnv4: DCNv4's operator, DCNv3's aggregation reading one packed offset-and-weight array.

The kernels are DCNv3's: a ``PointGeometry`` whose strides address the packed array
(dcn_ref/geometry.py) makes its offsets and weights two strided views of it.
"""
from typing import NamedTuple

from ..geometry import PointGeometry
from ..grads import DCNv4BackwardGrads, DCNv4Grads
from ..targets import Call
from . import _args
from .dcnv3 import check_grad_output, check_grid, has_pixels


class DCNv4Args(NamedTuple):
    """The checked arguments of a dcnv4 call (arrays on their device)."""
    input: object
    offset_mask: object
    geometry: PointGeometry
    grad_output: object


def _check(input, offset_mask, kernel_size, stride, padding, dilation, group, offset_scale,
           remove_center, grad_output=None):
    input, geometry = check_grid(input, kernel_size, stride, padding, dilation, group,
                                 offset_scale, remove_center)
    G, P = geometry.group, geometry.points
    offset_mask = _args.float_array(offset_mask, "offset_mask", 4, "(N, H_out, W_out, D)")
    rows = (input.shape[0], geometry.out_h, geometry.out_w)
    if tuple(offset_mask.shape[:3]) != rows or offset_mask.shape[3] < G * P * 3:
        raise ValueError(
            f"offset_mask: expected shape {rows + ('D',)} (N, H_out, W_out, D) with "
            f"D >= group*P*3 = {G * P * 3} (group = {G}, P = {P}), got {tuple(offset_mask.shape)}")
    if grad_output is not None:
        grad_output = check_grad_output(grad_output, input, geometry)
    _args.same_dtype(input=input, offset_mask=offset_mask, grad_output=grad_output)
    geometry = geometry._replace(offset_stride=3 * P, mask_start=2 * P, mask_stride=3 * P)
    return DCNv4Args(input, offset_mask, geometry, grad_output)


def dcnv4(input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False, *, target=None):
    """DCNv4's operator: ``dcnv3`` with offsets and weights packed into one array.

    Parameters
    ----------
    input : ndarray of shape (N, H, W, C)
        ``C = group * group_channels``, channels last.
    offset_mask : ndarray of shape (N, H_out, W_out, D)
        ``D >= group*P*3``. Group g's block starts at entry ``g*P*3``: its 2P offsets as
        (x, y) pairs (point p's x at ``g*P*3 + 2p``, its y at ``g*P*3 + 2p + 1``), then its
        P weights (point p's at ``g*P*3 + 2P + p``). Entries from ``group*P*3`` on are
        padding (the DCNv4 module rounds D up to a multiple of 8): ignored, and their
        gradient is 0.
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
    target : str or None
        As in ``dcnv3``.

    Returns
    -------
    out : ndarray of shape (N, H_out, W_out, C)

    Notes
    -----
    The sampling points, the formula and the hostile-value rules are those of ``dcnv3``
    (no softmax anywhere). OpenGVLab's kernels accept only some kernel sizes and group
    widths; here any kernel size, P and group_channels work.
    """
    call = Call(target, (input, offset_mask))
    args = _check(input, offset_mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center)
    be, geometry = call.backend, args.geometry
    if not has_pixels(args.input):
        return call.get(be.zeros((args.input.shape[0], geometry.out_h, geometry.out_w,
                                  args.input.shape[3]), args.input.dtype))
    packed = call.put(args.offset_mask)
    return call.get(be.dcnv3(call.put(args.input), packed, packed, geometry))


def dcnv4_backward(grad_output, input, offset_mask, kernel_size=3, stride=1, padding=0,
                   dilation=1, group=1, offset_scale=1.0, remove_center=False, *, target=None,
                   deterministic=False):
    """Gradients of a scalar loss with respect to ``input`` and ``offset_mask``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, H_out, W_out, C)
    input : ndarray of shape (N, H, W, C)
    offset_mask : ndarray of shape (N, H_out, W_out, D)
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
    target : str or None
        As in ``dcnv4``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    DCNv4Grads(input (N, H, W, C), offset_mask (N, H_out, W_out, D)); the padding
    entries of the offset_mask gradient are 0.

    Notes
    -----
    The gradients of ``dcnv3_backward``, stored in the packed layout (including its note
    on points exactly at -1).
    """
    call = Call(target, (grad_output, input, offset_mask))
    args = _check(input, offset_mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center, grad_output)
    be, put = call.backend, call.put
    packed = put(args.offset_mask)
    grad_input = be.zeros(args.input.shape, args.input.dtype)
    grad_packed = be.zeros(args.offset_mask.shape, args.input.dtype)   # padding entries stay 0
    if has_pixels(args.input):
        be.dcnv3_backward(put(args.grad_output), put(args.input), packed, packed, args.geometry,
                          grad_input, grad_packed, grad_packed, deterministic)
    return DCNv4Grads(call.get(grad_input), call.get(grad_packed))


# -- forward mode and second derivatives -------------------------------------------------

def _put_tangent(call, args, offset_mask_dot):
    """The packed array's tangent on the target, zeros when None."""
    if offset_mask_dot is None:
        return call.backend.zeros(args.offset_mask.shape, args.input.dtype)
    return call.put(offset_mask_dot)


def dcnv4_jvp(input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
              offset_scale=1.0, remove_center=False, *, input_dot=None, offset_mask_dot=None,
              target=None):
    """Forward mode: how ``dcnv4``'s output changes along tangents of its inputs.

    Parameters
    ----------
    input : ndarray of shape (N, H, W, C)
    offset_mask : ndarray of shape (N, H_out, W_out, D)
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
    input_dot : ndarray of shape (N, H, W, C) or None
        The tangent of ``input``; None: zero.
    offset_mask_dot : ndarray of shape (N, H_out, W_out, D) or None
        The tangent of ``offset_mask``, packed as it is (its padding entries are ignored);
        None: zero.
    target : str or None
        As in ``dcnv4``.

    Returns
    -------
    out_dot : ndarray of shape (N, H_out, W_out, C)

    Notes
    -----
    ``dcnv3_jvp`` reading the packed layout.
    """
    call = Call(target, (input, offset_mask, input_dot, offset_mask_dot))
    args = _check(input, offset_mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center)
    input_dot = _args.tangent(input_dot, "input_dot", args.input, "input")
    offset_mask_dot = _args.tangent(offset_mask_dot, "offset_mask_dot", args.offset_mask,
                                    "offset_mask")
    _args.same_dtype(input=args.input, input_dot=input_dot, offset_mask_dot=offset_mask_dot)
    be, geometry = call.backend, args.geometry
    if not has_pixels(args.input):
        return call.get(be.zeros((args.input.shape[0], geometry.out_h, geometry.out_w,
                                  args.input.shape[3]), args.input.dtype))
    packed, packed_dot = call.put(args.offset_mask), _put_tangent(call, args, offset_mask_dot)
    return call.get(be.dcnv3_jvp(call.put(args.input), packed, packed, geometry,
                                 call.put(input_dot), packed_dot, packed_dot))


def dcnv4_backward_backward(grad_grads, grad_output, input, offset_mask, kernel_size=3,
                            stride=1, padding=0, dilation=1, group=1, offset_scale=1.0,
                            remove_center=False, *, target=None, deterministic=False):
    """Second derivatives: the gradients of a scalar loss with respect to every input of
    ``dcnv4_backward``.

    Parameters
    ----------
    grad_grads : DCNv4Grads
        d loss / d (the outputs of ``dcnv4_backward``): fields ``input`` and
        ``offset_mask``, each None for zero or an array of its input's shape (or a tuple
        of two).
    grad_output : ndarray of shape (N, H_out, W_out, C)
    input : ndarray of shape (N, H, W, C)
    offset_mask : ndarray of shape (N, H_out, W_out, D)
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
    target : str or None
        As in ``dcnv4``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    DCNv4BackwardGrads(grad_output (N, H_out, W_out, C), input (N, H, W, C), offset_mask
    (N, H_out, W_out, D)); the padding entries of the offset_mask gradient are 0.

    Notes
    -----
    ``dcnv3_backward_backward`` reading and writing the packed layout.
    """
    call = Call(target, (grad_output, input, offset_mask) + _args.grad_grads_arrays(grad_grads))
    args = _check(input, offset_mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center, grad_output)
    grad_grads = _args.grad_grads(grad_grads, DCNv4Grads,
                                  {"input": args.input, "offset_mask": args.offset_mask})
    _args.same_dtype(input=args.input, **{f"grad_grads.{k}": v for k, v in
                                          grad_grads._asdict().items()})
    be, put, geometry = call.backend, call.put, args.geometry
    dtype = args.input.dtype
    grad_input = be.zeros(args.input.shape, dtype)
    grad_packed = be.zeros(args.offset_mask.shape, dtype)   # padding entries stay 0
    if not has_pixels(args.input):
        grad_grad_output = be.zeros(args.grad_output.shape, dtype)
    else:
        x, packed = put(args.input), put(args.offset_mask)
        x_dot, packed_dot = put(grad_grads.input), _put_tangent(call, args, grad_grads.offset_mask)
        grad_grad_output = be.dcnv3_jvp(x, packed, packed, geometry, x_dot, packed_dot, packed_dot)
        be.dcnv3_backward_backward(put(args.grad_output), x, packed, packed, geometry, x_dot,
                                   packed_dot, packed_dot, grad_input, grad_packed, grad_packed,
                                   deterministic)
    return DCNv4BackwardGrads(call.get(grad_grad_output), call.get(grad_input),
                              call.get(grad_packed))
