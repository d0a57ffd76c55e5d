"""dcnv3: the core operator of DCNv3 (InternImage), channels last, with its backward.

DCNv4 (dcnv4.py) is the same operator reading a packed array; both hand a
``PointGeometry`` (dcn_ref/geometry.py) to the same kernels.
"""
import numbers
from typing import NamedTuple

import numpy as np

from ..geometry import PointGeometry
from ..grads import DCNv3Grads
from ..targets import Call
from . import _args


class PointGrid(NamedTuple):
    """What dcnv3 and dcnv4 share, checked: the input and the grid of points."""
    input: object
    geometry: PointGeometry   # the storage strides still 0: each op fills in its own


class DCNv3Args(NamedTuple):
    """The checked arguments of a dcnv3 call (arrays on their device)."""
    input: object
    offset: object
    mask: object
    geometry: PointGeometry
    grad_output: object


def check_grid(input, kernel_size, stride, padding, dilation, group, offset_scale, remove_center):
    """Validate what dcnv3 and dcnv4 share; return a ``PointGrid``."""
    input = _args.float_array(input, "input", 4, "(N, H, W, C)")
    N, H, W, C = input.shape
    kh, kw = _args.pair(kernel_size, "kernel_size", 1)
    stride = _args.pair(stride, "stride", 1)
    padding = _args.pair(padding, "padding", 0)
    dilation = _args.pair(dilation, "dilation", 1)
    if not (isinstance(group, (numbers.Integral, np.integer)) and not isinstance(group, bool)
            and group >= 1):
        raise ValueError(f"group: expected a positive int, got {group!r}")
    if C % group:
        raise ValueError(f"group: expected a divisor of the channels C = {C} of input "
                         f"(N, H, W, C), got {group}")
    if not (isinstance(offset_scale, numbers.Real) and not isinstance(offset_scale, bool)
            and _args.is_finite(offset_scale)):
        raise ValueError(f"offset_scale: expected a finite number, got {offset_scale!r}")
    if not isinstance(remove_center, (bool, np.bool_)):
        raise ValueError(f"remove_center: expected True or False, got {remove_center!r}")
    if remove_center and (kh % 2 == 0 or kw % 2 == 0):
        raise ValueError(f"remove_center: expected odd kernel sizes (the centre must be a "
                         f"kernel point), got kernel_size {(kh, kw)}")
    if remove_center and kh * kw == 1:
        raise ValueError("remove_center: expected a kernel of more than one point, got "
                         "kernel_size (1, 1)")
    out_h, out_w = _args.conv_output_size(H, W, kh, kw, stride, padding, dilation)
    geometry = PointGeometry(
        kernel_h=kh, kernel_w=kw, stride_h=stride[0], stride_w=stride[1], pad_h=padding[0],
        pad_w=padding[1], dilation_h=dilation[0], dilation_w=dilation[1], out_h=out_h,
        out_w=out_w, group=int(group), group_channels=C // int(group),
        points=kh * kw - int(bool(remove_center)), offset_scale=float(offset_scale),
        remove_center=bool(remove_center), offset_stride=0, mask_start=0, mask_stride=0)
    return PointGrid(input, geometry)


def has_pixels(input):
    """False for an image of zero height or width: it has no pixel, so every point reads 0
    with zero gradient and the ops skip the kernels."""
    return input.shape[1] > 0 and input.shape[2] > 0


def check_grad_output(grad_output, input, geometry):
    grad_output = _args.float_array(grad_output, "grad_output", 4, "(N, H_out, W_out, C)")
    _args.expect_shape(grad_output, "grad_output",
                       (input.shape[0], geometry.out_h, geometry.out_w, input.shape[3]),
                       "(N, H_out, W_out, C)")
    return grad_output


def _check(input, offset, mask, kernel_size, stride, padding, dilation, group, offset_scale,
           remove_center, grad_output=None):
    input, geometry = check_grid(input, kernel_size, stride, padding, dilation, group,
                                 offset_scale, remove_center)
    N = input.shape[0]
    G, P = geometry.group, geometry.points
    rows = (N, geometry.out_h, geometry.out_w)
    offset = _args.float_array(offset, "offset", 4, "(N, H_out, W_out, group*P*2)")
    _args.expect_shape(offset, "offset", rows + (G * P * 2,),
                       f"(N, H_out, W_out, group*P*2) with group = {G}, P = {P}")
    mask = _args.float_array(mask, "mask", 4, "(N, H_out, W_out, group*P)")
    _args.expect_shape(mask, "mask", rows + (G * P,),
                       f"(N, H_out, W_out, group*P) with group = {G}, P = {P}")
    if grad_output is not None:
        grad_output = check_grad_output(grad_output, input, geometry)
    _args.same_dtype(input=input, offset=offset, mask=mask, grad_output=grad_output)
    geometry = geometry._replace(offset_stride=2 * P, mask_start=0, mask_stride=P)
    return DCNv3Args(input, offset, mask, geometry, grad_output)


