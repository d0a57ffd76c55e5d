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

#: The most data bytes an IDX file may declare (2**40, a terabyte): a header declaring more
#: is corrupt, and the reader never asks for more than this.
MAX_DATA_BYTES = 2 ** 40

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

    Notes
    -----
    The file is read as a stream: the header first, then the data bytes it declares and one
    more, to tell an oversized file. A small file that decompresses to gigabytes (a "gzip
    bomb") is refused after reading one byte past its declared size.
    """
    name = os.fspath(path)
    compressed = False
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            return _read_stream(stream, name)
    except OSError as exc:
        if compressed and exc.errno is None:  # gzip's own errors (bad header or CRC) have no errno
            raise DataError(f"{name}: corrupt gzip stream ({exc})") from exc
        raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    except (EOFError, zlib.error) as exc:  # cut short; bad deflate data
        raise DataError(f"{name}: corrupt gzip stream ({exc})") from exc


def _read_exactly(stream, n):
    """Up to ``n`` bytes of ``stream``: fewer only at its end."""
    parts = []
    while n > 0:
        part = stream.read(min(n, 1 << 24))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _describe_dims(dims):
    """dims for a message: all of them when few, else the first few and the count."""
    if len(dims) <= 8:
        return str(dims)
    return f"({', '.join(str(d) for d in dims[:4])}, ... {len(dims)} dims)"


def _describe_count(n):
    """A byte count for a message: exact up to 18 digits, else in scientific notation."""
    return str(n) if n < 10 ** 18 else f"{float(n):.3e}" if n < 10 ** 308 else "more than 1e308"


def _read_stream(stream, name):
    """The array held by the IDX byte stream; ``name`` is the file name for messages."""
    head = _read_exactly(stream, 4)
    if len(head) < 4:
        raise DataError(f"{name}: expected an IDX header of at least 4 bytes, found {len(head)} bytes")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{name}: not an IDX file: expected a magic number starting with two zero "
                        f"bytes, found {head[:4].hex(' ')}")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({d.name})" for c, d in IDX_DTYPES.items())
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x}, expected one of {known}")
    if ndim == 0:
        raise DataError(f"{name}: expected at least 1 dimension in the IDX header, found 0")
    header = 4 + 4 * ndim
    dim_bytes = _read_exactly(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise DataError(f"{name}: truncated header: expected {header} bytes for {ndim} dimensions, "
                        f"found {4 + len(dim_bytes)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, ">u4", count=ndim))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # a Python int: no overflow, nothing allocated yet
    # read what the header declares and one byte more (to tell an oversized file), but never
    # more than the file can hold: a corrupt header may claim 1e28 bytes
    limit = min(expected, MAX_DATA_BYTES) + 1
    content = _read_exactly(stream, limit)
    found = len(content)
    if found != expected:
        what = "truncated" if found < expected else "oversized"
        found_text = str(found) if found < limit else f"{found} or more"
        raise DataError(f"{name}: {what}: dims {_describe_dims(dims)} of {dtype.name} need "
                        f"{_describe_count(expected)} data bytes after the {header}-byte header, "
                        f"found {found_text}")
    values = np.frombuffer(content, dtype).reshape(dims)
    return values.astype(dtype.newbyteorder("="))  # a native, writable copy
