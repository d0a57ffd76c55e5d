"""Deformable im2col and its two adjoints, compiled for the CPU (Numba, parallel).

The engine, its layouts and how the ops map onto it are described in
``dcn_ref/sampling.py``, which also holds the per-sample maths shared with the CUDA
kernels. The CPU version works in two steps:

1. ``plan_taps`` locates every tap's sample point once (``sampling.tap_cell``) and
   stores its four corners: the pixel's flat index in the H*W plane (-1 for a corner
   that is padding), its weight and the weight's derivatives with respect to dy and dx
   (``sampling.corner``, times the clamp's derivative). All Cq channels of an offset
   group share this plan, so the interpolation maths runs once a tap, not once a channel.
2. The passes below walk channel by channel and pixel by pixel over the plan, reading
   and writing memory in order.

Shapes: image (Q, Cq, H*W) (a plane flattened), plan arrays (Q, K, L, 4),
columns (Q, Cq, K, L), mask (Q, K, L).
"""
import numba
import numpy as np
from numba import prange

from ..sampling import corner, tap_cell

# cache=True keeps the compiled kernels across processes (tests, tutorials and the CLI
# start many). Numba re-validates a cache entry against this file only, so after editing
# dcn_ref/sampling.py delete the *.nbi/*.nbc files under __pycache__ when developing.
_kernel = numba.njit(parallel=True, cache=True)


@_kernel
def plan_taps(offset, mode, grid, height, width, index, weight, weight_dy, weight_dx):
    """Fill the plan (Q, K, L, 4) of every tap: corner index, weight and its derivatives."""
    Q, K, _, L = offset.shape
    for qk in prange(Q * K):  # each iteration writes only the plan of taps (q, k, :)
        q = qk // K
        k = qk % K
        for l in range(L):
            inside, y0, x0, ly, lx, jy, jx = tap_cell(offset, q, k, l, height, width, mode, grid)
            for t in range(4):
                r, s, w, w_ly, w_lx = corner(t, y0, x0, ly, lx)
                if inside and 0 <= r < height and 0 <= s < width:
                    index[q, k, l, t] = r * width + s
                    weight[q, k, l, t] = w
                    weight_dy[q, k, l, t] = jy * w_ly
                    weight_dx[q, k, l, t] = jx * w_lx
                else:
                    index[q, k, l, t] = -1
                    weight[q, k, l, t] = 0.0
                    weight_dy[q, k, l, t] = 0.0
                    weight_dx[q, k, l, t] = 0.0


@_kernel
def deform_im2col(image, mask, use_mask, index, weight, columns):
    """columns[q, c, k, l] = mask[q, k, l] * sum_t weight[q, k, l, t] * image[q, c, index[q, k, l, t]]."""
    Q, Cq = image.shape[:2]
    K, L = index.shape[1], index.shape[2]
    for qk in prange(Q * K):  # each iteration writes only columns[q, :, k, :]
        q = qk // K
        k = qk % K
        for c in range(Cq):
            for l in range(L):
                v = 0.0
                for t in range(4):
                    i = index[q, k, l, t]
                    if i >= 0:
                        v += weight[q, k, l, t] * image[q, c, i]
                if use_mask:
                    v *= mask[q, k, l]
                columns[q, c, k, l] = v


@_kernel
def deform_col2im(grad_columns, mask, use_mask, index, weight, grad_image):
    """grad_image[q, c, index] += weight * mask * grad_columns[q, c, k, l]: the adjoint of
    deform_im2col, each sample handing its gradient to the four corners it read."""
    Q, Cq = grad_image.shape[:2]
    K, L = index.shape[1], index.shape[2]
    for plane in prange(Q * Cq):  # plane (q, c) of grad_image receives only from columns[q, c]
        q = plane // Cq
        c = plane % Cq
        for k in range(K):
            for l in range(L):
                g = grad_columns[q, c, k, l]
                if use_mask:
                    g *= mask[q, k, l]
                for t in range(4):
                    i = index[q, k, l, t]
                    if i >= 0:
                        grad_image[q, c, i] += weight[q, k, l, t] * g


@_kernel
def deform_coord_grad(grad_columns, image, mask, use_mask, index, weight, weight_dy, weight_dx,
                      grad_offset, grad_mask):
    """Gradients of the offsets (Q, K, 2, L) and of the mask (Q, K, L).

    d columns[q, c, k, l] / d dy = mask * sum_t weight_dy[t] * pixel_t, summed over the Cq
    channels that share the sample point; d columns / d mask = the unmasked sample.
    """
    Q, Cq = image.shape[:2]
    K, L = index.shape[1], index.shape[2]
    for qk in prange(Q * K):  # each iteration writes only grad_offset[q, k] and grad_mask[q, k]
        q = qk // K
        k = qk % K
        sum_y = np.zeros(L)
        sum_x = np.zeros(L)
        sum_v = np.zeros(L)
        for c in range(Cq):
            for l in range(L):
                g = grad_columns[q, c, k, l]
                d_y = 0.0
                d_x = 0.0
                v = 0.0
                for t in range(4):
                    i = index[q, k, l, t]
                    if i >= 0:
                        pixel = image[q, c, i]
                        d_y += weight_dy[q, k, l, t] * pixel
                        d_x += weight_dx[q, k, l, t] * pixel
                        v += weight[q, k, l, t] * pixel
                sum_y[l] += g * d_y
                sum_x[l] += g * d_x
                sum_v[l] += g * v
        for l in range(L):
            m = mask[q, k, l] if use_mask else 1.0
            grad_offset[q, k, 0, l] = m * sum_y[l]
            grad_offset[q, k, 1, l] = m * sum_x[l]
            if use_mask:
                grad_mask[q, k, l] = sum_v[l]
