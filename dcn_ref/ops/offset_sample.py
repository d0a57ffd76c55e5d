"""offset_sample: the resampling step of the Keras ConvOffset2D layer."""
from typing import NamedTuple

from .. import sampling
from ..geometry import conv_geometry
from ..grads import OffsetSampleBackwardGrads, OffsetSampleGrads
from ..targets import Call
from . import _args


def _identity_grid(height, width):
    """A 1x1 "kernel" with stride 1 and no padding: tap 0 of pixel (i, j) sits at (i, j)."""
    return conv_geometry((1, 1), (height, width), stride=(1, 1), padding=(0, 0),
                         dilation=(1, 1))


class OffsetSampleArgs(NamedTuple):
    """The checked arguments of an offset_sample call (arrays on their device)."""
    input: object
    offset: object
    mode: int                 # sampling.ZEROS or sampling.BORDER
    grad_output: object


def _check(input, offset, padding_mode, grad_output=None):
    input = _args.float_array(input, "input", 4, "(N, C, H, W)")
    offset = _args.float_array(offset, "offset", 4, "(N, 2C, H, W)")
    N, C, H, W = input.shape
    _args.expect_shape(offset, "offset", (N, 2 * C, H, W), "(N, 2C, H, W): channel 2c = dy, 2c+1 = dx")
    mode = _args.padding_mode(padding_mode, sampling.PADDING_MODES)
    if grad_output is not None:
        grad_output = _args.float_array(grad_output, "grad_output", 4, "(N, C, H, W)")
        _args.expect_shape(grad_output, "grad_output", (N, C, H, W), "(N, C, H, W)")
    _args.same_dtype(input=input, offset=offset, grad_output=grad_output)
    return OffsetSampleArgs(input, offset, mode, grad_output)


def offset_sample(input, offset, padding_mode="border", *, target=None):
    """Move every pixel of every channel by its own learned (dy, dx): ConvOffset2D's resampling.

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W)
    offset : ndarray of shape (N, 2C, H, W)
        Channel 2c is dy and channel 2c+1 is dx for input channel c.
    padding_mode : str
        "border" (as the Keras layer, which clamps the coordinates into the image) or
        "zeros".
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (N, C, H, W)
        ``out[n, c, i, j] = bilinear(input[n, c], i + dy[n, c, i, j], j + dx[n, c, i, j])``.

    Notes
    -----
    This is a deformable im2col with a 1x1 kernel and one offset group per channel. The
    Keras layer's own layout pairs offsets differently (it reshapes (b, h, w, 2c) into
    ``(b*c, h, w, 2)``); here the pairing is explicit.
    """
    call = Call(target, (input, offset))
    args = _check(input, offset, padding_mode)
    N, C, H, W = args.input.shape
    be = call.backend
    image = call.put(args.input).reshape(N * C, 1, H, W)          # (Q, Cq=1, H, W)
    offset4 = call.put(args.offset).reshape(N * C, 1, 2, H * W)   # (Q, K=1, 2, L)
    out = be.empty((N * C, 1, 1, H * W), args.input.dtype)        # (Q, Cq, K, L)
    be.deform_im2col(image, offset4, None, args.mode, _identity_grid(H, W), out)
    return call.get(out.reshape(N, C, H, W))


def offset_sample_backward(grad_output, input, offset, padding_mode="border", *, target=None,
                           deterministic=False):
    """Gradients of a scalar loss with respect to ``input`` and ``offset``.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C, H, W)
    input : ndarray of shape (N, C, H, W)
    offset : ndarray of shape (N, 2C, H, W)
    padding_mode : str
    target : str or None
        As in ``offset_sample``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    OffsetSampleGrads(input (N, C, H, W), offset (N, 2C, H, W))

    Notes
    -----
    As for ``bilinear_sample``: the input gradient scatters each output's gradient to the
    four pixels it read; the offset gradient is grad_output times the bilinear derivative
    (0 where "border" clamped the coordinate).
    """
    call = Call(target, (grad_output, input, offset))
    args = _check(input, offset, padding_mode, grad_output)
    N, C, H, W = args.input.shape
    be = call.backend
    image = call.put(args.input).reshape(N * C, 1, H, W)
    offset4 = call.put(args.offset).reshape(N * C, 1, 2, H * W)
    grad_columns = call.put(args.grad_output).reshape(N * C, 1, 1, H * W)
    geometry = _identity_grid(H, W)
    grad_input = be.zeros((N * C, 1, H, W), args.input.dtype)
    grad_offset = be.empty((N * C, 1, 2, H * W), args.input.dtype)
    be.sample_backward(grad_columns, image, offset4, None, args.mode, geometry, grad_input,
                       grad_offset, None, deterministic)
    return OffsetSampleGrads(input=call.get(grad_input.reshape(N, C, H, W)),
                             offset=call.get(grad_offset.reshape(N, 2 * C, H, W)))


# -- forward mode and second derivatives -------------------------------------------------

