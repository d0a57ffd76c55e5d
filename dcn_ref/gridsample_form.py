"""The sampling ops written with standard graph operators: the **GridSample form**.

ONNX and OpenVINO have a deformable convolution operator (``DeformConv``,
``DeformableConvolution``) but nothing for DCNv3, DCNv4, ``bilinear_sample`` or
``offset_sample``. Each of those is a bilinear read at computed points, which is what
``GridSample`` (bilinear, ``align_corners=0``) does, so each becomes a small graph:

    sample points in pixels  ->  normalised grid  ->  GridSample  ->  reshapes, weighted sum

This module writes each graph once, for any **builder**: an object with the graph
operations below, each returning a new value of the graph being built. The PyTorch
builder (``dcn_ref.torch.export.TorchBuilder``) builds torch operations, which
``torch.onnx.export`` turns into ONNX; the OpenVINO builder
(``dcn_ref.openvino.OpenVINOBuilder``) builds OpenVINO operations. Nothing here imports
either.

    size(x, axis)                  an int where the size is static, else a size value of
                                   the graph (supporting * and // with ints and sizes)
    size_vector(sizes, like)       a 1-D tensor of the sizes, with the float dtype of like
    arange(n, like)                0, 1, ..., n-1 (n an int or a size), dtype of like
    reshape(x, sizes)              sizes: ints or sizes, at most one -1
    transpose(x, perm)
    slice(x, axis, start, stop)    start, stop: ints
    swap_last(x)                   swap the two entries of the last axis (of size 2)
    add(a, b), sub, mul, div       NumPy broadcasting; b may be a number or an array
    sum(x, axis)                   drops the axis
    grid_sample(x, grid, padding_mode)
        x (B, C, H, W), grid (B, H_out, W_out, 2) as normalised (x, y), bilinear,
        align_corners=0, padding_mode "zeros" or "border" -> (B, C, H_out, W_out)

Sizes are read from the values, so an image or batch size that is dynamic in the graph
stays dynamic (the groups and the number of points come from the op's arguments).

On finite inputs each graph computes the op's numbers to rounding; the rules at NaN
differ (a NaN mask is NaN here and 0 in dcn_ref; what GridSample does with a NaN point is
the runtime's), see docs/export.md.
"""
import numpy as np

from .reference_dcnv3 import kernel_points


def _pair(value):
    return (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)


