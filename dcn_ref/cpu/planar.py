"""The sampling engine on image planes, for the CPU: ``bilinear_sample`` and ``offset_sample``.

The engine and its layouts are described in ``dcn_ref/sampling.py``: image (Q, Cq, H, W),
offset (Q, K, 2, L), mask (Q, K, L), columns (Q, Cq, K, L). The ops that use it here have
one channel per set of sample points (Cq = 1), so every sample is located once and read
once; the convolutions, whose many channels share each sample, use the channels-last
kernels of ``columns.py`` instead. The per-sample maths is ``dcn_ref.sampling``, the same
functions the CUDA kernels call.
"""
from numba import prange

from ..sampling import bilinear_value, corner, masked_tap_cell
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
            inside, y0, x0, ly, lx, _, _, m = masked_tap_cell(offset, mask, use_mask, q, k, l,
                                                              H, W, mode, grid)
            for c in range(Cq):
                v = bilinear_value(image, q, c, y0, x0, ly, lx) if inside else 0.0
                columns[q, c, k, l] = m * v


@kernel
def deform_backward(grad_columns, image, offset, mask, use_mask, mode, grid, grad_image,
                    grad_offset, grad_mask):
    """Both adjoints in one pass: grad_image (Q, Cq, H, W) += each sample's gradient handed
    to the four pixels it read; grad_offset (Q, K, 2, L) and, with use_mask, grad_mask
    (Q, K, L) written. Plane q's gradients come only from plane q's samples, so the planes
    are independent and every sample is located once."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for q in prange(Q):  # each iteration writes only grad_image[q], grad_offset[q], grad_mask[q]
        for k in range(K):
            for l in range(L):
                inside, y0, x0, ly, lx, jy, jx, m = masked_tap_cell(offset, mask, use_mask, q, k,
                                                                    l, H, W, mode, grid)
                sum_y = 0.0
                sum_x = 0.0
                sum_v = 0.0
                if inside:
                    for c in range(Cq):
                        g = grad_columns[q, c, k, l]
                        for t in range(4):
                            r, s, w, w_ly, w_lx = corner(t, y0, x0, ly, lx)
                            if 0 <= r < H and 0 <= s < W:
                                pixel = image[q, c, r, s]
                                grad_image[q, c, r, s] += w * m * g
                                sum_y += g * w_ly * pixel
                                sum_x += g * w_lx * pixel
                                sum_v += g * w * pixel
                grad_offset[q, k, 0, l] = m * jy * sum_y
                grad_offset[q, k, 1, l] = m * jx * sum_x
                if use_mask:
                    grad_mask[q, k, l] = sum_v
