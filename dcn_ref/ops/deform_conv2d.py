"""deform_conv2d: deformable convolution, DCNv1 (offsets) and DCNv2 (offsets and mask)."""
from typing import NamedTuple

from .. import sampling
from ..targets import Call
from . import _args, _conv
from .conv2d import check_conv_args


class DeformConv2dGrads(NamedTuple):
    input: object
    offset: object
    weight: object
    bias: object
    mask: object


def _check(input, offset, weight, bias, stride, padding, dilation, mask, grad_output=None):
    checked = check_conv_args(input, weight, bias, stride, padding, dilation)
    input, weight, bias, stride, padding, dilation, groups, out_h, out_w = checked
    N, c_in = input.shape[:2]
    c_out, _, kh, kw = weight.shape
    K = kh * kw
    offset = _args.float_array(offset, "offset", 4, "(N, 2*G*kh*kw, H_out, W_out)")
    n_offset = offset.shape[1]
    if n_offset < 2 * K or n_offset % (2 * K):
        raise ValueError(f"offset: expected a positive multiple of 2*kh*kw = {2 * K} channels "
                         f"(2*G*kh*kw for G offset groups), got {n_offset}")
    G = n_offset // (2 * K)
    if c_in % G:
        raise ValueError(f"offset: expected G = offset.shape[1] // (2*kh*kw) to divide C_in = {c_in}, "
                         f"got G = {G}")
    _args.expect_shape(offset, "offset", (N, 2 * G * K, out_h, out_w),
                       f"(N, 2*G*kh*kw, H_out, W_out) with G = {G}")
    if mask is not None:
        mask = _args.float_array(mask, "mask", 4, "(N, G*kh*kw, H_out, W_out)")
        _args.expect_shape(mask, "mask", (N, G * K, out_h, out_w),
                           f"(N, G*kh*kw, H_out, W_out) with G = {G}")
    if grad_output is not None:
        grad_output = _args.float_array(grad_output, "grad_output", 4, "(N, C_out, H_out, W_out)")
        _args.expect_shape(grad_output, "grad_output", (N, c_out, out_h, out_w),
                           "(N, C_out, H_out, W_out)")
    _args.same_dtype(input=input, offset=offset, weight=weight, bias=bias, mask=mask,
                     grad_output=grad_output)
    # The engine's grid: (kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w).
    grid = (kw, out_w) + stride + padding + dilation
    return input, offset, weight, bias, mask, groups, G, grid, (out_h, out_w), grad_output


