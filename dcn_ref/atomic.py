"""Files written atomically: to a temporary file in the same folder, flushed to disk, then
renamed over the target (``os.replace`` is atomic on one file system). A crash or a kill
leaves the old file or the new one, never half of one; an exception removes the temporary.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path, mode="wb"):
    """``with atomic_file(path) as f: ...`` writes ``f`` to ``path`` when the block ends
    without an exception. The file gets the permissions that ``open`` would give a new one
    (0o666 less the umask), not the owner-only ones of a temporary file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt
        Path(temporary).unlink(missing_ok=True)
        raise
