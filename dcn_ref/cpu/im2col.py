"""Plain im2col and col2im for conv2d, compiled for the CPU (Numba, parallel).

    x        (N, C, H, W)
    columns  (N, C, K, L)   K = kh*kw taps, L = out_h*out_w output pixels;
                            columns[n, c, i*kw + j, oy*out_w + ox] = x[n, c, y, x] with
                            y = oy*stride_h - pad_h + i*dilation_h (x likewise), 0 outside.
    grid     (kh, kw, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)

Viewed as (N, C*K, L), ``columns`` turns the convolution into one matrix product per
image: out[n] = weight.reshape(C_out, C*K) @ columns[n].
"""
import numba
from numba import prange

_kernel = numba.njit(parallel=True, cache=True)


@_kernel
def im2col(x, grid, columns):
    """Fill ``columns`` (N, C, K, L) with the zero-padded patches of ``x``."""
    N, C, H, W = x.shape
    kh, kw, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w = grid
    K = kh * kw
    for row in prange(N * C * K):  # each iteration writes its own row columns[n, c, k, :]
        n = row // (C * K)
        c = (row // K) % C
        k = row % K
        i = k // kw
        j = k % kw
        for oy in range(out_h):
            y = oy * stride_h - pad_h + i * dilation_h
            for ox in range(out_w):
                x_ = ox * stride_w - pad_w + j * dilation_w
                inside = 0 <= y < H and 0 <= x_ < W
                columns[n, c, k, oy * out_w + ox] = x[n, c, y, x_] if inside else 0.0


@_kernel
def col2im(columns, grid, grad_x):
    """Add the adjoint of ``im2col`` to ``grad_x`` (N, C, H, W)."""
    N, C, H, W = grad_x.shape
    kh, kw, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w = grid
    for plane in prange(N * C):  # plane (n, c) of grad_x receives only from columns[n, c]
        n = plane // C
        c = plane % C
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                for oy in range(out_h):
                    y = oy * stride_h - pad_h + i * dilation_h
                    if not 0 <= y < H:
                        continue
                    for ox in range(out_w):
                        x_ = ox * stride_w - pad_w + j * dilation_w
                        if 0 <= x_ < W:
                            grad_x[n, c, y, x_] += columns[n, c, k, oy * out_w + ox]
