"""Data for the scaled-MNIST experiment: an IDX reader, MNIST (shipped subset, a folder, or a
verified download) and the random scale-and-shift transform of the Keras experiment.

Every problem with data files or downloads raises ``DataError`` (a ValueError) with a one-line
message naming the file, what was expected and what was found.
"""
from .download import MNIST_MD5, MNIST_URL, DownloadError, download_mnist
from .errors import DataError
from .idx import read_idx
from .mnist import MNIST, load_mnist
from .scaled import (ScaleShift, affine_offset, draw_scale_shift, random_scale_shift, scale_shift,
                     scaled_epoch, scaled_test_set)

__all__ = [
    "DataError", "read_idx",
    "MNIST", "load_mnist",
    "download_mnist", "DownloadError", "MNIST_URL", "MNIST_MD5",
    "ScaleShift", "draw_scale_shift", "scale_shift", "random_scale_shift", "affine_offset",
    "scaled_test_set", "scaled_epoch",
]