def dcnv3(input, offset, mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False, *, target=None):
    """DCNv3's core operator: per group, a weighted sum of bilinear samples at P points.

    Layouts and numbers of InternImage's ``DCNv3Function`` (channels last).

    Parameters
    ----------
    input : ndarray of shape (N, H, W, C)
        ``C = group * group_channels``; channels ``[g*Cg, (g+1)*Cg)`` form group g.
    offset : ndarray of shape (N, H_out, W_out, group*P*2)
        Entry ``(g*P + p)*2`` is the **x** (column) offset of point p in group g, the next
        entry its **y** (row) offset.
    mask : ndarray of shape (N, H_out, W_out, group*P)
        The points' raw weights (the DCNv3 module applies a softmax over P first; the op
        applies none).
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
        Groups of channels that share points; divides C.
    offset_scale : float
        Scales the regular grid around its centre and the offsets alike.
    remove_center : bool
        Leave out the kernel's centre point (needs odd kernel sizes).
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (N, H_out, W_out, C)
        ``H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (W_out alike).

    Notes
    -----
    ``P = kh*kw`` (less one with remove_center). Point p is kernel position (i, j), column
    i and row j, enumerated **column-major** (j fastest), skipping ``(kw//2, kh//2)`` with
    remove_center. With ``half_h = dilation_h*(kh - 1)//2`` (half_w alike), point p of
    output pixel (ho, wo) samples

        y = ho*stride_h - pad_h + half_h + (j*dilation_h - half_h + dy) * offset_scale
        x = wo*stride_w - pad_w + half_w + (i*dilation_w - half_w + dx) * offset_scale

    and ``out[n, ho, wo, g*Cg + c] = sum_p mask[.., g*P + p] * bilinear(input[n, :, :, g*Cg + c], y, x)``
    over the zero-extended image (pixel centres at integers): a point with y <= -1,
    y >= H, x <= -1 or x >= W adds 0. No weight, no bias. An image of zero height or
    width has no pixel: the output is 0 (its padded size), and every gradient 0.

    Hostile values: a NaN offset or weight makes its point add 0 (and get zero gradient);
    infinite and huge offsets act as far outside the image.
    """
    call = Call(target, (input, offset, mask))
    args = _check(input, offset, mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center)
    be, put, geometry = call.backend, call.put, args.geometry
    if not has_pixels(args.input):
        return call.get(be.zeros((args.input.shape[0], geometry.out_h, geometry.out_w,
                                  args.input.shape[3]), args.input.dtype))
    return call.get(be.dcnv3(put(args.input), put(args.offset), put(args.mask), geometry))


def dcnv3_backward(grad_output, input, offset, mask, kernel_size=3, stride=1, padding=0,
                   dilation=1, group=1, offset_scale=1.0, remove_center=False, *, target=None,
                   deterministic=False):
    """Gradients of a scalar loss with respect to every input of ``dcnv3``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, H_out, W_out, C)
    input : ndarray of shape (N, H, W, C)
    offset : ndarray of shape (N, H_out, W_out, group*P*2)
    mask : ndarray of shape (N, H_out, W_out, group*P)
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    group : int
    offset_scale : float
    remove_center : bool
    target : str or None
        As in ``dcnv3``.
    deterministic : bool
        CUDA only: gather the input gradient instead of scattering it with atomics
        (bitwise reproducible). The CPU is always deterministic.

    Returns
    -------
    DCNv3Grads(input (N, H, W, C), offset ``(N, H_out, W_out, group*P*2)``,
    mask ``(N, H_out, W_out, group*P)``)

    Notes
    -----
    With v = bilinear(input[.., c], y, x) and g = grad_output at the same channel:

        d mask[p]  = sum_c g * v                       (over the group's channels)
        d dy[p]    = mask[p] * offset_scale * sum_c g * dv/dy      (dx alike)
        d input    : each channel hands mask[p] * g to the four pixels of the cell,
                     by their bilinear weights.

    At integer coordinates the derivative is the right derivative (that of the cell
    [floor(y), floor(y) + 1]), as everywhere in dcn_ref. A point exactly at y = -1 (or
    x = -1) has value 0 and, here, the right derivative of the cell [-1, 0];
    InternImage's kernels skip such a point (y > -1 is their test) and give it zero
    gradient. The two differ only on that set of measure zero.
    """
    call = Call(target, (grad_output, input, offset, mask))
    args = _check(input, offset, mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center, grad_output)
    be, put = call.backend, call.put
    dtype = args.input.dtype
    grad_input = be.zeros(args.input.shape, dtype)
    grad_offset = be.zeros(args.offset.shape, dtype)
    grad_mask = be.zeros(args.mask.shape, dtype)
    if has_pixels(args.input):
        be.dcnv3_backward(put(args.grad_output), put(args.input), put(args.offset),
                          put(args.mask), args.geometry, grad_input, grad_offset, grad_mask,
                          deterministic)
    return DCNv3Grads(call.get(grad_input), call.get(grad_offset), call.get(grad_mask))
