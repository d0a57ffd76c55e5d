"""What a (deformable) convolution does once it has columns: grouped matrix products.

With ``columns`` (n, C_in, K, L) from im2col (plain or deformable) and the weight viewed
as (groups, M, Kd) with M = C_out/groups and Kd = C_in/groups*K:

    out[n, g]          = weight[g] @ columns[n, g]                 (+ bias)
    grad_columns[n, g] = weight[g].T @ grad_out[n, g]
    grad_weight[g]     = sum_n grad_out[n, g] @ columns[n, g].T
    grad_bias          = grad_out summed over images and pixels

The batch is processed in chunks so that the columns (C_in*K*L values an image) stay
within COLUMN_BUDGET_BYTES.
"""
COLUMN_BUDGET_BYTES = 64 * 2**20


def batch_chunks(n_images, bytes_per_image):
    """[(n0, n1), ...] covering range(n_images) in chunks within the column budget."""
    step = max(1, COLUMN_BUDGET_BYTES // max(1, bytes_per_image))
    return [(n0, min(n0 + step, n_images)) for n0 in range(0, n_images, step)]


def forward(be, make_columns, weight, bias, n_images, c_in, n_taps, n_pixels, groups):
    """out (N, C_out, L); ``make_columns(n0, n1, columns)`` fills columns (n, C_in, K, L)."""
    c_out = weight.shape[0]
    weight_g = weight.reshape(groups, c_out // groups, c_in // groups * n_taps)
    out = be.empty((n_images, c_out, n_pixels), weight.dtype)
    for n0, n1 in batch_chunks(n_images, c_in * n_taps * n_pixels * weight.dtype.itemsize):
        n = n1 - n0
        columns = be.empty((n, c_in, n_taps, n_pixels), weight.dtype)
        make_columns(n0, n1, columns)
        be.conv_gemm(weight_g, columns.reshape(n, groups, c_in // groups * n_taps, n_pixels),
                     out[n0:n1].reshape(n, groups, c_out // groups, n_pixels))
    if bias is not None:
        be.add_bias(out, bias)
    return out


def backward(be, make_columns, scatter_columns, grad_out, weight, has_bias, c_in, n_taps,
             groups):
    """Gradients (weight, bias or None) of a convolution from grad_out (N, C_out, L).

    ``scatter_columns(n0, n1, grad_columns)`` takes grad_columns (n, C_in, K, L) on to the
    op's other inputs (col2im, or the deformable adjoints).
    """
    n_images, c_out, n_pixels = grad_out.shape
    kd = c_in // groups * n_taps
    weight_g = weight.reshape(groups, c_out // groups, kd)
    grad_weight = be.zeros((groups, c_out // groups, kd), weight.dtype)
    for n0, n1 in batch_chunks(n_images, 2 * c_in * n_taps * n_pixels * weight.dtype.itemsize):
        n = n1 - n0
        columns = be.empty((n, c_in, n_taps, n_pixels), weight.dtype)
        make_columns(n0, n1, columns)
        grad_out_g = grad_out[n0:n1].reshape(n, groups, c_out // groups, n_pixels)
        be.conv_gemm_grad_weight(grad_out_g, columns.reshape(n, groups, kd, n_pixels), grad_weight)
        del columns
        grad_columns = be.conv_gemm_grad_columns(weight_g, grad_out_g)  # (n, groups, kd, L)
        scatter_columns(n0, n1, grad_columns.reshape(n, c_in, n_taps, n_pixels))
    grad_bias = be.bias_grad(grad_out) if has_bias else None
    return grad_weight.reshape(weight.shape), grad_bias
