"""The sampling engine on image planes, for the CPU: ``bilinear_sample`` and ``offset_sample``.

The engine and its layouts are described in ``dcn_ref/sampling.py``: image (Q, Cq, H, W),
offset (Q, K, 2, L), mask (Q, K, L), columns (Q, Cq, K, L). The ops that use it here have
one channel per set of sample points (Cq = 1), so every sample is located once and read
once; the convolutions, whose many channels share each sample, use the channels-last
kernels of ``columns.py`` instead. The per-sample maths is ``dcn_ref.sampling``, the same
functions the CUDA kernels call.
"""
from numba import prange

from ..sampling import SamplePoints, bilinear_value, corner, tap_cell, tap_grads, write_tap_grads
from .compile import kernel


@kernel
def deform_im2col(image, offset, mask, use_mask, mode, geometry, columns):
    """columns[q, c, k, l] = mask[q, k, l] * bilinear(image[q, c], sample point of (q, k, l))."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for qk in prange(Q * K):  # each iteration writes only columns[q, :, k, :]
        points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
        q = qk // K
        k = qk % K
        for l in range(L):
            cell = tap_cell(points, q, k, l)
            for c in range(Cq):
                v = bilinear_value(image, q, c, cell) if cell.inside else 0.0
                columns[q, c, k, l] = cell.m * v


@kernel
def deform_backward(grad_columns, image, offset, mask, use_mask, mode, geometry, grad_image,
                    grad_offset, grad_mask):
    """Both adjoints in one pass: grad_image (Q, Cq, H, W) += each sample's gradient handed
    to the four pixels it read; grad_offset (Q, K, 2, L) and, with a mask, grad_mask
    (Q, K, L) written. Plane q's gradients come only from plane q's samples, so the planes
    are independent and every sample is located once."""
    Q, Cq, H, W = image.shape
    K, L = offset.shape[1], offset.shape[3]
    for q in prange(Q):  # each iteration writes only grad_image[q], grad_offset[q], grad_mask[q]
        points = SamplePoints(offset, mask, use_mask, mode, geometry, H, W, 0.0)
        for k in range(K):
            for l in range(L):
                cell = tap_cell(points, q, k, l)
                m = cell.m
                d0 = d1 = d2 = d3 = 0.0      # the corner sums D_t of sampling.tap_grads
                if cell.inside:
                    # a loop over the corners with a branch per sum: LLVM unrolls it into
                    # straight code; four calls of a helper returning each corner's pixel
                    # ran this backward 1.3x slower (offset_sample, bench shapes a and d)
                    for c in range(Cq):
                        g = grad_columns[q, c, k, l]
                        for t in range(4):
                            r, s, w, _, _ = corner(t, cell)
                            if 0 <= r < H and 0 <= s < W:
                                pixel = image[q, c, r, s]
                                grad_image[q, c, r, s] += w * m * g
                                if t == 0:
                                    d0 += g * pixel
                                elif t == 1:
                                    d1 += g * pixel
                                elif t == 2:
                                    d2 += g * pixel
                                else:
                                    d3 += g * pixel
                write_tap_grads(grad_offset, grad_mask, use_mask, q, k, l,
                                tap_grads(cell, d0, d1, d2, d3))
