"""bilinear_sample: read images at fractional (y, x) points."""
from typing import NamedTuple

from .. import sampling
from ..geometry import conv_geometry
from ..grads import BilinearSampleBackwardGrads, BilinearSampleGrads
from ..targets import Call
from . import _args

# Each point is one tap of a grid collapsed onto the origin (stride = dilation = 0), so the
# engine's "offset" of a point is its coordinate.
_POINT_GRID = conv_geometry((1, 1), (1, 1), stride=(0, 0), padding=(0, 0), dilation=(0, 0))


class SampleArgs(NamedTuple):
    """The checked arguments of a bilinear_sample call (arrays on their device)."""
    image: object
    coords: object
    mode: int                 # sampling.ZEROS or sampling.BORDER
    grad_output: object


def _check(image, coords, padding_mode, grad_output=None):
    image = _args.float_array(image, "image", 3, "(B, H, W)")
    coords = _args.float_array(coords, "coords", 3, "(B, P, 2)")
    B = image.shape[0]
    if coords.shape[0] != B or coords.shape[2] != 2:
        raise ValueError(f"coords: expected shape ({B}, P, 2) (B, P, (y, x)), got {tuple(coords.shape)}")
    mode = _args.padding_mode(padding_mode, sampling.PADDING_MODES)
    if grad_output is not None:
        grad_output = _args.float_array(grad_output, "grad_output", 2, "(B, P)")
        _args.expect_shape(grad_output, "grad_output", (B, coords.shape[1]), "(B, P)")
    _args.same_dtype(image=image, coords=coords, grad_output=grad_output)
    return SampleArgs(image, coords, mode, grad_output)


def bilinear_sample(image, coords, padding_mode="zeros", *, target=None):
    """Sample each image at fractional points with bilinear interpolation.

    Parameters
    ----------
    image : ndarray of shape (B, H, W)
    coords : ndarray of shape (B, P, 2)
        ``coords[b, p] = (y, x)`` in pixels, pixel centres at integers (scipy.ndimage's
        convention).
    padding_mode : str
        "zeros": the image is surrounded by zeros and interpolation continues across the
        edge, so points with y <= -1, y >= H, x <= -1 or x >= W give 0. Equals
        ``scipy.ndimage.map_coordinates(image[b], coords[b].T, order=1,
        mode="grid-constant")``.
        "border": the point is clamped into [0, H-1] x [0, W-1] first (as the Keras
        ConvOffset2D layer does); equals ``map_coordinates(..., order=1, mode="nearest")``.
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (B, P)

    Notes
    -----
    With ``(y0, x0) = floor(y, x)`` and ``(ly, lx) = (y - y0, x - x0)``:
    ``out = (1-ly)(1-lx) I[y0, x0] + (1-ly) lx I[y0, x0+1] + ly (1-lx) I[y0+1, x0]
    + ly lx I[y0+1, x0+1]``. NaN points give 0. An image of zero height or width has no
    pixel: every point of it gives 0, in either padding mode.
    """
    call = Call(target, (image, coords))
    args = _check(image, coords, padding_mode)
    B, H, W = args.image.shape
    P = args.coords.shape[1]
    be = call.backend
    image4 = call.put(args.image).reshape(B, 1, H, W)      # (Q=B, Cq=1, H, W)
    offset4 = call.put(args.coords).reshape(B, P, 2, 1)    # (Q=B, K=P, 2, L=1)
    columns = be.empty((B, 1, P, 1), args.image.dtype)     # (Q, Cq, K, L)
    be.deform_im2col(image4, offset4, None, args.mode, _POINT_GRID, columns)
    return call.get(columns.reshape(B, P))


