"""Device memory for the CUDA target: moving arrays, allocating, filling."""
import numpy as np
from numba import cuda
from numba.cuda.cudadrv.driver import device_memset

from .launch import current_stream


def check_available():
    """Raise ValueError when no GPU (and no simulator) is there to run the kernels."""
    if not cuda.is_available():
        raise ValueError("target: 'cuda' needs a CUDA GPU, and numba.cuda.is_available() is "
                         "False here (set NUMBA_ENABLE_CUDASIM=1 before Numba is imported to "
                         "run the kernels in Numba's simulator)")


def to_target(x):
    """A C-contiguous device array: device arrays pass through, host arrays are copied over.

    Arrays of other libraries that expose ``__cuda_array_interface__`` (CuPy, PyTorch) are
    wrapped without a copy. A non-contiguous device array makes a trip through the host.
    """
    if hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__"):
        if not hasattr(x, "copy_to_host"):
            x = cuda.as_cuda_array(x)
        if x.is_c_contiguous():
            return x
        x = x.copy_to_host()
    check_available()
    return cuda.to_device(np.ascontiguousarray(x))


def to_host(x):
    return x.copy_to_host()


def empty(shape, dtype):
    return cuda.device_array(shape, dtype)


def zeros(shape, dtype):
    """A device array of zeros, cleared by the driver's memset on the current stream (no
    kernel: a memset costs the host less than a Numba launch)."""
    out = cuda.device_array(shape, dtype)
    if out.size:
        device_memset(out.reshape(out.size), 0, out.nbytes, current_stream())
    return out
