"""conv2d and deform_conv2d on the GPU: planar columns and the GEMMs of gemm.py.

With columns (n, C_in, K, L) from im2col (plain, or the deformable engine) and the weight
viewed as (groups, M, Kd), M = C_out/groups, Kd = C_in/groups*K:

    out[n, g]          = weight[g] @ columns[n, g] + bias[g]       (one batched GEMM)
    grad_columns[n, g] = weight[g].T @ grad_out[n, g]              (one batched GEMM)
    grad_weight[g]     = sum_n grad_out[n, g] @ columns[n, g].T    (one batched GEMM for the
                                                                    terms, one reduction)
    grad_bias          = grad_out summed over images and pixels    (the same reduction)

The batch is processed in chunks so that the scratch arrays (columns, and in the backward
grad_columns and the weight gradient's per-image terms) stay within COLUMN_BUDGET_BYTES;
the launches of an op do not grow with the number of images in a chunk.
"""
from ..kernel_args import EngineViews, chunks
from ..sampling import ZEROS
from . import engine
from . import gemm as _gemm
from . import im2col as _im2col
from . import second_order
from .launch import launch
from .memory import empty, zeros

COLUMN_BUDGET_BYTES = 512 * 2**20


def _forward(make_columns, weight, bias, n_images, c_in, geometry, add_to=None):
    """weight @ columns (+ bias), into a new array, or added to ``add_to`` (N, C_out, H_out,
    W_out) when given."""
    c_out, groups = weight.shape[0], geometry.groups
    K, L = geometry.taps, geometry.pixels
    m, kd = c_out // groups, c_in // groups * K
    weight_g = weight.reshape(groups, m, kd)
    if add_to is None:
        out = empty((n_images, c_out, L), weight.dtype)
    else:
        out = add_to.reshape(n_images, c_out, L)
    for n0, n1 in chunks(n_images, c_in * K * L * weight.dtype.itemsize, COLUMN_BUDGET_BYTES):
        n = n1 - n0
        columns = empty((n, c_in, K, L), weight.dtype)
        make_columns(n0, n1, columns)
        _gemm.gemm(weight_g, columns.reshape(n * groups, kd, L),
                   out[n0:n1].reshape(n * groups, m, L), accumulate=add_to is not None,
                   bias=bias)
    return out.reshape(n_images, c_out, geometry.out_h, geometry.out_w)


def _backward(make_columns, scatter_columns, grad_out, weight, has_bias, c_in, geometry):
    n_images, c_out = grad_out.shape[:2]
    groups, K, L = geometry.groups, geometry.taps, geometry.pixels
    grad_out = grad_out.reshape(n_images, c_out, L)
    m, kd = c_out // groups, c_in // groups * K
    weight_g = weight.reshape(groups, m, kd)
    # written by the first chunk's reduction, added to by the others; zeros for no image
    make = zeros if n_images == 0 else empty
    grad_weight = make((groups, m, kd), weight.dtype)
    grad_bias = make((c_out,), weight.dtype) if has_bias else None
    image_bytes = (2 * c_in * K * L + c_out * kd) * weight.dtype.itemsize
    for n0, n1 in chunks(n_images, image_bytes, COLUMN_BUDGET_BYTES):
        n = n1 - n0
        columns = empty((n, c_in, K, L), weight.dtype)
        make_columns(n0, n1, columns)
        grad_out_g = grad_out[n0:n1].reshape(n * groups, m, L)
        terms = empty((n * groups, m, kd), weight.dtype)     # grad_out[i, g] @ columns[i, g].T
        _gemm.gemm(grad_out_g, columns.reshape(n * groups, kd, L), terms, trans_b=True)
        _gemm.reduce_grads(terms.reshape(n, groups * m * kd), grad_out[n0:n1], grad_weight,
                           grad_bias, accumulate=n0 > 0)
        grad_columns = empty((n, groups, kd, L), weight.dtype)
        _gemm.gemm(weight_g, grad_out_g, grad_columns.reshape(n * groups, kd, L), trans_a=True)
        scatter_columns(n0, n1, grad_columns.reshape(n, c_in, K, L))
    return grad_weight.reshape(weight.shape), grad_bias


def im2col(x, geometry):
    """columns (N, C, K, L) of the textbook layout."""
    columns = empty((x.shape[0], x.shape[1], geometry.taps, geometry.pixels), x.dtype)
    launch(_im2col.im2col, columns.size, x, geometry, columns)
    return columns


def col2im(columns, geometry, input_shape, deterministic=True):
    """(N, C, H, W): columns (N, C, K, L) added back to the pixels they came from (always
    by the fixed-order gather)."""
    out = zeros(input_shape, columns.dtype)
    launch(_im2col.col2im_gather, out.size, columns, geometry, out)
    return out


def conv2d(x, weight, bias, geometry):
    """out (N, C_out, H_out, W_out) of x (N, C_in, H, W) and a ConvGeometry."""
    def make_columns(n0, n1, columns):
        launch(_im2col.im2col, columns.size, x[n0:n1], geometry, columns)

    return _forward(make_columns, weight, bias, x.shape[0], x.shape[1], geometry)


def conv2d_backward(grad_out, x, weight, has_bias, geometry, deterministic=False):
    """(grad_input, grad_weight, grad_bias or None)."""
    grad_input = zeros(x.shape, x.dtype)

    def make_columns(n0, n1, columns):
        launch(_im2col.im2col, columns.size, x[n0:n1], geometry, columns)

    def scatter_columns(n0, n1, grad_columns):
        if deterministic:
            launch(_im2col.col2im_gather, grad_input[n0:n1].size, grad_columns, geometry,
                   grad_input[n0:n1])
        else:
            launch(_im2col.col2im_atomic, grad_columns.size, grad_columns, geometry,
                   grad_input[n0:n1])

    grad_weight, grad_bias = _backward(make_columns, scatter_columns, grad_out, weight,
                                       has_bias, x.shape[1], geometry)
    return grad_input, grad_weight, grad_bias