def bilinear_sample_backward(grad_output, image, coords, padding_mode="zeros", *,
                             target=None, deterministic=False):
    """Gradients of a scalar loss with respect to ``image`` and ``coords``.

    Parameters
    ----------
    grad_output : ndarray of shape (B, P)
        d loss / d out.
    image : ndarray of shape (B, H, W)
    coords : ndarray of shape (B, P, 2)
    padding_mode : str
    target : str or None
        As in ``bilinear_sample``.
    deterministic : bool
        On the CUDA target, gather instead of scattering with atomics so that two runs
        are bitwise equal. The CPU is always deterministic.

    Returns
    -------
    BilinearSampleGrads(image (B, H, W), coords (B, P, 2))

    Notes
    -----
    d out / d I[corner] is that corner's weight, so the image gradient scatters
    ``grad_output`` back to the four corners. ``d out / d y = (1-lx)(I[y0+1, x0] - I[y0, x0])
    + lx (I[y0+1, x0+1] - I[y0, x0+1])`` inside a cell (right derivative at integers),
    and 0 where "border" clamped y. NaN points get zero gradient.
    """
    call = Call(target, (grad_output, image, coords))
    args = _check(image, coords, padding_mode, grad_output)
    B, H, W = args.image.shape
    P = args.coords.shape[1]
    be = call.backend
    image4 = call.put(args.image).reshape(B, 1, H, W)
    offset4 = call.put(args.coords).reshape(B, P, 2, 1)
    grad_columns = call.put(args.grad_output).reshape(B, 1, P, 1)
    grad_image = be.zeros((B, 1, H, W), args.image.dtype)
    grad_coords = be.empty((B, P, 2, 1), args.image.dtype)
    be.sample_backward(grad_columns, image4, offset4, None, args.mode, _POINT_GRID, grad_image,
                       grad_coords, None, deterministic)
    return BilinearSampleGrads(image=call.get(grad_image.reshape(B, H, W)),
                               coords=call.get(grad_coords.reshape(B, P, 2)))


# -- forward mode and second derivatives -------------------------------------------------

def _engine_tangents(call, args, image_dot, coords_dot):
    """The tangents as the engine reads them: image_dot (B, 1, H, W) or None, coords_dot
    (B, P, 2, 1), zeros when None."""
    B, H, W = args.image.shape
    P = args.coords.shape[1]
    if coords_dot is None:
        offset_dot = call.backend.zeros((B, P, 2, 1), args.image.dtype)
    else:
        offset_dot = call.put(coords_dot).reshape(B, P, 2, 1)
    return None if image_dot is None else call.put(image_dot).reshape(B, 1, H, W), offset_dot


def bilinear_sample_jvp(image, coords, padding_mode="zeros", *, image_dot=None,
                        coords_dot=None, target=None):
    """Forward mode: how ``bilinear_sample``'s output changes along tangents of its inputs.

    Parameters
    ----------
    image : ndarray of shape (B, H, W)
    coords : ndarray of shape (B, P, 2)
    padding_mode : str
        As in ``bilinear_sample``.
    image_dot : ndarray of shape (B, H, W) or None
        The tangent (direction of change) of ``image``; None: zero.
    coords_dot : ndarray of shape (B, P, 2) or None
        The tangent of ``coords``; None: zero.
    target : str or None
        As in ``bilinear_sample``.

    Returns
    -------
    out_dot : ndarray of shape (B, P)
        The Jacobian-vector product: ``d/dt bilinear_sample(image + t*image_dot,
        coords + t*coords_dot)`` at t = 0.

    Notes
    -----
    ``out_dot = bilinear(image_dot, y, x) + dv/dy * y_dot + dv/dx * x_dot``, with the
    derivatives of ``bilinear_sample_backward``: right derivatives at integer coordinates,
    0 where "border" clamped a coordinate, and NaN points change by 0.
    """
    call = Call(target, (image, coords, image_dot, coords_dot))
    args = _check(image, coords, padding_mode)
    image_dot = _args.tangent(image_dot, "image_dot", args.image, "image")
    coords_dot = _args.tangent(coords_dot, "coords_dot", args.coords, "coords")
    _args.same_dtype(image=args.image, image_dot=image_dot, coords_dot=coords_dot)
    B, H, W = args.image.shape
    P = args.coords.shape[1]
    be = call.backend
    image_dot4, offset_dot4 = _engine_tangents(call, args, image_dot, coords_dot)
    columns_dot = be.empty((B, 1, P, 1), args.image.dtype)
    be.tangent_im2col(call.put(args.image).reshape(B, 1, H, W),
                      call.put(args.coords).reshape(B, P, 2, 1), None, args.mode, _POINT_GRID,
                      image_dot4, offset_dot4, None, columns_dot)
    return call.get(columns_dot.reshape(B, P))


