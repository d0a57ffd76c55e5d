"""Scaled-and-shifted digits, the data of the Keras deformable-convolution experiment
(felixlaumon/deform-conv, ``scripts/scaled_mnist.py``): every image is shrunk by its own random
factor along each axis and moved by its own random shift, drawn afresh each epoch.

Output pixel (i, j) of an (H, W) image with zoom (zy, zx) and shift (ty, tx) copies the input
pixel nearest to

    y = zy * (i - cy) + cy + ty,    x = zx * (j - cx) + cx + tx,    (cy, cx) = ((H-1)/2, (W-1)/2),

with halves rounded up and points outside the image clamped to its edge. That is, to the pixel,
``scipy.ndimage.affine_transform(image, np.diag(zoom), offset, order=0, mode="nearest")`` with
``offset = (1 - zoom) * centre + shift`` (``affine_offset``). A zoom z > 1 fits z times more of
the input into the frame, so the digit shrinks to 1/z of its size about the image centre; the
shift is applied in the input frame (as Keras composes it), so it moves the digit by -t/z pixels.

The experiment used Keras' ``ImageDataGenerator(zoom_range=(1.0, 2.5), width_shift_range=0.2,
height_shift_range=0.2)``: zy, zx ~ U(1.0, 2.5) independently, ty ~ U(-0.2, 0.2) * H,
tx ~ U(-0.2, 0.2) * W, nearest-neighbour resampling with edge replication. One difference:
Keras put the centre at (H/2 + 0.5, W/2 + 0.5), 14.5 for MNIST, one pixel off the true centre
13.5; that equals our transform with an extra shift of -(z - 1) in [-1.5, 0] pixels.
"""
import numbers
from typing import NamedTuple

import numpy as np

ZOOM_RANGE = (1.0, 2.5)   # zoom factors ~ U(ZOOM_RANGE), rows and columns independently
SHIFT_RANGE = 0.2         # shifts ~ U(-SHIFT_RANGE, SHIFT_RANGE) * image size, per axis
TEST_SEED = 2017          # the seed of the scaled test set


class ScaleShift(NamedTuple):
    """The drawn parameters of a batch, one row per image, (row, column) order."""
    zoom: np.ndarray   # (N, 2) float64: (zy, zx); the digit shrinks to 1/z of its size
    shift: np.ndarray  # (N, 2) float64: (ty, tx) in pixels, in the input frame