def _engine_tangents(call, args, input_dot, offset_dot):
    """The tangents as the engine reads them: input_dot (N*C, 1, H, W) or None, offset_dot
    (N*C, 1, 2, H*W), zeros when None."""
    N, C, H, W = args.input.shape
    if offset_dot is None:
        offset_dot4 = call.backend.zeros((N * C, 1, 2, H * W), args.input.dtype)
    else:
        offset_dot4 = call.put(offset_dot).reshape(N * C, 1, 2, H * W)
    image_dot = None if input_dot is None else call.put(input_dot).reshape(N * C, 1, H, W)
    return image_dot, offset_dot4


def offset_sample_jvp(input, offset, padding_mode="border", *, input_dot=None, offset_dot=None,
                      target=None):
    """Forward mode: how ``offset_sample``'s output changes along tangents of its inputs.

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W)
    offset : ndarray of shape (N, 2C, H, W)
    padding_mode : str
        As in ``offset_sample``.
    input_dot : ndarray of shape (N, C, H, W) or None
        The tangent of ``input``; None: zero.
    offset_dot : ndarray of shape (N, 2C, H, W) or None
        The tangent of ``offset``; None: zero.
    target : str or None
        As in ``offset_sample``.

    Returns
    -------
    out_dot : ndarray of shape (N, C, H, W)
        ``d/dt offset_sample(input + t*input_dot, offset + t*offset_dot)`` at t = 0.

    Notes
    -----
    As ``bilinear_sample_jvp``, for every pixel and channel: the sample of ``input_dot``
    plus the bilinear derivatives times the offsets' tangents (0 where "border" clamped).
    """
    call = Call(target, (input, offset, input_dot, offset_dot))
    args = _check(input, offset, padding_mode)
    input_dot = _args.tangent(input_dot, "input_dot", args.input, "input")
    offset_dot = _args.tangent(offset_dot, "offset_dot", args.offset, "offset")
    _args.same_dtype(input=args.input, input_dot=input_dot, offset_dot=offset_dot)
    N, C, H, W = args.input.shape
    be = call.backend
    image_dot, offset_dot4 = _engine_tangents(call, args, input_dot, offset_dot)
    out = be.empty((N * C, 1, 1, H * W), args.input.dtype)
    be.tangent_im2col(call.put(args.input).reshape(N * C, 1, H, W),
                      call.put(args.offset).reshape(N * C, 1, 2, H * W), None, args.mode,
                      _identity_grid(H, W), image_dot, offset_dot4, None, out)
    return call.get(out.reshape(N, C, H, W))


def offset_sample_backward_backward(grad_grads, grad_output, input, offset, padding_mode="border",
                                    *, target=None, deterministic=False):
    """Second derivatives: the gradients of a scalar loss with respect to every input of
    ``offset_sample_backward``.

    Parameters
    ----------
    grad_grads : OffsetSampleGrads
        d loss / d (the outputs of ``offset_sample_backward``): fields ``input``
        (N, C, H, W) and ``offset`` (N, 2C, H, W), each None for zero (or a tuple of two).
    grad_output : ndarray of shape (N, C, H, W)
    input : ndarray of shape (N, C, H, W)
    offset : ndarray of shape (N, 2C, H, W)
    padding_mode : str
    target : str or None
        As in ``offset_sample``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    OffsetSampleBackwardGrads(grad_output (N, C, H, W), input (N, C, H, W), offset (N, 2C, H, W))

    Notes
    -----
    As ``bilinear_sample_backward_backward``: the gradient with respect to ``grad_output``
    is ``offset_sample_jvp`` along ``grad_grads``; the others contract the sample's second
    derivatives, of which only the cross term ``d2v/dydx`` is not 0 inside a cell.
    """
    call = Call(target, (grad_output, input, offset) + _args.grad_grads_arrays(grad_grads))
    args = _check(input, offset, padding_mode, grad_output)
    grad_grads = _args.grad_grads(grad_grads, OffsetSampleGrads,
                                  {"input": args.input, "offset": args.offset})
    _args.same_dtype(input=args.input, **{f"grad_grads.{k}": v for k, v in
                                          grad_grads._asdict().items()})
    N, C, H, W = args.input.shape
    be = call.backend
    dtype = args.input.dtype
    image = call.put(args.input).reshape(N * C, 1, H, W)
    offset4 = call.put(args.offset).reshape(N * C, 1, 2, H * W)
    geometry = _identity_grid(H, W)
    image_dot, offset_dot4 = _engine_tangents(call, args, *grad_grads)
    grad_grad_output = be.empty((N * C, 1, 1, H * W), dtype)
    be.tangent_im2col(image, offset4, None, args.mode, geometry, image_dot, offset_dot4, None,
                      grad_grad_output)
    grad_input = be.zeros((N * C, 1, H, W), dtype)
    grad_offset = be.zeros((N * C, 1, 2, H * W), dtype)
    be.sample_backward_backward(call.put(args.grad_output).reshape(N * C, 1, 1, H * W), image,
                                offset4, None, args.mode, geometry, image_dot, offset_dot4, None,
                                grad_input, grad_offset, None, deterministic)
    return OffsetSampleBackwardGrads(call.get(grad_grad_output.reshape(N, C, H, W)),
                                     call.get(grad_input.reshape(N, C, H, W)),
                                     call.get(grad_offset.reshape(N, 2 * C, H, W)))
