"""bilinear_sample: read images at fractional (y, x) points."""
from typing import NamedTuple

from .. import sampling
from ..geometry import conv_geometry
from ..grads import BilinearSampleGrads
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