def deform_conv2d_groups(input_shape, weight_shape, offset_shape):
    """(groups, offset_groups) of a deformable convolution, read from its shapes as
    ``dcn_ref.ops.deform_conv2d`` reads them. The sizes used must be static (ints): a
    ``DeformConv`` node holds both counts as attributes.
    """
    shapes = {"input": tuple(input_shape), "offset": tuple(offset_shape),
              "weight": tuple(weight_shape)}
    for name, dims in (("input", [1]), ("offset", [1]), ("weight", [1, 2, 3])):
        if any(not isinstance(shapes[name][d], (int, np.integer)) for d in dims):
            shown = tuple(s if isinstance(s, (int, np.integer)) else "?" for s in shapes[name])
            raise ValueError(f"deform_conv2d: the number of channels must be static, got {name} "
                             f"of shape {shown}; give the converter the input shapes (a dynamic "
                             f"batch, height and width are fine)")
    kh, kw = shapes["weight"][2:]
    return (shapes["input"][1] // shapes["weight"][1],
            shapes["offset"][1] // (2 * kh * kw))


def _pixel_grid(b, rows, cols):
    """(len(rows), len(cols), 2): the points (cols[j], rows[i]) as (x, y)."""
    x = b.mul(b.reshape(cols, [1, -1, 1]), np.array([1.0, 0.0]))   # (1, w, 2): (x, 0)
    y = b.mul(b.reshape(rows, [-1, 1, 1]), np.array([0.0, 1.0]))   # (h, 1, 2): (0, y)
    return b.add(x, y)


def _normalised(b, points, H, W):
    """Points (..., 2) as pixel (x, y) -> GridSample's normalised (x, y), pixel centre i at
    (2i + 1)/size - 1 (align_corners=0)."""
    size = b.size_vector([W, H], like=points)
    return b.sub(b.div(b.add(b.mul(points, 2.0), 1.0), size), 1.0)


def dcnv3(b, input, offset, mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
    """``dcn_ref.ops.dcnv3`` as a graph: input ``(N, H, W, C)``, offset
    ``(N, H_out, W_out, group*P*2)`` as (x, y) pairs, mask ``(N, H_out, W_out, group*P)``
    -> ``(N, H_out, W_out, C)``."""
    P = len(kernel_points(*_pair(kernel_size), remove_center))
    out_size = (b.size(offset, 1), b.size(offset, 2))
    L = out_size[0] * out_size[1]
    offset = b.reshape(offset, [-1, L, group, P, 2])
    mask = b.reshape(mask, [-1, L, group, P])
    return _aggregate(b, input, offset, mask, out_size, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


def dcnv4(b, input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
    """``dcn_ref.ops.dcnv4`` as a graph: group g's block of offset_mask
    ``(N, H_out, W_out, D)`` holds its 2P offsets as (x, y) pairs, then its P weights;
    entries past ``group*P*3`` are padding and are never read."""
    P = len(kernel_points(*_pair(kernel_size), remove_center))
    out_size = (b.size(offset_mask, 1), b.size(offset_mask, 2))
    L = out_size[0] * out_size[1]
    packed = b.reshape(b.slice(offset_mask, 3, 0, group * P * 3), [-1, L, group, 3 * P])
    offset = b.reshape(b.slice(packed, 3, 0, 2 * P), [-1, L, group, P, 2])
    mask = b.slice(packed, 3, 2 * P, 3 * P)
    return _aggregate(b, input, offset, mask, out_size, kernel_size, stride, padding,
                      dilation, group, offset_scale, remove_center)


def _window_grid(b, like, out_size, kernel_size, stride, padding, dilation, offset_scale,
                 remove_center):
    """The points of every output pixel at zero offset, in pixels: (L, 1, P, 2) as (x, y)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    half_h, half_w = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    points = np.array([[(i * dw - half_w) * offset_scale, (j * dh - half_h) * offset_scale]
                       for i, j in kernel_points(kh, kw, remove_center)])         # (P, 2)
    rows = b.add(b.mul(b.arange(out_size[0], like), float(sh)), float(half_h - ph))
    cols = b.add(b.mul(b.arange(out_size[1], like), float(sw)), float(half_w - pw))
    centres = b.reshape(_pixel_grid(b, rows, cols), [-1, 1, 1, 2])           # (L, 1, 1, 2)
    return b.add(centres, points[None, None])                                    # (L, 1, P, 2)


def _aggregate(b, input, offset, mask, out_size, kernel_size, stride, padding, dilation,
               group, offset_scale, remove_center):
    """out[n, l, g*Cg + c] = sum_p mask[n, l, g, p] * bilinear(input[n, :, :, g*Cg + c], point),
    with offset (N, L, group, P, 2) as (x, y) and mask (N, L, group, P)."""
    H, W, C = b.size(input, 1), b.size(input, 2), b.size(input, 3)
    L, P = out_size[0] * out_size[1], b.size(mask, 3)
    value = b.reshape(b.transpose(input, [0, 3, 1, 2]),
                      [-1, C // group, H, W])                               # (N*group, Cg, H, W)
    window = _window_grid(b, input, out_size, kernel_size, stride, padding, dilation,
                          offset_scale, remove_center)
    points = b.add(window, b.mul(offset, float(offset_scale)))                # (N, L, group, P, 2)
    grid = b.reshape(b.transpose(_normalised(b, points, H, W), [0, 2, 1, 3, 4]),
                     [-1, L, P, 2])                                         # (N*group, L, P, 2)
    samples = b.grid_sample(value, grid, "zeros")                           # (N*group, Cg, L, P)
    weights = b.reshape(b.transpose(mask, [0, 2, 1, 3]), [-1, 1, L, P])      # (N*group, 1, L, P)
    out = b.reshape(b.sum(b.mul(samples, weights), 3), [-1, C, L])           # (N, C, L)
    return b.reshape(b.transpose(out, [0, 2, 1]), [-1, out_size[0], out_size[1], C])


def bilinear_sample(b, image, coords, padding_mode="zeros"):
    """``dcn_ref.ops.bilinear_sample`` as a graph: image (B, H, W), coords (B, P, 2) as
    (y, x) -> (B, P). "border" is GridSample's border padding, which clamps the point into
    the image as dcn_ref does."""
    H, W, P = b.size(image, 1), b.size(image, 2), b.size(coords, 1)
    grid = _normalised(b, b.swap_last(coords), H, W)                          # (B, P, 2) as (x, y)
    samples = b.grid_sample(b.reshape(image, [-1, 1, H, W]), b.reshape(grid, [-1, 1, P, 2]),
                            padding_mode)                                   # (B, 1, 1, P)
    return b.reshape(samples, [-1, P])


def offset_sample(b, input, offset, padding_mode="border"):
    """``dcn_ref.ops.offset_sample`` as a graph: input (N, C, H, W), offset (N, 2C, H, W) as
    (dy, dx) per channel -> (N, C, H, W), pixel (i, j) of channel c read at (i + dy, j + dx)."""
    C, H, W = b.size(input, 1), b.size(input, 2), b.size(input, 3)
    shift = b.transpose(b.reshape(offset, [-1, 2, H, W]), [0, 2, 3, 1])     # (N*C, H, W, 2): dy, dx
    pixels = _pixel_grid(b, b.arange(H, input), b.arange(W, input))  # (H, W, 2): (x, y)
    grid = _normalised(b, b.add(b.swap_last(shift), pixels), H, W)
    samples = b.grid_sample(b.reshape(input, [-1, 1, H, W]), grid, padding_mode)  # (N*C, 1, H, W)
    return b.reshape(samples, [-1, C, H, W])
