"""MNIST as four uint8 arrays: the 5,000-digit subset shipped with the package (the offline
default), or the standard four files in a folder (e.g. the full 60,000-digit set fetched by
``download_mnist``)."""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import DataError
from .idx import read_idx

IMAGE_SHAPE = (28, 28)

#: The files shipped in ``dcn_ref/data/mnist_files/`` (provenance and checksums in its README.md):
#: train images, train labels, test images, test labels.
SHIPPED_DIR = Path(__file__).with_name("mnist_files")
SHIPPED_FILES = ("mnist5k-images-idx3-ubyte.gz", "mnist5k-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: The standard MNIST file names, in the same order; each may also end in ".gz".
STANDARD_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNIST(NamedTuple):
    """The four MNIST arrays; unpacks as ``train_images, train_labels, test_images, test_labels``."""
    train_images: np.ndarray  # (N_train, 28, 28) uint8, 0 = background, 255 = ink
    train_labels: np.ndarray  # (N_train,) uint8 in 0..9
    test_images: np.ndarray   # (N_test, 28, 28) uint8
    test_labels: np.ndarray   # (N_test,) uint8 in 0..9


def load_mnist(data_dir=None):
    """Load MNIST training and test digits.

    Parameters
    ----------
    data_dir : str, os.PathLike or None
        None (default): the data shipped with the package, 5,000 training digits (500 per class,
        sorted by label; a sample of the MNIST training set) and the official 10,000 test
        digits. Otherwise a folder holding the standard files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``,
        each raw or gzip-compressed with ``.gz`` appended (the raw one is used if both exist).

    Returns
    -------
    MNIST
        A named tuple ``(train_images, train_labels, test_images, test_labels)``:
        images ndarray of shape (N, 28, 28), uint8; labels ndarray of shape (N,), uint8 in 0..9.

    Raises
    ------
    DataError
        If a file is missing, unreadable or corrupt, holds no images, images are not
        (N, 28, 28) uint8, labels
        are not (N,) uint8 in 0..9, or the image and label counts differ; the message names
        the file and the problem.

    Notes
    -----
    The shipped files are not checksummed on load, to keep loading fast; the test suite checks
    them against the sha256 table in ``dcn_ref/data/mnist_files/README.md``.
    """
    if data_dir is None:
        paths = [SHIPPED_DIR / name for name in SHIPPED_FILES]
    else:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            found = "a file" if data_dir.exists() else "nothing"
            raise DataError(f"{data_dir}: expected a folder holding the MNIST files, found {found}")
        paths = [_find(data_dir, name) for name in STANDARD_FILES]
    train_images, train_labels = _images_and_labels(paths[0], paths[1])
    test_images, test_labels = _images_and_labels(paths[2], paths[3])
    return MNIST(train_images, train_labels, test_images, test_labels)


def _find(data_dir, name):
    """The path of ``name`` or ``name.gz`` in ``data_dir``."""
    for candidate in (data_dir / name, data_dir / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{data_dir}: missing {name} (or {name}.gz); expected the four standard MNIST "
                    f"files {', '.join(STANDARD_FILES)}")


def _images_and_labels(images_path, labels_path):
    """Read and check one pair of files: images (N, 28, 28) uint8, labels (N,) uint8 in 0..9."""
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: expected images of shape (N, 28, 28) and dtype uint8, "
                        f"found shape {images.shape} and dtype {images.dtype}")
    if len(images) == 0:
        raise DataError(f"{images_path}: expected at least one image, found 0")
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels of shape (N,) and dtype uint8, "
                        f"found shape {labels.shape} and dtype {labels.dtype}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels, one per image in "
                        f"{images_path.name}, found {len(labels)}")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{labels_path}: expected labels in 0..9, found {labels[bad[0]]} at index "
                        f"{bad[0]} ({bad.size} labels out of range)")
    return images, labels
