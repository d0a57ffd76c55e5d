"""conv2d: plain 2-d convolution (cross-correlation) as im2col + GEMM."""
import numbers
from typing import NamedTuple

from ..geometry import ConvGeometry, conv_geometry
from ..grads import Conv2dGrads
from ..targets import Call
from . import _args


class ConvArgs(NamedTuple):
    """The checked arguments of a convolution call (arrays as given, on their device)."""
    input: object
    weight: object
    bias: object
    geometry: ConvGeometry
    grad_output: object = None


def check_conv_args(input, weight, bias, stride, padding, dilation, groups=None):
    """Check the arguments a plain and a deformable convolution share.

    Returns a ``ConvArgs`` whose geometry has ``offset_groups = 1``. ``groups=None`` means
    "derive it as C_in // weight.shape[1]" (deform_conv2d).
    """
    input = _args.float_array(input, "input", 4, "(N, C_in, H, W)")
    weight = _args.float_array(weight, "weight", 4, "(C_out, C_in/groups, kh, kw)")
    if bias is not None:
        bias = _args.float_array(bias, "bias", 1, "(C_out,)")
    stride = _args.pair(stride, "stride", 1)
    padding = _args.pair(padding, "padding", 0)
    dilation = _args.pair(dilation, "dilation", 1)
    N, c_in, H, W = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in < 1:
        raise ValueError(f"input: expected at least one channel (C_in >= 1), got shape "
                         f"{tuple(input.shape)}")
    if kh < 1 or kw < 1 or c_per_group < 1:
        raise ValueError(f"weight: expected positive C_in/groups, kh and kw, got shape {tuple(weight.shape)}")
    if groups is None:
        if c_in % c_per_group:
            raise ValueError(f"weight: expected weight.shape[1] to divide C_in = {c_in} (groups = "
                             f"C_in / weight.shape[1]), got weight.shape[1] = {c_per_group}")
        groups = c_in // c_per_group
    else:
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"groups: expected a positive int, got {groups!r}")
        groups = int(groups)
        if c_in % groups or c_in // groups != c_per_group:
            raise ValueError(f"weight: expected shape[1] = C_in/groups = {c_in}/{groups}, got "
                             f"weight shape {tuple(weight.shape)}")
    if c_out % groups:
        raise ValueError(f"weight: expected C_out (weight.shape[0]) divisible by groups = {groups}, "
                         f"got {c_out}")
    if bias is not None:
        _args.expect_shape(bias, "bias", (c_out,), "(C_out,)")
    out_hw = _args.conv_output_size(H, W, kh, kw, stride, padding, dilation)
    geometry = conv_geometry((kh, kw), out_hw, stride, padding, dilation, groups=groups)
    return ConvArgs(input, weight, bias, geometry)


def check_grad_output(grad_output, args):
    """``grad_output`` checked against a convolution's ``ConvArgs`` (N, C_out, H_out, W_out)."""
    grad_output = _args.float_array(grad_output, "grad_output", 4, "(N, C_out, H_out, W_out)")
    expected = (args.input.shape[0], args.weight.shape[0], args.geometry.out_h,
                args.geometry.out_w)
    _args.expect_shape(grad_output, "grad_output", expected, "(N, C_out, H_out, W_out)")
    return grad_output


def _check(input, weight, bias, stride, padding, dilation, groups, grad_output=None):
    args = check_conv_args(input, weight, bias, stride, padding, dilation, groups)
    if grad_output is not None:
        args = args._replace(grad_output=check_grad_output(grad_output, args))
    _args.same_dtype(input=args.input, weight=args.weight, bias=args.bias,
                     grad_output=args.grad_output)
    return args


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, target=None):
    """2-d convolution with the semantics of ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
        Zeros added on each side.
    dilation : int or (h, w) pair
    groups : int
        Channel groups; divides C_in and C_out.
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out)
        ``H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (W_out alike).

    Notes
    -----
    ``out[n, o, oy, ox] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * x[n, g*C_in/groups + c,
    oy*stride_h - pad_h + i*dilation_h, ox*stride_w - pad_w + j*dilation_w]`` with zero
    padding, where g = o // (C_out/groups). Computed as im2col then one GEMM per group.
    """
    call = Call(target, (input, weight, bias))
    args = _check(input, weight, bias, stride, padding, dilation, groups)
    out = call.backend.conv2d(call.put(args.input), call.put(args.weight), call.put(args.bias),
                              args.geometry)
    return call.get(out)


def conv2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0, dilation=1,
                    groups=1, *, target=None, deterministic=False):
    """Gradients of a scalar loss with respect to ``input``, ``weight`` and ``bias``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, H_out, W_out)
    input : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
    target : str or None
        As in ``conv2d``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    Conv2dGrads(input (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw), bias (C_out,)
    or None when no bias was given)

    Notes
    -----
    With columns X (the im2col matrix) and out = W X + b:
    ``dW = dout X^T``, ``db = sum of dout over images and pixels``, and
    ``dx = col2im(W^T dout)``, which adds each column entry back to the pixel it was copied from.
    """
    call = Call(target, (grad_output, input, weight, bias))
    args = _check(input, weight, bias, stride, padding, dilation, groups, grad_output)
    grad_input, grad_weight, grad_bias = call.backend.conv2d_backward(
        call.put(args.grad_output), call.put(args.input), call.put(args.weight),
        args.bias is not None, args.geometry, deterministic)
    return Conv2dGrads(input=call.get(grad_input), weight=call.get(grad_weight),
                       bias=call.get(grad_bias))
