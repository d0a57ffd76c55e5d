"""The IDX file format, in which MNIST is distributed.

An IDX file is a small header followed by the values of one array (all integers big-endian):

    bytes 0-1     0x00 0x00
    byte  2       the type code of the values (``IDX_DTYPES``)
    byte  3       the number of dimensions D
    4*D bytes     the dimensions, uint32 each, first dimension first
    the rest      prod(dims) values, big-endian, C order (last index fastest)

A file may be gzip-compressed as a whole; that is recognised by its first two bytes
(0x1f 0x8b), not by its name.
"""
import gzip
import math
import os
import zlib

import numpy as np

from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

IDX_DTYPES = {  # type code -> dtype of the values as stored (big-endian)
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Read an IDX file, raw or gzip-compressed, into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Compression is detected from the content (the gzip magic 0x1f 0x8b).

    Returns
    -------
    ndarray of shape ``dims``
        The values in native byte order, a fresh writable array whose dtype is given by the
        type code: uint8, int8, int16, int32, float32 or float64.

    Raises
    ------
    DataError
        If the file cannot be read, its gzip stream is corrupt or truncated, the magic number
        is wrong, the type code is unknown, or the data are not exactly
        ``prod(dims) * itemsize`` bytes. The message names the file, what was expected and
        what was found.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    if content[:2] == GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as exc:  # bad CRC or header; cut short; bad deflate data
            raise DataError(f"{name}: corrupt gzip stream ({exc})") from exc
    return _parse(content, name)


def _parse(content, name):
    """The array held by the IDX bytes ``content``; ``name`` is the file name for messages."""
    if len(content) < 4:
        raise DataError(f"{name}: expected an IDX header of at least 4 bytes, found {len(content)} bytes")
    if content[0] != 0 or content[1] != 0:
        raise DataError(f"{name}: not an IDX file: expected a magic number starting with two zero "
                        f"bytes, found {content[:4].hex(' ')}")
    code, ndim = content[2], content[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({d.name})" for c, d in IDX_DTYPES.items())
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x}, expected one of {known}")
    if ndim == 0:
        raise DataError(f"{name}: expected at least 1 dimension in the IDX header, found 0")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{name}: truncated header: expected {header} bytes for {ndim} dimensions, "
                        f"found {len(content)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(content, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # a Python int: no overflow, nothing allocated yet
    found = len(content) - header
    if found != expected:
        what = "truncated" if found < expected else "oversized"
        raise DataError(f"{name}: {what}: dims {dims} of {dtype.name} need {expected} data bytes "
                        f"after the {header}-byte header, found {found}")
    values = np.frombuffer(content, dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="))  # a native, writable copy
