"""IDX bytes written by hand with struct, independently of dcn_ref.data.idx: the source of the
test files for the reader, the MNIST loader and the downloader."""
import gzip
import struct

import numpy as np

TYPE_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D,
              "float64": 0x0E}


def idx_bytes(type_code, dims, payload):
    """The magic number (0, 0, type code, number of dims), the dims as big-endian uint32, the payload."""
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def idx_of(array):
    """An array as IDX bytes (type code from its dtype, values big-endian)."""
    array = np.asarray(array)
    payload = array.astype(array.dtype.newbyteorder(">")).tobytes()
    return idx_bytes(TYPE_CODES[array.dtype.name], array.shape, payload)


def write(path, content, compress=False):
    """Write ``content`` to ``path`` (gzip-compressed if asked); return the path."""
    path.write_bytes(gzip.compress(content) if compress else content)
    return path
