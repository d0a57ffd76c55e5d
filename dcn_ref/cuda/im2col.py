"""Plain im2col and col2im for conv2d as CUDA kernels. Layouts as in
``dcn_ref.ops.im2col``: x (N, C, H, W), columns (N, C, K, L) (the textbook layout),
and a ``ConvGeometry`` (dcn_ref/geometry.py)."""
from numba import cuda

from ..sampling import grid_point
from .launch import unravel


@cuda.jit
def im2col(x, geometry, columns):
    """Thread (n, c, k, l) copies one input pixel (or a zero of the padding)."""
    N, C, H, W = x.shape
    K = geometry.kernel_h * geometry.kernel_w
    L = geometry.out_h * geometry.out_w
    idx = cuda.grid(1)
    if idx >= N * C * K * L:
        return
    n, c, k, l = unravel(idx, C, K, L)
    y, x_ = grid_point(k, l, geometry)
    columns[n, c, k, l] = x[n, c, y, x_] if 0 <= y < H and 0 <= x_ < W else 0.0


@cuda.jit
def col2im_atomic(columns, geometry, grad_x):
    """Thread (n, c, k, l) adds its column entry to the pixel it was copied from."""
    N, C, H, W = grad_x.shape
    K = geometry.kernel_h * geometry.kernel_w
    L = geometry.out_h * geometry.out_w
    idx = cuda.grid(1)
    if idx >= N * C * K * L:
        return
    n, c, k, l = unravel(idx, C, K, L)
    y, x_ = grid_point(k, l, geometry)
    if 0 <= y < H and 0 <= x_ < W:
        cuda.atomic.add(grad_x, (n, c, y, x_), columns[n, c, k, l])


@cuda.jit
def col2im_gather(columns, geometry, grad_x):
    """Thread (n, c, y, x) sums, in tap order, the column entries copied from its pixel.

    Tap (i, j) of output pixel (oy, ox) read (y, x) when y = oy*stride_h - pad_h +
    i*dilation_h, i.e. when y + pad_h - i*dilation_h is a multiple of stride_h in range.
    """
    N, C, H, W = grad_x.shape
    kh, kw, out_h, out_w = geometry.kernel_h, geometry.kernel_w, geometry.out_h, geometry.out_w
    stride_h, stride_w = geometry.stride_h, geometry.stride_w
    pad_h, pad_w = geometry.pad_h, geometry.pad_w
    dilation_h, dilation_w = geometry.dilation_h, geometry.dilation_w
    idx = cuda.grid(1)
    if idx >= N * C * H * W:
        return
    n, c, y, x_ = unravel(idx, C, H, W)
    total = 0.0
    for i in range(kh):
        ty = y + pad_h - i * dilation_h
        if ty < 0 or ty % stride_h != 0 or ty // stride_h >= out_h:
            continue
        for j in range(kw):
            tx = x_ + pad_w - j * dilation_w
            if tx < 0 or tx % stride_w != 0 or tx // stride_w >= out_w:
                continue
            total += columns[n, c, i * kw + j, (ty // stride_h) * out_w + tx // stride_w]
    grad_x[n, c, y, x_] += total