def bilinear_sample_backward_backward(grad_grads, grad_output, image, coords,
                                      padding_mode="zeros", *, target=None, deterministic=False):
    """Second derivatives: the gradients of a scalar loss with respect to every input of
    ``bilinear_sample_backward``.

    Parameters
    ----------
    grad_grads : BilinearSampleGrads
        d loss / d (the outputs of ``bilinear_sample_backward``): fields ``image`` (B, H, W)
        and ``coords`` (B, P, 2), each None for zero (a tuple of the two works too).
    grad_output : ndarray of shape (B, P)
    image : ndarray of shape (B, H, W)
    coords : ndarray of shape (B, P, 2)
    padding_mode : str
    target : str or None
        As in ``bilinear_sample``.
    deterministic : bool
        CUDA only: gather instead of scattering with atomics (bitwise reproducible).

    Returns
    -------
    BilinearSampleBackwardGrads(grad_output (B, P), image (B, H, W), coords (B, P, 2))

    Notes
    -----
    The backward is linear in ``grad_output``, so the gradient with respect to it is the
    forward mode along ``grad_grads``: ``bilinear_sample_jvp(image, coords,
    image_dot=grad_grads.image, coords_dot=grad_grads.coords)``. The others contract the
    second derivatives of the sample with ``grad_output`` and ``grad_grads``. Inside a cell
    the sample is linear in y and in x, so ``d2v/dy2 = d2v/dx2 = 0`` and only the cross term
    ``d2v/dydx = I[y0, x0] - I[y0, x0+1] - I[y0+1, x0] + I[y0+1, x0+1]`` is left, with the
    right-derivative convention at the kinks and 0 where "border" clamped.
    """
    call = Call(target, (grad_output, image, coords) + _args.grad_grads_arrays(grad_grads))
    args = _check(image, coords, padding_mode, grad_output)
    grad_grads = _args.grad_grads(grad_grads, BilinearSampleGrads,
                                  {"image": args.image, "coords": args.coords})
    _args.same_dtype(image=args.image, **{f"grad_grads.{k}": v for k, v in
                                          grad_grads._asdict().items()})
    B, H, W = args.image.shape
    P = args.coords.shape[1]
    be = call.backend
    dtype = args.image.dtype
    image4 = call.put(args.image).reshape(B, 1, H, W)
    offset4 = call.put(args.coords).reshape(B, P, 2, 1)
    image_dot4, offset_dot4 = _engine_tangents(call, args, *grad_grads)
    grad_grad_output = be.empty((B, 1, P, 1), dtype)
    be.tangent_im2col(image4, offset4, None, args.mode, _POINT_GRID, image_dot4, offset_dot4,
                      None, grad_grad_output)
    grad_image = be.zeros((B, 1, H, W), dtype)
    grad_coords = be.zeros((B, P, 2, 1), dtype)
    be.sample_backward_backward(call.put(args.grad_output).reshape(B, 1, P, 1), image4, offset4,
                                None, args.mode, _POINT_GRID, image_dot4, offset_dot4, None,
                                grad_image, grad_coords, None, deterministic)
    return BilinearSampleBackwardGrads(call.get(grad_grad_output.reshape(B, P)),
                                       call.get(grad_image.reshape(B, H, W)),
                                       call.get(grad_coords.reshape(B, P, 2)))