class _Views:
    """The batch slices n0:n1 of the inputs as the sampling engine sees them."""

    def __init__(self, call, input, offset, mask, G, K, L):
        self.x, self.offset, self.mask = call.put(input), call.put(offset), call.put(mask)
        self.G, self.K, self.L = G, K, L
        self.cq, self.H, self.W = input.shape[1] // G, input.shape[2], input.shape[3]

    def image(self, array, n0, n1):       # (n, C, H, W) -> (Q = n*G, Cq, H, W)
        return array[n0:n1].reshape((n1 - n0) * self.G, self.cq, self.H, self.W)

    def offsets(self, array, n0, n1):     # (n, 2*G*K, H_out, W_out) -> (Q, K, 2, L)
        return array[n0:n1].reshape((n1 - n0) * self.G, self.K, 2, self.L)

    def masks(self, array, n0, n1):       # (n, G*K, H_out, W_out) -> (Q, K, L)
        if array is None:
            return None
        return array[n0:n1].reshape((n1 - n0) * self.G, self.K, self.L)

    def columns(self, columns, n0, n1):   # (n, C, K, L) -> (Q, Cq, K, L)
        return columns.reshape((n1 - n0) * self.G, self.cq, self.K, self.L)


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
    stride, padding, dilation : int or (h, w) pair
    mask : ndarray of shape (N, G*kh*kw, H_out, W_out) or None
        DCNv2 modulation: raw multipliers (no sigmoid inside), channel g*kh*kw + i*kw + j
        for tap (i, j) of group g.
    target : None, "cpu" or "cuda"

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out),
        ``H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (W_out alike).

    Notes
    -----
    Tap (i, j) of output pixel (oy, ox) reads channel c at
    ``y = oy*stride_h - pad_h + i*dilation_h + dy``, ``x = ox*stride_w - pad_w + j*dilation_w + dx``
    by bilinear interpolation with zero padding, multiplied by its mask value. Computed as
    a deformable im2col (one column entry per channel, tap and output pixel) and a GEMM.
    """
    call = Call(target, (input, offset, weight, bias, mask))
    input, offset, weight, bias, mask, groups, G, grid, (out_h, out_w), _ = _check(
        input, offset, weight, bias, stride, padding, dilation, mask)
    N, c_in = input.shape[:2]
    K = weight.shape[2] * weight.shape[3]
    v = _Views(call, input, offset, mask, G, K, out_h * out_w)
    be = call.backend

    def make_columns(n0, n1, columns):
        be.deform_im2col(v.image(v.x, n0, n1), v.offsets(v.offset, n0, n1),
                         v.masks(v.mask, n0, n1), sampling.ZEROS, grid,
                         v.columns(columns, n0, n1))

    out = _conv.forward(be, make_columns, call.put(weight), call.put(bias), N, c_in, K,
                        out_h * out_w, groups)
    return call.get(out.reshape(N, weight.shape[0], out_h, out_w))


def deform_conv2d_backward(grad_output, input, offset, weight, bias=None, stride=1, padding=0,
                           dilation=1, mask=None, *, target=None, deterministic=False):
    """Gradients of a scalar loss with respect to every input of ``deform_conv2d``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, H_out, W_out)
    input, offset, weight, bias, stride, padding, dilation, mask, target : as in
        ``deform_conv2d``.
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
    NaN offsets, and samples beyond the one-pixel zero rim, get zero gradient.
    """
    call = Call(target, (grad_output, input, offset, weight, bias, mask))
    input, offset, weight, bias, mask, groups, G, grid, (out_h, out_w), grad_output = _check(
        input, offset, weight, bias, stride, padding, dilation, mask, grad_output)
    N, c_in, H, W = input.shape
    K = weight.shape[2] * weight.shape[3]
    L = out_h * out_w
    v = _Views(call, input, offset, mask, G, K, L)
    be = call.backend
    grad_input = be.zeros(input.shape, input.dtype)
    grad_offset = be.empty(offset.shape, input.dtype)
    grad_mask = be.empty(mask.shape, input.dtype) if mask is not None else None

    def make_columns(n0, n1, columns):
        be.deform_im2col(v.image(v.x, n0, n1), v.offsets(v.offset, n0, n1),
                         v.masks(v.mask, n0, n1), sampling.ZEROS, grid,
                         v.columns(columns, n0, n1))

    def scatter_columns(n0, n1, grad_columns):
        grad_columns = v.columns(grad_columns, n0, n1)
        offsets, masks = v.offsets(v.offset, n0, n1), v.masks(v.mask, n0, n1)
        be.deform_col2im(grad_columns, offsets, masks, sampling.ZEROS, grid,
                         v.image(grad_input, n0, n1), deterministic)
        be.deform_coord_grad(grad_columns, v.image(v.x, n0, n1), offsets, masks, sampling.ZEROS,
                             grid, v.offsets(grad_offset, n0, n1), v.masks(grad_mask, n0, n1))

    grad_out = call.put(grad_output).reshape(N, weight.shape[0], L)
    grad_weight, grad_bias = _conv.backward(be, make_columns, scatter_columns, grad_out,
                                            call.put(weight), bias is not None, c_in, K, groups)
    return DeformConv2dGrads(input=call.get(grad_input), offset=call.get(grad_offset),
                             weight=call.get(grad_weight), bias=call.get(grad_bias),
                             mask=call.get(grad_mask))
