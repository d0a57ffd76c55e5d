"""The CUDA target: Numba CUDA kernels, the same interface as ``dcn_ref.cpu``.

Arrays are C-contiguous Numba device arrays. The *col2im functions take
``deterministic``: False scatters with atomics (fast, last bits vary from run to run),
True gathers (bitwise reproducible; see ``deterministic.py``). Everything else is
deterministic either way: each output element is written by one thread in a fixed order.
"""
import numpy as np
from numba import cuda

from . import deform as _deform
from . import deterministic as _deterministic
from . import gemm as _gemm
from . import im2col as _im2col
from .launch import launch

name = "cuda"


def check_available():
    """Raise ValueError when no GPU (and no simulator) is there to run the kernels."""
    if not cuda.is_available():
        raise ValueError("target: 'cuda' needs a CUDA GPU, and numba.cuda.is_available() is "
                         "False here (set NUMBA_ENABLE_CUDASIM=1 before Numba is imported to "
                         "run the kernels in Numba's simulator)")


# -- memory ---------------------------------------------------------------------------

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


@cuda.jit
def _fill(flat, value):
    i = cuda.grid(1)
    if i < flat.size:
        flat[i] = value


def zeros(shape, dtype):
    out = cuda.device_array(shape, dtype)
    launch(_fill, out.size, out.reshape(out.size), 0)
    return out


def _mask_or_dummy(mask, like):
    """Kernels need an array in every argument: a 1x1x1 stand-in when there is no mask."""
    return (mask, True) if mask is not None else (cuda.device_array((1, 1, 1), like.dtype), False)


# -- deformable sampling (the engine of dcn_ref/sampling.py) ----------------------------

def deform_im2col(image, offset, mask, mode, grid, columns):
    mask, use_mask = _mask_or_dummy(mask, image)
    launch(_deform.deform_im2col, columns.size, image, offset, mask, use_mask, mode,
           tuple(grid), columns)


def deform_col2im(grad_columns, offset, mask, mode, grid, grad_image, deterministic=False):
    mask, use_mask = _mask_or_dummy(mask, grad_columns)
    grid = tuple(grid)
    if not deterministic:
        launch(_deform.deform_col2im_atomic, grad_columns.size, grad_columns, offset, mask,
               use_mask, mode, grid, grad_image)
        return
    Q, _, H, W = grad_image.shape
    n_samples = offset.shape[1] * offset.shape[3]
    cell_of = cuda.device_array((Q, n_samples), np.int32)
    order = cuda.device_array((Q, n_samples), np.int32)
    cell_start = cuda.device_array((Q, (H + 1) * (W + 1)), np.int32)
    cell_count = cuda.device_array((Q, (H + 1) * (W + 1)), np.int32)
    launch(_deterministic.bucket_samples, Q, offset, mode, grid, H, W, cell_of, cell_start,
           cell_count, order)
    launch(_deterministic.gather_image_grad, grad_image.size, grad_columns, offset, mask,
           use_mask, mode, grid, cell_start, cell_count, order, grad_image)


def deform_coord_grad(grad_columns, image, offset, mask, mode, grid, grad_offset, grad_mask):
    mask, use_mask = _mask_or_dummy(mask, image)
    if grad_mask is None:
        grad_mask = cuda.device_array((1, 1, 1), image.dtype)
    launch(_deform.deform_coord_grad, offset.shape[0] * offset.shape[1] * offset.shape[3],
           grad_columns, image, offset, mask, use_mask, mode, tuple(grid), grad_offset, grad_mask)


# -- plain convolution columns -----------------------------------------------------------

def im2col(x, grid, columns):
    launch(_im2col.im2col, columns.size, x, tuple(grid), columns)


def col2im(columns, grid, grad_x, deterministic=False):
    if deterministic:
        launch(_im2col.col2im_gather, grad_x.size, columns, tuple(grid), grad_x)
    else:
        launch(_im2col.col2im_atomic, columns.size, columns, tuple(grid), grad_x)


# -- the matrix products of a grouped convolution (shapes as in dcn_ref.cpu) -------------

def conv_gemm(weight, columns, out):
    """out[n, g] = weight[g] @ columns[n, g]."""
    n, G, Kd, L = columns.shape
    _gemm.gemm(weight, columns.reshape(n * G, Kd, L), out.reshape(n * G, out.shape[2], L))


def conv_gemm_grad_columns(weight, grad_out):
    """grad_columns[n, g] = weight[g].T @ grad_out[n, g]."""
    n, G, M, L = grad_out.shape
    Kd = weight.shape[2]
    grad_columns = cuda.device_array((n, G, Kd, L), grad_out.dtype)
    _gemm.gemm(weight, grad_out.reshape(n * G, M, L), grad_columns.reshape(n * G, Kd, L),
               trans_a=True)
    return grad_columns


def conv_gemm_grad_weight(grad_out, columns, grad_weight):
    """grad_weight[g] += sum over n of grad_out[n, g] @ columns[n, g].T, image by image."""
    for i in range(grad_out.shape[0]):
        _gemm.gemm(grad_out[i], columns[i], grad_weight, trans_b=True, accumulate=True)


def add_bias(out, bias):
    launch(_gemm.add_bias, out.size, out, bias)


def bias_grad(grad_out):
    grad_bias = cuda.device_array((grad_out.shape[1],), grad_out.dtype)
    launch(_gemm.bias_grad, grad_out.shape[1], grad_out, grad_bias)
    return grad_bias