def deform_conv2d(x, offset, mask, weight, bias, geometry):
    """out (N, C_out, H_out, W_out); offset and mask in the op's layouts, mask possibly None."""
    v = EngineViews(geometry, *x.shape[1:])

    def make_columns(n0, n1, columns):
        engine.deform_im2col(v.image(x, n0, n1), v.offsets(offset, n0, n1),
                             v.masks(mask, n0, n1), ZEROS, geometry, v.columns(columns, n0, n1))

    return _forward(make_columns, weight, bias, x.shape[0], x.shape[1], geometry)


def deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, geometry,
                           deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None)."""
    v = EngineViews(geometry, *x.shape[1:])
    grad_input = zeros(x.shape, x.dtype)
    grad_offset = empty(offset.shape, x.dtype)
    grad_mask = empty(mask.shape, x.dtype) if mask is not None else None

    def make_columns(n0, n1, columns):
        engine.deform_im2col(v.image(x, n0, n1), v.offsets(offset, n0, n1),
                             v.masks(mask, n0, n1), ZEROS, geometry, v.columns(columns, n0, n1))

    def scatter_columns(n0, n1, grad_columns):
        engine.sample_backward(v.columns(grad_columns, n0, n1), v.image(x, n0, n1),
                               v.offsets(offset, n0, n1), v.masks(mask, n0, n1), ZEROS, geometry,
                               v.image(grad_input, n0, n1), v.offsets(grad_offset, n0, n1),
                               v.masks(grad_mask, n0, n1), deterministic)

    grad_weight, grad_bias = _backward(make_columns, scatter_columns, grad_out, weight,
                                       has_bias, x.shape[1], geometry)
    return grad_input, grad_offset, grad_weight, grad_bias, grad_mask


# -- forward mode and second derivatives (the kernels in second_order.py) -------------------
# out = W X + b changes by W X_dot + W_dot X + b_dot (X_dot: the column tangents). The
# backward's gradient along cotangents of its outputs is, for W, dout X_dot^T; for x,
# offset and mask, the first-order backward with W_dot in place of W plus the
# second-order sampling of grad_columns = W^T dout (grad_output's is the JVP).

def _tangent_columns(v, x, offset, mask, x_dot, offset_dot, mask_dot, geometry):
    """make_columns(n0, n1, columns) writing a chunk's column tangents."""
    def make_columns(n0, n1, columns):
        second_order.tangent_im2col(
            v.image(x, n0, n1), v.offsets(offset, n0, n1), v.masks(mask, n0, n1), ZEROS, geometry,
            None if x_dot is None else v.image(x_dot, n0, n1), v.offsets(offset_dot, n0, n1),
            v.masks(mask_dot, n0, n1), v.columns(columns, n0, n1))
    return make_columns


def deform_conv2d_jvp(x, offset, mask, weight, bias, geometry, x_dot, offset_dot, mask_dot,
                      weight_dot, bias_dot):
    """out_dot (N, C_out, H_out, W_out); x_dot, weight_dot and bias_dot may be None."""
    v = EngineViews(geometry, *x.shape[1:])
    make_columns = _tangent_columns(v, x, offset, mask, x_dot, offset_dot, mask_dot, geometry)
    if weight_dot is None:
        return _forward(make_columns, weight, bias_dot, x.shape[0], x.shape[1], geometry)
    out = deform_conv2d(x, offset, mask, weight_dot, bias_dot, geometry)
    return _forward(make_columns, weight, None, x.shape[0], x.shape[1], geometry, add_to=out)


def deform_conv2d_backward_backward(grad_out, x, offset, mask, weight, geometry, x_dot,
                                    offset_dot, mask_dot, weight_dot, deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_mask or None) of the backward along the
    cotangents x_dot, offset_dot, mask_dot, weight_dot (grad_output's is deform_conv2d_jvp);
    x_dot and weight_dot may be None."""
    v = EngineViews(geometry, *x.shape[1:])
    if weight_dot is not None:
        grad_input, grad_offset, _, _, grad_mask = deform_conv2d_backward(
            grad_out, x, offset, mask, weight_dot, False, geometry, deterministic)
    else:
        grad_input = zeros(x.shape, x.dtype)
        grad_offset = zeros(offset.shape, x.dtype)
        grad_mask = zeros(mask.shape, x.dtype) if mask is not None else None

    def scatter_columns(n0, n1, grad_columns):
        second_order.sample_backward_backward(
            v.columns(grad_columns, n0, n1), v.image(x, n0, n1), v.offsets(offset, n0, n1),
            v.masks(mask, n0, n1), ZEROS, geometry,
            None if x_dot is None else v.image(x_dot, n0, n1), v.offsets(offset_dot, n0, n1),
            v.masks(mask_dot, n0, n1), v.image(grad_input, n0, n1),
            v.offsets(grad_offset, n0, n1), v.masks(grad_mask, n0, n1), deterministic)

    make_columns = _tangent_columns(v, x, offset, mask, x_dot, offset_dot, mask_dot, geometry)
    grad_weight, _ = _backward(make_columns, scatter_columns, grad_out, weight, False, x.shape[1],
                               geometry)
    return grad_input, grad_offset, grad_weight, grad_mask
