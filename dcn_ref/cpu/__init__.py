"""The CPU target: Numba kernels and NumPy/BLAS matrix products.

Every target module (this one and ``dcn_ref.cuda``) offers the same functions, so the
ops in ``dcn_ref.ops`` are written once. Arrays are C-contiguous NumPy arrays here.
On the CPU every result is deterministic, so ``deterministic`` is accepted and ignored.
"""
import numpy as np

from . import deform as _deform
from . import im2col as _im2col

name = "cpu"


# -- memory ---------------------------------------------------------------------------

def to_target(x):
    """A C-contiguous array of the target (the same array when it already is one)."""
    return np.ascontiguousarray(x)


def to_host(x):
    return x


def empty(shape, dtype):
    return np.empty(shape, dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype)


def _mask_or_dummy(mask, like):
    """Numba kernels need an array in every argument: a 1x1x1 stand-in when there is no mask."""
    return (mask, True) if mask is not None else (np.zeros((1, 1, 1), like.dtype), False)


# -- deformable sampling (the engine of dcn_ref/sampling.py, kernels in cpu/deform.py) --
# Outputs are allocated by the caller; the *col2im functions add into theirs.

def _plan(offset, mode, grid, height, width, dtype):
    """Every tap's four corners: flat pixel index (-1: padding), weight, d weight/d (dy, dx)."""
    Q, K, _, L = offset.shape
    index = np.empty((Q, K, L, 4), np.intp)
    weight, weight_dy, weight_dx = (np.empty((Q, K, L, 4), dtype) for _ in range(3))
    _deform.plan_taps(offset, mode, tuple(grid), height, width, index, weight, weight_dy,
                      weight_dx)
    return index, weight, weight_dy, weight_dx


def _flat(image):
    """(Q, Cq, H, W) -> (Q, Cq, H*W), a view."""
    return image.reshape(image.shape[0], image.shape[1], image.shape[2] * image.shape[3])


def deform_im2col(image, offset, mask, mode, grid, columns):
    """columns (Q, Cq, K, L) = samples of image (Q, Cq, H, W) at offset (Q, K, 2, L)."""
    index, weight, _, _ = _plan(offset, mode, grid, image.shape[2], image.shape[3], image.dtype)
    mask, use_mask = _mask_or_dummy(mask, image)
    _deform.deform_im2col(_flat(image), mask, use_mask, index, weight, columns)


def deform_col2im(grad_columns, offset, mask, mode, grid, grad_image, deterministic=False):
    """grad_image (Q, Cq, H, W) += the adjoint of deform_im2col applied to grad_columns."""
    index, weight, _, _ = _plan(offset, mode, grid, grad_image.shape[2], grad_image.shape[3],
                                grad_image.dtype)
    mask, use_mask = _mask_or_dummy(mask, grad_columns)
    _deform.deform_col2im(grad_columns, mask, use_mask, index, weight, _flat(grad_image))


def deform_coord_grad(grad_columns, image, offset, mask, mode, grid, grad_offset, grad_mask):
    """Write grad_offset (Q, K, 2, L) and, when there is a mask, grad_mask (Q, K, L)."""
    index, weight, weight_dy, weight_dx = _plan(offset, mode, grid, image.shape[2],
                                                image.shape[3], image.dtype)
    mask, use_mask = _mask_or_dummy(mask, image)
    if grad_mask is None:
        grad_mask = np.empty((1, 1, 1), image.dtype)
    _deform.deform_coord_grad(grad_columns, _flat(image), mask, use_mask, index, weight,
                              weight_dy, weight_dx, grad_offset, grad_mask)


# -- plain convolution columns (layouts in dcn_ref/cpu/im2col.py) ----------------------

def im2col(x, grid, columns):
    """columns (N, C, K, L) = zero-padded patches of x (N, C, H, W)."""
    _im2col.im2col(x, tuple(grid), columns)


def col2im(columns, grid, grad_x, deterministic=False):
    """grad_x (N, C, H, W) += the adjoint of im2col applied to columns."""
    _im2col.col2im(columns, tuple(grid), grad_x)


# -- the matrix products of a grouped convolution --------------------------------------
# weight (G, M, Kd), columns (n, G, Kd, L), out (n, G, M, L): G conv groups,
# M = C_out/G output channels and Kd = C_in/G*kh*kw column rows per group.

def conv_gemm(weight, columns, out):
    """out[n, g] = weight[g] @ columns[n, g]."""
    np.matmul(weight, columns, out=out)


def conv_gemm_grad_columns(weight, grad_out):
    """grad_columns[n, g] = weight[g].T @ grad_out[n, g]."""
    return np.matmul(weight.transpose(0, 2, 1), grad_out)


def conv_gemm_grad_weight(grad_out, columns, grad_weight):
    """grad_weight[g] += sum over n of grad_out[n, g] @ columns[n, g].T."""
    for n in range(grad_out.shape[0]):
        grad_weight += np.matmul(grad_out[n], columns[n].transpose(0, 2, 1))


def add_bias(out, bias):
    """out (N, C_out, L) += bias[c] in place."""
    out += bias[None, :, None]


def bias_grad(grad_out):
    """Sum of grad_out (N, C_out, L) over images and pixels: (C_out,)."""
    return grad_out.sum(axis=(0, 2))
