"""Deformable im2col and its two adjoints, compiled for the CPU (Numba, parallel).

The engine, its layouts and how the ops map onto it are described in
``dcn_ref/sampling.py``, which also holds the per-element maths shared with the CUDA
kernels. Here: which loop runs in parallel, and why its writes cannot collide.
"""
import numba
from numba import prange

from ..sampling import column_value, corner, tap_cell, tap_coord_grad

# cache=True keeps the compiled kernels across processes (tests, tutorials and the CLI
# start many). Numba re-validates a cache entry against this file only, so after editing
# dcn_ref/sampling.py delete the *.nbi/*.nbc files under __pycache__ when developing.
_kernel = numba.njit(parallel=True, cache=True)


@_kernel
def deform_im2col(image, offset, mask, use_mask, mode, grid, columns):
    """Fill ``columns`` (Q, Cq, K, L) with the (masked) bilinear samples of ``image``."""
    Q, Cq = image.shape[:2]
    K, L = offset.shape[1], offset.shape[3]
    for row in prange(Q * Cq * K):  # each iteration writes its own row columns[q, c, k, :]
        q = row // (Cq * K)
        c = (row // K) % Cq
        k = row % K
        for l in range(L):
            columns[q, c, k, l] = column_value(image, offset, mask, use_mask, mode, grid, q, c, k, l)


@_kernel
def deform_col2im(grad_columns, offset, mask, use_mask, mode, grid, grad_image):
    """Add the adjoint of ``deform_im2col`` to ``grad_image`` (Q, Cq, H, W).

    Each sample hands its gradient to the four corners it read, with the same weights.
    """
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
                for corner_k in range(4):
                    r, s, w, _, _ = corner(corner_k, y0, x0, ly, lx)
                    if 0 <= r < H and 0 <= s < W:
                        grad_image[q, c, r, s] += w * g


@_kernel
def deform_coord_grad(grad_columns, image, offset, mask, use_mask, mode, grid,
                      grad_offset, grad_mask):
    """Write the gradients of the offsets (Q, K, 2, L) and of the mask (Q, K, L)."""
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
