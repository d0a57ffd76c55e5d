"""Deformable im2col and its two adjoints, compiled for the CPU (Numba, parallel).

One engine serves every sampling op. It reads ``Q`` sampling planes; the ``Cq`` channels
of a plane share one set of sample points (an offset group); tap ``k`` of output pixel
``l`` samples at ``grid_point(k, l) + offset[q, k, :, l]``.

    image    (Q, Cq, H, W)
    offset   (Q, K, 2, L)     offset[q, k, 0, l] = dy, offset[q, k, 1, l] = dx
    mask     (Q, K, L)        multiplies each sample (DCNv2); read only when use_mask
    columns  (Q, Cq, K, L)    columns[q, c, k, l] = mask[q, k, l] * bilinear(image[q, c], y, x)
    grid     (kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w), ints

How the ops map onto it (``dcn_ref.ops`` does the reshapes, all of them views):
    deform_conv2d    Q = N*G offset groups, Cq = C/G, K = kh*kw, L = H_out*W_out;
                     columns viewed as (N, C*K, L) is the im2col matrix of the GEMM.
    offset_sample    Q = N*C, Cq = 1, K = 1, L = H*W, a 1x1 "kernel" with stride 1.
    bilinear_sample  Q = B, Cq = 1, K = P, L = 1: each point is a tap of a grid
                     collapsed onto the origin (stride = dilation = 0), so its offset is
                     the coordinate itself.

The per-sample maths is ``dcn_ref.sampling``, shared with the CUDA kernels.
"""
import numba
from numba import prange

from ..sampling import bilinear_value, bilinear_value_and_grad, corner, grid_point, locate

# cache=True keeps the compiled kernels across processes (tests, tutorials and the CLI
# start many). Numba re-validates a cache entry against this file only, so after editing
# dcn_ref/sampling.py delete the *.nbi/*.nbc files under __pycache__ when developing.
_kernel = numba.njit(parallel=True, cache=True)


@_kernel
def deform_im2col(image, offset, mask, use_mask, mode, grid, columns):
    """Fill ``columns`` (Q, Cq, K, L) with the (masked) bilinear samples of ``image``."""
    Q, Cq, H, W = image.shape
    K = offset.shape[1]
    L = offset.shape[3]
    kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w = grid
    for row in prange(Q * Cq * K):  # each iteration writes its own row columns[q, c, k, :]
        q = row // (Cq * K)
        c = (row // K) % Cq
        k = row % K
        for l in range(L):
            base_y, base_x = grid_point(k, l, kw, out_w, stride_h, stride_w,
                                        pad_h, pad_w, dilation_h, dilation_w)
            y = base_y + offset[q, k, 0, l]
            x = base_x + offset[q, k, 1, l]
            inside, y0, x0, ly, lx, _, _ = locate(y, x, H, W, mode)
            v = bilinear_value(image, q, c, y0, x0, ly, lx) if inside else 0.0
            if use_mask:
                v *= mask[q, k, l]
            columns[q, c, k, l] = v


@_kernel
def deform_col2im(grad_columns, offset, mask, use_mask, mode, grid, grad_image):
    """Add the adjoint of ``deform_im2col`` to ``grad_image`` (Q, Cq, H, W).

    Each sample hands its gradient to the four corners it read, with the same weights.
    """
    Q, Cq, H, W = grad_image.shape
    K = offset.shape[1]
    L = offset.shape[3]
    kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w = grid
    for plane in prange(Q * Cq):  # plane (q, c) of grad_image receives only from columns[q, c]
        q = plane // Cq
        c = plane % Cq
        for k in range(K):
            for l in range(L):
                g = grad_columns[q, c, k, l]
                if use_mask:
                    g *= mask[q, k, l]
                base_y, base_x = grid_point(k, l, kw, out_w, stride_h, stride_w,
                                            pad_h, pad_w, dilation_h, dilation_w)
                y = base_y + offset[q, k, 0, l]
                x = base_x + offset[q, k, 1, l]
                inside, y0, x0, ly, lx, _, _ = locate(y, x, H, W, mode)
                if not inside:
                    continue
                for corner_k in range(4):
                    r, s, w, _, _ = corner(corner_k, y0, x0, ly, lx)
                    if 0 <= r < H and 0 <= s < W:
                        grad_image[q, c, r, s] += w * g


@_kernel
def deform_coord_grad(grad_columns, image, offset, mask, use_mask, mode, grid,
                      grad_offset, grad_mask):
    """Write the gradients with respect to the offsets (Q, K, 2, L) and the mask (Q, K, L).

    d columns[q, c, k, l] / d dy = mask * jy * dv/dly, summed over the Cq channels that
    share the sample point; d columns / d mask = the unmasked sample.
    """
    Q, Cq, H, W = image.shape
    K = offset.shape[1]
    L = offset.shape[3]
    kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w = grid
    for qk in prange(Q * K):  # each iteration writes only grad_offset[q, k] and grad_mask[q, k]
        q = qk // K
        k = qk % K
        for l in range(L):
            base_y, base_x = grid_point(k, l, kw, out_w, stride_h, stride_w,
                                        pad_h, pad_w, dilation_h, dilation_w)
            y = base_y + offset[q, k, 0, l]
            x = base_x + offset[q, k, 1, l]
            inside, y0, x0, ly, lx, jy, jx = locate(y, x, H, W, mode)
            sum_y = 0.0
            sum_x = 0.0
            sum_v = 0.0
            if inside:
                for c in range(Cq):
                    g = grad_columns[q, c, k, l]
                    v, v_y, v_x = bilinear_value_and_grad(image, q, c, y0, x0, ly, lx)
                    sum_y += g * v_y
                    sum_x += g * v_x
                    sum_v += g * v
            m = mask[q, k, l] if use_mask else 1.0
            grad_offset[q, k, 0, l] = m * jy * sum_y
            grad_offset[q, k, 1, l] = m * jx * sum_x
            if use_mask:
                grad_mask[q, k, l] = sum_v
