"""deform_conv2d: deformable convolution, DCNv1 (offsets) and DCNv2 (offsets and mask)."""
from typing import NamedTuple

from ..geometry import ConvGeometry
from ..grads import DeformConv2dBackwardGrads, DeformConv2dGrads
from ..targets import Call
from . import _args
from .conv2d import check_conv_args, check_grad_output


class DeformConvArgs(NamedTuple):
    """The checked arguments of a deformable convolution call (arrays on their device)."""
    input: object
    offset: object
    mask: object
    weight: object
    bias: object
    geometry: ConvGeometry
    grad_output: object


# torchvision's words for a wrong offset or mask, which code written for it matches on
_OFFSET_AXIS = "(the shape of the offset tensor at dimension {} is not valid)"
_MASK_AXIS = "(mask.shape[{}] is not valid)"


def _expect_shape(x, name, expected, layout, axis_words):
    """``_args.expect_shape``, and the first axis that differs in ``axis_words``."""
    if tuple(x.shape) != tuple(expected):
        axis = next(i for i, (a, b) in enumerate(zip(x.shape, expected)) if a != b)
        raise ValueError(f"{name}: expected shape {tuple(expected)} {layout}, got "
                         f"{tuple(x.shape)} {axis_words.format(axis)}")


def _check(input, offset, weight, bias, stride, padding, dilation, mask, grad_output=None):
    conv = check_conv_args(input, weight, bias, stride, padding, dilation)
    input, weight, bias = conv.input, conv.weight, conv.bias
    N, c_in = input.shape[:2]
    out_h, out_w = conv.geometry.out_h, conv.geometry.out_w
    K = conv.geometry.taps
    offset = _args.float_array(offset, "offset", 4, "(N, 2*G*kh*kw, H_out, W_out)")
    n_offset = offset.shape[1]
    if n_offset < 2 * K or n_offset % (2 * K):
        raise ValueError(f"offset: expected a positive multiple of 2*kh*kw = {2 * K} channels "
                         f"(2*G*kh*kw for G offset groups), got {n_offset} "
                         f"{_OFFSET_AXIS.format(1)}")
    G = n_offset // (2 * K)
    if c_in % G:
        raise ValueError(f"offset: expected G = offset.shape[1] // (2*kh*kw) to divide C_in = {c_in}, "
                         f"got G = {G} {_OFFSET_AXIS.format(1)}")
    _expect_shape(offset, "offset", (N, 2 * G * K, out_h, out_w),
                  f"(N, 2*G*kh*kw, H_out, W_out) with G = {G}", _OFFSET_AXIS)
    if mask is not None:
        mask = _args.float_array(mask, "mask", 4, "(N, G*kh*kw, H_out, W_out)")
        _expect_shape(mask, "mask", (N, G * K, out_h, out_w),
                      f"(N, G*kh*kw, H_out, W_out) with G = {G}", _MASK_AXIS)
    if grad_output is not None:
        grad_output = check_grad_output(grad_output, conv)
    _args.same_dtype(input=input, offset=offset, weight=weight, bias=bias, mask=mask,
                     grad_output=grad_output)
    return DeformConvArgs(input, offset, mask, weight, bias,
                          conv.geometry._replace(offset_groups=G), grad_output)


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None,
                  *, target=None):
    """Deformable convolution with the signature and numbers of ``torchvision.ops.deform_conv2d``.

    Parameters
    ----------
    input : ndarray of shape (N, C_in, H, W)
    offset : ndarray of shape (N, 2*G*kh*kw, H_out, W_out)
        G offset groups. Channel ``2*(g*kh*kw + i*kw + j)`` is the dy of tap (i, j) in
        offset group g, the next channel its dx. Input channel c belongs to offset group
        ``c // (C_in/G)``.
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
        groups = C_in // weight.shape[1].
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
        Zeros added on each side.
    dilation : int or (h, w) pair
    mask : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
        DCNv2 modulation: raw multipliers (no sigmoid inside), channel
        ``g*kh*kw + i*kw + j`` for tap (i, j) of group g. A NaN value leaves its tap
        out: it adds 0, and its offset and mask get zero gradient (as for a NaN offset).
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out)
        ``H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (W_out alike).

    Notes
    -----
    Tap (i, j) of output pixel (oy, ox) reads channel c at
    ``y = oy*stride_h - pad_h + i*dilation_h + dy``, ``x = ox*stride_w - pad_w + j*dilation_w + dx``
    by bilinear interpolation with zero padding, multiplied by its mask value. Computed as
    a deformable im2col (one column entry per channel, tap and output pixel) and a GEMM.
    """
    call = Call(target, (input, offset, weight, bias, mask))
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    put = call.put
    out = call.backend.deform_conv2d(put(args.input), put(args.offset), put(args.mask),
                                     put(args.weight), put(args.bias), args.geometry)
    return call.get(out)


