"""How the CPU convolutions cut their work: blocks of output pixels whose columns fit in L2.

A convolution's columns are large (one image of the bench's shape (d) has 576 x 3,136
floats, 7 MB) and every entry is written once and read once or twice soon after. Built for
the whole batch, they leave the cache between the pass that writes them and the matrix
product that reads them. ``conv.py`` builds them instead for a **block** of output pixels
at a time, multiplies the block at once and, in the backward, hands the block's
gradient on to the image and offsets at once: a block's columns live in the L2 cache of
the core that works on it, and never go to memory.

A block's columns take ``block_bytes(weight_bytes)``: half the L2 cache of one core (the
other half holds the weight's panels and the image rows the block reads), read from Linux's
``/sys/devices/system/cpu/cpu0/cache`` or ``os.sysconf("SC_LEVEL2_CACHE_SIZE")``, 1 MiB
where neither says; but no less than the weight of one conv group, which the product reads
whole for every block: a block as large as the weight keeps that re-reading below the
traffic of the columns themselves (on the bench's shape (c), C_out = 256 and K*C = 2,304,
the weight is 2.3 MB), up to four L2 caches (each worker holds a block). The environment variable ``DCN_REF_BLOCK_BYTES`` (a number of bytes,
read at every call) overrides both.

The blocks cut the batch's output pixels, image after image (a block may hold the end of
one image and the start of the next, so small images still make large products), and
worker w of ``workers`` (one a Numba thread) takes the contiguous run
``worker_blocks(w, total, workers)``; which worker computes what,
and in which order it adds, depends only on the shapes, the block size and the thread
count, never on timing, so the results are bitwise the same from run to run.
"""
import functools
import glob
import os

from numba.extending import register_jitable

ENV_VAR = "DCN_REF_BLOCK_BYTES"
DEFAULT_L2_BYTES = 2**20
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def _parse_size(text):
    """'2048K' (sysfs's way of writing a cache size) or '1048576' -> bytes."""
    text = text.strip().upper()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


@functools.lru_cache(maxsize=None)
def l2_cache_bytes():
    """The L2 cache of one core in bytes, as the OS reports it (``DEFAULT_L2_BYTES`` when it
    does not)."""
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(index, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(index, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if level == "2" and kind in ("Unified", "Data") and size > 0:
            return size
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (ValueError, OSError, AttributeError):
        size = 0
    return size if size > 0 else DEFAULT_L2_BYTES


def block_bytes(weight_bytes=0):
    """How many bytes of columns a block may take: ``DCN_REF_BLOCK_BYTES`` when it is set,
    else half of ``l2_cache_bytes()`` or ``weight_bytes`` (one conv group's weight, counted
    up to four L2 caches), whichever is larger."""
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() == "":
        l2 = l2_cache_bytes()
        return max(l2 // 2, min(weight_bytes, 4 * l2))
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"{ENV_VAR}: expected a positive whole number of bytes, got {value!r}")
    return size


def block_count(rows, row_bytes, weight_bytes, workers):
    """Into how many blocks the ``rows`` = N*L output pixels of a batch are cut: as few as
    keep a block's columns (``row_bytes`` a pixel) within ``block_bytes(weight_bytes)``,
    rounded up to a multiple of ``workers`` so that each has as many (never more than one
    a pixel)."""
    per_block = max(1, block_bytes(weight_bytes) // max(1, row_bytes))
    count = -(-rows // per_block)
    count = -(-count // workers) * workers
    return max(1, min(rows, count))


@register_jitable
def block_rows(b, count, rows):
    """Block b of ``count`` as its output pixels [r0, r1) of the batch (pixel l of image n
    is row n*L + l): sizes differ by one at most, and a block may span images."""
    return b * rows // count, (b + 1) * rows // count


@register_jitable
def worker_blocks(w, total, workers):
    """The run of blocks [start, stop) worker w takes of ``total``, in order."""
    return w * total // workers, (w + 1) * total // workers


def max_block_rows(rows, count):
    """The most output pixels a block has (the size of a worker's scratch)."""
    return -(-rows // count)
