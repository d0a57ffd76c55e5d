"""im2col and col2im: the column matrix of a convolution, in the textbook layout.

Not needed to call the convolutions (they build their columns internally, in the layout
each target prefers); here to look at, and to teach with.
"""
from ..geometry import conv_geometry
from ..targets import Call
from . import _args


def _geometry(input_shape, kernel_size, stride, padding, dilation):
    kernel_hw = _args.pair(kernel_size, "kernel_size", 1)
    stride = _args.pair(stride, "stride", 1)
    padding = _args.pair(padding, "padding", 0)
    dilation = _args.pair(dilation, "dilation", 1)
    out_hw = _args.conv_output_size(input_shape[2], input_shape[3], *kernel_hw, stride,
                                    padding, dilation)
    return conv_geometry(kernel_hw, out_hw, stride, padding, dilation)


def im2col(input, kernel_size, stride=1, padding=0, dilation=1, *, target=None):
    """The column matrix of a convolution: every window of the input becomes a column.

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W)
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    columns : ndarray of shape (N, C*kh*kw, L)
        ``L = H_out*W_out``;
        ``columns[n, c*kh*kw + i*kw + j, oy*W_out + ox] = x[n, c, oy*stride_h - pad_h +
        i*dilation_h, ox*stride_w - pad_w + j*dilation_w]`` (0 in the padding), so that
        ``conv2d(x, w) = w.reshape(C_out, C*kh*kw) @ columns`` image by image.
    """
    call = Call(target, (input,))
    input = _args.float_array(input, "input", 4, "(N, C, H, W)")
    geometry = _geometry(input.shape, kernel_size, stride, padding, dilation)
    N, C = input.shape[:2]
    columns = call.backend.im2col(call.put(input), geometry)        # (N, C, K, L)
    return call.get(columns.reshape(N, C * geometry.taps, geometry.pixels))


def col2im(columns, input_shape, kernel_size, stride=1, padding=0, dilation=1, *, target=None):
    """The adjoint of ``im2col``: every column entry is added back to the pixel it came from.

    Parameters
    ----------
    columns : ndarray of shape (N, C*kh*kw, L)
    input_shape : tuple of 4 ints
        (N, C, H, W), the shape of the input of ``im2col``.
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    target : str or None
        As in ``im2col``.

    Returns
    -------
    ndarray of shape (N, C, H, W); a pixel receives the sum of the entries copied from it
    (entries from the padding are dropped). This is the input gradient of a convolution:
    ``dx = col2im(w.reshape(C_out, -1).T @ dout)``.
    """
    call = Call(target, (columns,))
    columns = _args.float_array(columns, "columns", 3, "(N, C*kh*kw, L)")
    try:
        input_shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        input_shape = ()
    if len(input_shape) != 4 or min(input_shape) < 0:
        raise ValueError(f"input_shape: expected (N, C, H, W) of non-negative ints, "
                         f"got {input_shape!r}")
    geometry = _geometry(input_shape, kernel_size, stride, padding, dilation)
    N, C = input_shape[:2]
    K, L = geometry.taps, geometry.pixels
    _args.expect_shape(columns, "columns", (N, C * K, L), "(N, C*kh*kw, L)")
    grad = call.backend.col2im(call.put(columns).reshape(N, C, K, L), geometry, input_shape)
    return call.get(grad)


__all__ = ["im2col", "col2im"]