def draw_scale_shift(rng, n, image_shape=(28, 28), zoom_range=ZOOM_RANGE, shift_range=SHIFT_RANGE):
    """Draw the parameters for ``n`` images: zoom ~ U(zoom_range), shift ~ U(+-shift_range) * size.

    Parameters
    ----------
    rng : numpy.random.Generator
        The source of randomness; the zooms (n, 2) are drawn first, then the shifts (n, 2).
    n : int
        The number of images.
    image_shape : (int, int)
        (H, W); shifts are fractions of it.
    zoom_range : (float, float)
        (low, high) with 0 < low <= high.
    shift_range : float
        The largest shift as a fraction of the image size, >= 0.

    Returns
    -------
    ScaleShift
        zoom and shift, each ndarray of shape (n, 2), float64.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    low, high = _pair_of_floats(zoom_range, "zoom_range")
    if not 0 < low <= high:
        raise ValueError(f"zoom_range: expected (low, high) with 0 < low <= high, got {zoom_range!r}")
    if not (isinstance(shift_range, numbers.Real) and 0 <= shift_range < np.inf):
        raise ValueError(f"shift_range: expected a finite number >= 0, got {shift_range!r}")
    height, width = image_shape
    zoom = rng.uniform(low, high, size=(n, 2))
    shift = rng.uniform(-shift_range, shift_range, size=(n, 2)) * np.array([height, width])
    return ScaleShift(zoom, shift)


def affine_offset(params, image_shape):
    """The ``offset`` of ``scipy.ndimage.affine_transform`` for each image (its matrix is
    ``np.diag(params.zoom[n])``): offset = (1 - zoom) * centre + shift, centre = ((H-1)/2, (W-1)/2).

    Returns
    -------
    ndarray of shape (N, 2), float64
    """
    centre = (np.asarray(image_shape, dtype=np.float64) - 1) / 2
    return (1 - params.zoom) * centre + params.shift


def scale_shift(images, params):
    """Apply given zooms and shifts to a batch of images (nearest neighbour, edge replication).

    Parameters
    ----------
    images : ndarray of shape (N, H, W)
        Any dtype; not modified.
    params : ScaleShift
        zoom and shift of shape (N, 2), finite.

    Returns
    -------
    ndarray of shape (N, H, W)
        A new array of the dtype of ``images``; image n equals
        ``affine_transform(images[n], np.diag(zoom[n]), affine_offset(params, (H, W))[n],
        order=0, mode="nearest")``.
    """
    images = _image_batch(images)
    N, H, W = images.shape
    try:
        zoom, shift = (np.asarray(p, dtype=np.float64) for p in params)
    except (TypeError, ValueError):
        raise ValueError(f"params: expected a ScaleShift(zoom, shift) of float arrays, "
                         f"got {type(params).__name__}") from None
    for name, p in (("zoom", zoom), ("shift", shift)):
        if p.shape != (N, 2):
            raise ValueError(f"params.{name}: expected shape ({N}, 2) for {N} images, got {p.shape}")
    offset = affine_offset(ScaleShift(zoom, shift), (H, W))               # (N, 2)
    # The transform is separable: the source row depends on i only, the source column on j only.
    y = np.arange(H) * zoom[:, :1] + offset[:, :1]                         # (N, H), as scipy sums
    x = np.arange(W) * zoom[:, 1:] + offset[:, 1:]                         # (N, W)
    if not (np.isfinite(y).all() and np.isfinite(x).all()):
        raise ValueError("params: expected zooms and shifts that give finite coordinates, got "
                         "non-finite or overflowing values")
    rows = np.clip(np.floor(y + 0.5), 0, H - 1).astype(np.intp)           # nearest, edge clamped
    cols = np.clip(np.floor(x + 0.5), 0, W - 1).astype(np.intp)
    return images[np.arange(N)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, H, W)


def random_scale_shift(images, rng, zoom_range=ZOOM_RANGE, shift_range=SHIFT_RANGE):
    """Draw parameters for every image of ``images`` (N, H, W) from ``rng`` and apply them.

    Returns
    -------
    (ndarray of shape (N, H, W), ScaleShift)
        The transformed images (dtype of ``images``) and the parameters drawn.
    """
    images = _image_batch(images)
    params = draw_scale_shift(rng, images.shape[0], images.shape[1:], zoom_range, shift_range)
    return scale_shift(images, params), params


def scaled_test_set(images, seed=TEST_SEED):
    """The scaled test set: transforms drawn once from a fixed seed, so every evaluation sees
    the same images. Returns ``(images (N, H, W), ScaleShift)`` as ``random_scale_shift``."""
    return random_scale_shift(images, np.random.default_rng(_seed(seed, "seed")))


def scaled_epoch(images, seed, epoch):
    """Fresh transforms of the training images for one epoch, reproducible from (seed, epoch)
    alone (a run resumed at epoch k sees the same images) and drawn from a stream of their own
    (never that of ``scaled_test_set``). Returns ``(images (N, H, W), ScaleShift)``."""
    rng = np.random.default_rng([_seed(seed, "seed"), _seed(epoch, "epoch")])
    return random_scale_shift(images, rng)


def _image_batch(images):
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images: expected 3 dimensions (N, H, W), got shape {images.shape}")
    return images


def _seed(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return int(value)


def _pair_of_floats(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair of numbers (low, high), got {value!r}") from None
    return low, high
