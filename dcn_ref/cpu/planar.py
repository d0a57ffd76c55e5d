"""The sampling engine on image planes, for the CPU: ``bilinear_sample`` and ``offset_sample``.

The engine and its layouts are described in ``dcn_ref/sampling.py``: image (Q, Cq, H, W),
offset (Q, K, 2, L), mask (Q, K, L), columns (Q, Cq, K, L). The ops that use it here have
one channel per set of sample points (Cq = 1), so every sample is located once and read
once; the convolutions, whose many channels share each sample, use the channels-last
kernels of ``columns.py`` instead. The per-sample maths is ``dcn_ref.sampling``, the same
functions the CUDA kernels call.
"""
from numba import prange

from ..sampling import bilinear_value, corner, tap_cell, tap_coord_grad
from .compile import kernel


@kernel
def deform_im2col(image, offset, mask, use_mask, mode, grid, columns):
    """columns[q, c, k, l] = mask[q, k, l] * bilinear(image[q, c], sample point of (q, k, l))."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for qk in prange(Q * K):  # each iteration writes only columns[q, :, k, :]
        q = qk // K
        k = qk % K
        for l in range(L):
            inside, y0, x0, ly, lx, _, _ = tap_cell(offset, q, k, l, H, W, mode, grid)
            m = mask[q, k, l] if use_mask else 1.0
            for c in range(Cq):
                v = bilinear_value(image, q, c, y0, x0, ly, lx) if inside else 0.0
                columns[q, c, k, l] = m * v


@kernel
def deform_col2im(grad_columns, offset, mask, use_mask, mode, grid, grad_image):
    """grad_image (Q, Cq, H, W) += the adjoint of deform_im2col: each sample hands its
    gradient to the four pixels it read, with the same weights."""
    Q, Cq, H, W = grad_image.shape
    K, L = offset.shape[1], offset.shape[3]
    for plane in prange(Q * Cq):  # plane (q, c) of grad_image receives only from columns[q, c]
        q = plane // Cq
        c = plane % Cq
        for k in range(K):
            for l in range(L):
                inside, y0, x0, ly, lx, _, _ = tap_cell(offset, q, k, l, H, W, mode, grid)
                if not inside:
                    continue
                g = grad_columns[q, c, k, l]
                if use_mask:
                    g *= mask[q, k, l]
                for t in range(4):
                    r, s, w, _, _ = corner(t, y0, x0, ly, lx)
                    if 0 <= r < H and 0 <= s < W:
                        grad_image[q, c, r, s] += w * g


@kernel
def deform_coord_grad(grad_columns, image, offset, mask, use_mask, mode, grid, grad_offset,
                      grad_mask):
    """Write grad_offset (Q, K, 2, L) and, with use_mask, grad_mask (Q, K, L)."""
    Q = image.shape[0]
    K, L = offset.shape[1], offset.shape[3]
    for qk in prange(Q * K):  # each iteration writes only grad_offset[q, k] and grad_mask[q, k]
        q = qk // K
        k = qk % K
        for l in range(L):
            gy, gx, gm = tap_coord_grad(grad_columns, image, offset, mask, use_mask, mode, grid,
                                        q, k, l)
            grad_offset[q, k, 0, l] = gy
            grad_offset[q, k, 1, l] = gx
            if use_mask:
                grad_mask[q, k, l] = gm
