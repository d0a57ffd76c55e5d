"""The sampling engine of dcn_ref/sampling.py on the GPU: launching its kernels.

Outputs are allocated by the caller; deform_col2im adds into its output, scattering with
atomics, or, with ``deterministic``, gathering in a fixed order (deterministic.py). The
kernels compute in the data's dtype (``real_of``).
"""
from ..kernel_args import or_stand_in, real_of
from . import deform as _deform
from . import deterministic as _deterministic
from .launch import launch
from .memory import empty, zeros


def deform_im2col(image, offset, mask, mode, geometry, columns):
    """columns (Q, Cq, K, L) = samples of image (Q, Cq, H, W) at offset (Q, K, 2, L)."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, empty)
    launch(_deform.deform_im2col, columns.size, image, offset, mask, use_mask, mode, geometry,
           real_of(image), columns)


def buckets(offset, mask, use_mask, mode, geometry, height, width, real=None):
    """(cell_start, cell_count, order): every plane's samples sorted by the cell they fall
    in (deterministic.py), for the gathers of the deterministic image gradients; the cells
    located in ``real``'s type (the offsets' dtype by default), which must be the gather's."""
    Q = offset.shape[0]
    n_samples = offset.shape[1] * offset.shape[3]
    n_cells = (height + 1) * (width + 1)
    index = _deterministic.index_dtype(n_samples, n_cells)
    cell_of = empty((Q, n_samples), index)
    cell_count = zeros((Q, n_cells), index)
    launch(_deterministic.sample_cells, Q * n_samples, offset, mask, use_mask, mode, geometry,
           height, width, real_of(offset) if real is None else real, cell_of, cell_count)
    return _deterministic.sort_by_cell(cell_of, cell_count)


def deform_col2im(grad_columns, offset, mask, mode, geometry, grad_image, deterministic=False):
    """grad_image (Q, Cq, H, W) += the adjoint of deform_im2col applied to grad_columns."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), grad_columns, empty)
    real = real_of(grad_columns)
    if not deterministic:
        launch(_deform.deform_col2im_atomic, grad_columns.size, grad_columns, offset, mask,
               use_mask, mode, geometry, real, grad_image)
        return
    cell_start, cell_count, order = buckets(offset, mask, use_mask, mode, geometry,
                                            grad_image.shape[2], grad_image.shape[3])
    launch(_deterministic.gather_image_grad, grad_image.size, grad_columns, offset, mask,
           use_mask, mode, geometry, real, cell_start, cell_count, order, grad_image)


def deform_coord_grad(grad_columns, image, offset, mask, mode, geometry, grad_offset, grad_mask):
    """Write grad_offset (Q, K, 2, L) and, when there is a mask, grad_mask (Q, K, L)."""
    mask, use_mask = or_stand_in(mask, (1, 1, 1), image, empty)
    grad_mask, _ = or_stand_in(grad_mask, (1, 1, 1), image, empty)
    launch(_deform.deform_coord_grad, offset.shape[0] * offset.shape[1] * offset.shape[3],
           grad_columns, image, offset, mask, use_mask, mode, geometry, real_of(image),
           grad_offset, grad_mask)


def sample_backward(grad_columns, image, offset, mask, mode, geometry, grad_image, grad_offset,
                    grad_mask, deterministic=False):
    """Both adjoints of deform_im2col: grad_image += the image gradient; grad_offset and,
    when there is a mask, grad_mask written."""
    deform_col2im(grad_columns, offset, mask, mode, geometry, grad_image, deterministic)
    deform_coord_grad(grad_columns, image, offset, mask, mode, geometry, grad_offset, grad_mask)
