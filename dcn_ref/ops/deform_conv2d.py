"""deform_conv2d: deformable convolution, DCNv1 (offsets) and DCNv2 (offsets and mask)."""
from typing import NamedTuple

from ..geometry import ConvGeometry
from ..grads import DeformConv2dGrads
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