def deform_conv2d_backward(grad_output, input, offset, weight, bias=None, stride=1, padding=0,
                           dilation=1, mask=None, *, target=None, deterministic=False):
    """Gradients of a scalar loss with respect to every input of ``deform_conv2d``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, H_out, W_out)
    input : ndarray of shape (N, C_in, H, W)
    offset : ndarray of shape (N, 2*G*kh*kw, H_out, W_out)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    mask : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
    target : str or None
        As in ``deform_conv2d``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    DeformConv2dGrads(input, offset, weight, bias, mask), each the shape of its input;
    bias and mask are None when they were not given.

    Notes
    -----
    With columns X[c, tap, pixel] = m * bilinear(x[c], y, x) and out = W X + b:
    ``dW = dout X^T`` and ``db = sum dout``; ``dX = W^T dout`` then flows on as
      d input  : each column entry hands m * dX to the four pixels it read, by their weights;
      d offset : ``sum_c dX * m * dbilinear/dy`` (and /dx) over the channels of the group;
      d mask   : ``sum_c dX * bilinear(x[c], y, x)``.
    NaN offsets, NaN mask values, and samples beyond the one-pixel zero rim, get zero
    gradient.
    """
    call = Call(target, (grad_output, input, offset, weight, bias, mask))
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask, grad_output)
    put = call.put
    grads = call.backend.deform_conv2d_backward(
        put(args.grad_output), put(args.input), put(args.offset), put(args.mask),
        put(args.weight), args.bias is not None, args.geometry, deterministic)
    return DeformConv2dGrads(*(call.get(g) for g in grads))


# -- forward mode and second derivatives -------------------------------------------------

def _given(args):
    """The checked differentiable arguments by name, as the tangents are checked against."""
    return {"input": args.input, "offset": args.offset, "weight": args.weight,
            "bias": args.bias, "mask": args.mask}


def _put_tangents(call, args, tangents):
    """The tangents (a DeformConv2dGrads of arrays or None) on the target, as it takes them:
    the offsets' and (with a mask) the mask's as arrays, zeros when None."""
    be, dtype = call.backend, args.input.dtype
    put = call.put
    offset_dot = put(tangents.offset) if tangents.offset is not None else be.zeros(
        args.offset.shape, dtype)
    mask_dot = None
    if args.mask is not None:
        mask_dot = put(tangents.mask) if tangents.mask is not None else be.zeros(
            args.mask.shape, dtype)
    return DeformConv2dGrads(put(tangents.input), offset_dot, put(tangents.weight),
                             put(tangents.bias), mask_dot)


def deform_conv2d_jvp(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                      mask=None, *, input_dot=None, offset_dot=None, weight_dot=None,
                      bias_dot=None, mask_dot=None, target=None):
    """Forward mode: how ``deform_conv2d``'s output changes along tangents of its inputs.

    Parameters
    ----------
    input : ndarray of shape (N, C_in, H, W)
    offset : ndarray of shape (N, 2*G*kh*kw, H_out, W_out)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    mask : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
    input_dot : ndarray of shape (N, C_in, H, W) or None
        The tangent of ``input``; None: zero. Each ``*_dot`` has its input's shape.
    offset_dot : ndarray of shape (N, 2*G*kh*kw, H_out, W_out) or None
    weight_dot : ndarray of shape (C_out, C_in/groups, kh, kw) or None
    bias_dot : ndarray of shape (C_out,) or None
        None when ``bias`` is None.
    mask_dot : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
        None when ``mask`` is None.
    target : str or None
        As in ``deform_conv2d``.

    Returns
    -------
    out_dot : ndarray of shape (N, C_out, H_out, W_out)
        The Jacobian-vector product: ``d/dt deform_conv2d(input + t*input_dot, ...)`` at
        t = 0.

    Notes
    -----
    With columns X and ``out = W X + b``: ``out_dot = W X_dot + W_dot X + b_dot``. A
    column entry ``m * v`` changes by ``m_dot v + m (v(input_dot) + dv/dy dy_dot + dv/dx
    dx_dot)``: the sample of the input's tangent, and the bilinear derivatives of the
    backward (right derivatives at integer coordinates) times the offsets' tangents. Taps
    that touch no pixel, or have a NaN offset or mask, change by 0.
    """
    call = Call(target, (input, offset, weight, bias, mask, input_dot, offset_dot, weight_dot,
                         bias_dot, mask_dot))
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    given = _given(args)
    tangents = DeformConv2dGrads(*(_args.tangent(v, f"{name}_dot", given[name], name)
                                   for name, v in zip(DeformConv2dGrads._fields,
                                                      (input_dot, offset_dot, weight_dot,
                                                       bias_dot, mask_dot))))
    _args.same_dtype(input=args.input, **{f"{k}_dot": v for k, v in tangents._asdict().items()})
    put = call.put
    t = _put_tangents(call, args, tangents)
    out_dot = call.backend.deform_conv2d_jvp(put(args.input), put(args.offset), put(args.mask),
                                             put(args.weight), put(args.bias), args.geometry,
                                             t.input, t.offset, t.mask, t.weight, t.bias)
    return call.get(out_dot)


