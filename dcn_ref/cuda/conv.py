"""conv2d and deform_conv2d on the GPU: planar columns and the tiled GEMM.

With columns (n, C_in, K, L) from im2col (plain, or the deformable engine) and the weight
viewed as (groups, M, Kd), M = C_out/groups, Kd = C_in/groups*K:

    out[n, g]          = weight[g] @ columns[n, g]                 (+ bias)
    grad_columns[n, g] = weight[g].T @ grad_out[n, g]
    grad_weight[g]     = sum_n grad_out[n, g] @ columns[n, g].T
    grad_bias          = grad_out summed over images and pixels

The batch is processed in chunks so that the columns stay within COLUMN_BUDGET_BYTES.
"""
from ..sampling import ZEROS
from . import engine
from . import gemm as _gemm
from . import im2col as _im2col
from .launch import launch
from .memory import empty, zeros

COLUMN_BUDGET_BYTES = 256 * 2**20


def _chunks(n_images, bytes_per_image):
    step = max(1, COLUMN_BUDGET_BYTES // max(1, bytes_per_image))
    return [(n0, min(n0 + step, n_images)) for n0 in range(0, n_images, step)]


def _forward(make_columns, weight, bias, n_images, c_in, K, L, groups):
    c_out = weight.shape[0]
    m, kd = c_out // groups, c_in // groups * K
    weight_g = weight.reshape(groups, m, kd)
    out = empty((n_images, c_out, L), weight.dtype)
    for n0, n1 in _chunks(n_images, c_in * K * L * weight.dtype.itemsize):
        n = n1 - n0
        columns = empty((n, c_in, K, L), weight.dtype)
        make_columns(n0, n1, columns)
        _gemm.gemm(weight_g, columns.reshape(n * groups, kd, L), out[n0:n1].reshape(n * groups, m, L))
    if bias is not None:
        launch(_gemm.add_bias, out.size, out, bias)
    return out


def _backward(make_columns, scatter_columns, grad_out, weight, has_bias, c_in, K, groups):
    n_images, c_out, L = grad_out.shape
    m, kd = c_out // groups, c_in // groups * K
    weight_g = weight.reshape(groups, m, kd)
    grad_weight = zeros((groups, m, kd), weight.dtype)
    for n0, n1 in _chunks(n_images, 2 * c_in * K * L * weight.dtype.itemsize):
        n = n1 - n0
        columns = empty((n, c_in, K, L), weight.dtype)
        make_columns(n0, n1, columns)
        grad_out_g = grad_out[n0:n1].reshape(n, groups, m, L)
        cols_g = columns.reshape(n, groups, kd, L)
        for i in range(n):   # image by image, accumulating in a fixed order
            _gemm.gemm(grad_out_g[i], cols_g[i], grad_weight, trans_b=True, accumulate=True)
        grad_columns = empty((n, groups, kd, L), weight.dtype)
        _gemm.gemm(weight_g, grad_out_g.reshape(n * groups, m, L),
                   grad_columns.reshape(n * groups, kd, L), trans_a=True)
        scatter_columns(n0, n1, grad_columns.reshape(n, c_in, K, L))
    grad_bias = None
    if has_bias:
        grad_bias = empty((c_out,), weight.dtype)
        launch(_gemm.bias_grad, c_out, grad_out, grad_bias)
    return grad_weight.reshape(weight.shape), grad_bias


def im2col(x, grid):
    """columns (N, C, K, L) of the textbook layout."""
    columns = empty((x.shape[0], x.shape[1], grid[0] * grid[1], grid[2] * grid[3]), x.dtype)
    launch(_im2col.im2col, columns.size, x, tuple(grid), columns)
    return columns


def col2im(columns, grid, input_shape, deterministic=True):
    """(N, C, H, W): columns (N, C, K, L) added back to the pixels they came from."""
    out = zeros(input_shape, columns.dtype)
    launch(_im2col.col2im_gather, out.size, columns, tuple(grid), out)
    return out


def conv2d(x, weight, bias, groups, grid):
    """grid = (kh, kw, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)."""
    N, c_in = x.shape[:2]
    kh, kw, out_h, out_w = grid[:4]

    def make_columns(n0, n1, columns):
        launch(_im2col.im2col, columns.size, x[n0:n1], tuple(grid), columns)

    out = _forward(make_columns, weight, bias, N, c_in, kh * kw, out_h * out_w, groups)
    return out.reshape(N, weight.shape[0], out_h, out_w)


def conv2d_backward(grad_out, x, weight, has_bias, groups, grid, deterministic=False):
    """(grad_input, grad_weight, grad_bias or None)."""
    N, c_in = x.shape[:2]
    kh, kw, out_h, out_w = grid[:4]
    grad_input = zeros(x.shape, x.dtype)

    def make_columns(n0, n1, columns):
        launch(_im2col.im2col, columns.size, x[n0:n1], tuple(grid), columns)

    def scatter_columns(n0, n1, grad_columns):
        if deterministic:
            launch(_im2col.col2im_gather, grad_input[n0:n1].size, grad_columns, tuple(grid),
                   grad_input[n0:n1])
        else:
            launch(_im2col.col2im_atomic, grad_columns.size, grad_columns, tuple(grid),
                   grad_input[n0:n1])

    grad_weight, grad_bias = _backward(make_columns, scatter_columns,
                                       grad_out.reshape(N, weight.shape[0], out_h * out_w),
                                       weight, has_bias, c_in, kh * kw, groups)
    return grad_input, grad_weight, grad_bias


class _EngineViews:
    """The batch slice n0:n1 of an array as the sampling engine sees it (Q = n*G)."""

    def __init__(self, x, G, K, L):
        self.G, self.K, self.L = G, K, L
        self.cq, self.H, self.W = x.shape[1] // G, x.shape[2], x.shape[3]

    def image(self, a, n0, n1):       # (n, C, H, W) -> (n*G, Cq, H, W)
        return a[n0:n1].reshape((n1 - n0) * self.G, self.cq, self.H, self.W)

    def offsets(self, a, n0, n1):     # (n, 2*G*K, H_out, W_out) -> (n*G, K, 2, L)
        return a[n0:n1].reshape((n1 - n0) * self.G, self.K, 2, self.L)

    def masks(self, a, n0, n1):       # (n, G*K, H_out, W_out) -> (n*G, K, L)
        return None if a is None else a[n0:n1].reshape((n1 - n0) * self.G, self.K, self.L)

    def columns(self, a, n0, n1):     # (n, C, K, L) -> (n*G, Cq, K, L)
        return a.reshape((n1 - n0) * self.G, self.cq, self.K, self.L)


def deform_conv2d(x, offset, mask, weight, bias, groups, G, grid, out_hw):
    """grid: the engine's (kw, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)."""
    N, c_in = x.shape[:2]
    K, L = weight.shape[2] * weight.shape[3], out_hw[0] * out_hw[1]
    v = _EngineViews(x, G, K, L)

    def make_columns(n0, n1, columns):
        engine.deform_im2col(v.image(x, n0, n1), v.offsets(offset, n0, n1),
                             v.masks(mask, n0, n1), ZEROS, grid, v.columns(columns, n0, n1))

    out = _forward(make_columns, weight, bias, N, c_in, K, L, groups)
    return out.reshape((N, weight.shape[0]) + tuple(out_hw))


def deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, groups, G, grid, out_hw,
                           deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None)."""
    N, c_in = x.shape[:2]
    K, L = weight.shape[2] * weight.shape[3], out_hw[0] * out_hw[1]
    v = _EngineViews(x, G, K, L)
    grad_input = zeros(x.shape, x.dtype)
    grad_offset = empty(offset.shape, x.dtype)
    grad_mask = empty(mask.shape, x.dtype) if mask is not None else None

    def make_columns(n0, n1, columns):
        engine.deform_im2col(v.image(x, n0, n1), v.offsets(offset, n0, n1),
                             v.masks(mask, n0, n1), ZEROS, grid, v.columns(columns, n0, n1))

    def scatter_columns(n0, n1, grad_columns):
        grad_columns = v.columns(grad_columns, n0, n1)
        offsets, masks = v.offsets(offset, n0, n1), v.masks(mask, n0, n1)
        engine.deform_col2im(grad_columns, offsets, masks, ZEROS, grid,
                             v.image(grad_input, n0, n1), deterministic)
        engine.deform_coord_grad(grad_columns, v.image(x, n0, n1), offsets, masks, ZEROS, grid,
                                 v.offsets(grad_offset, n0, n1), v.masks(grad_mask, n0, n1))

    grad_weight, grad_bias = _backward(make_columns, scatter_columns,
                                       grad_out.reshape(N, weight.shape[0], L), weight,
                                       has_bias, c_in, K, groups)
    return grad_input, grad_offset, grad_weight, grad_bias, grad_mask