def deform_conv2d_backward_backward(grad_grads, grad_output, input, offset, weight, bias=None,
                                    stride=1, padding=0, dilation=1, mask=None, *, target=None,
                                    deterministic=False):
    """Second derivatives: the gradients of a scalar loss with respect to every input of
    ``deform_conv2d_backward``.

    Parameters
    ----------
    grad_grads : DeformConv2dGrads
        d loss / d (the outputs of ``deform_conv2d_backward``): fields ``input``,
        ``offset``, ``weight``, ``bias``, ``mask``, each None for zero or an array of its
        input's shape (None where the input is None), or a tuple of five.
    grad_output : ndarray of shape (N, C_out, H_out, W_out)
    input : ndarray of shape (N, C_in, H, W)
    offset : ndarray of shape (N, 2*G*kh*kw, H_out, W_out)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    mask : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
    target : str or None
        As in ``deform_conv2d``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    DeformConv2dBackwardGrads(grad_output, input, offset, weight, bias, mask), each the
    shape of its argument; bias and mask are None when not given (and bias, when given,
    is 0: the backward does not depend on it).

    Notes
    -----
    The backward is linear in ``grad_output``, so the gradient with respect to it is
    ``deform_conv2d_jvp`` along ``grad_grads``. With columns X and ``out = W X + b`` the
    rest is, for ``S = <dout, W X_dot + W_dot X>`` (``X_dot`` the column tangents along
    ``grad_grads``): ``d weight = dout X_dot^T``; for input, offset and mask, the
    first-order backward with ``W_dot = grad_grads.weight`` in place of W, plus the
    second-order sampling of ``W^T dout``, whose only second derivatives in a cell are the
    cross terms input–offset, input–mask, offset–mask and dy–dx (``d2v/dy2 = d2v/dx2 = 0``).
    """
    call = Call(target, (grad_output, input, offset, weight, bias, mask)
                + _args.grad_grads_arrays(grad_grads))
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask, grad_output)
    grad_grads = _args.grad_grads(grad_grads, DeformConv2dGrads, _given(args))
    _args.same_dtype(input=args.input, **{f"grad_grads.{k}": v for k, v in
                                          grad_grads._asdict().items()})
    be, put = call.backend, call.put
    t = _put_tangents(call, args, grad_grads)
    x, off, mask_, weight_ = put(args.input), put(args.offset), put(args.mask), put(args.weight)
    grad_grad_output = be.deform_conv2d_jvp(x, off, mask_, weight_, put(args.bias),
                                            args.geometry, t.input, t.offset, t.mask, t.weight,
                                            t.bias)
    grad_input, grad_offset, grad_weight, grad_mask = be.deform_conv2d_backward_backward(
        put(args.grad_output), x, off, mask_, weight_, args.geometry, t.input, t.offset, t.mask,
        t.weight, deterministic)
    grad_bias = None if args.bias is None else be.zeros(args.bias.shape, args.input.dtype)
    return DeformConv2dBackwardGrads(*(call.get(g) for g in (
        grad_grad_output, grad_input, grad_offset, grad_weight, grad_bias, grad_mask)))
