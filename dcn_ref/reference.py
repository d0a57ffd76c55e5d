"""Slow, obviously correct loop versions of every op and its backward: the spec.

Plain Python loops written straight from the equations, with their own bilinear formula
(nothing from ``dcn_ref.sampling`` or the kernels), so the fast kernels are tested against
something independent. Use them on small arrays only: they take seconds for a few
thousand samples. Arguments and results are those of the ops in ``dcn_ref.ops``
(NumPy only, no ``target``); validation is the ops' job, not theirs.
"""
import math

import numpy as np

from .grads import BilinearSampleGrads, Conv2dGrads, DeformConv2dGrads, OffsetSampleGrads


def pair(v):
    """An int or an (h, w) pair as an (h, w) tuple (the references take checked arguments)."""
    return (v, v) if isinstance(v, int) else tuple(v)


# -- bilinear interpolation of one image plane at one point ---------------------------

def _cell(height, width, y, x, padding_mode):
    """(y0, x0, ly, lx, dclamp_y, dclamp_x), or None where the sample is exactly 0."""
    if math.isnan(y) or math.isnan(x):
        return None
    if padding_mode == "border":
        # clamp into the image; the clamp's right derivative is 1 inside, 0 where it clamps
        dclamp_y = 1.0 if 0 <= y < height - 1 else 0.0
        dclamp_x = 1.0 if 0 <= x < width - 1 else 0.0
        y = min(max(y, 0.0), height - 1.0)
        x = min(max(x, 0.0), width - 1.0)
    else:
        # the four neighbours of a point outside [-1, H) x [-1, W) are all padding
        if not (-1 <= y < height and -1 <= x < width):
            return None
        dclamp_y = dclamp_x = 1.0
    y0, x0 = math.floor(y), math.floor(x)
    return y0, x0, y - y0, x - x0, dclamp_y, dclamp_x


def _pixel(plane, r, s):
    height, width = plane.shape
    return float(plane[r, s]) if 0 <= r < height and 0 <= s < width else 0.0


def bilinear(plane, y, x, padding_mode="zeros"):
    """The bilinear value of a 2-d ``plane`` at (y, x)."""
    cell = _cell(*plane.shape, float(y), float(x), padding_mode)
    if cell is None:
        return 0.0
    y0, x0, ly, lx, _, _ = cell
    return ((1 - ly) * (1 - lx) * _pixel(plane, y0, x0) + (1 - ly) * lx * _pixel(plane, y0, x0 + 1)
            + ly * (1 - lx) * _pixel(plane, y0 + 1, x0) + ly * lx * _pixel(plane, y0 + 1, x0 + 1))


def bilinear_grads(plane, y, x, padding_mode="zeros"):
    """(dv/dy, dv/dx, [((row, col), dv/dpixel), ...]) of the value at (y, x).

    Derivatives in y, x are the right derivatives (inside the cell [y0, y0+1]).
    """
    cell = _cell(*plane.shape, float(y), float(x), padding_mode)
    if cell is None:
        return 0.0, 0.0, []
    y0, x0, ly, lx, dclamp_y, dclamp_x = cell
    top_left, top_right = _pixel(plane, y0, x0), _pixel(plane, y0, x0 + 1)
    bottom_left, bottom_right = _pixel(plane, y0 + 1, x0), _pixel(plane, y0 + 1, x0 + 1)
    dv_dy = (1 - lx) * (bottom_left - top_left) + lx * (bottom_right - top_right)
    dv_dx = (1 - ly) * (top_right - top_left) + ly * (bottom_right - bottom_left)
    height, width = plane.shape
    corners = [((y0, x0), (1 - ly) * (1 - lx)), ((y0, x0 + 1), (1 - ly) * lx),
               ((y0 + 1, x0), ly * (1 - lx)), ((y0 + 1, x0 + 1), ly * lx)]
    inside = [((r, s), w) for (r, s), w in corners if 0 <= r < height and 0 <= s < width]
    return dclamp_y * dv_dy, dclamp_x * dv_dx, inside


def bilinear_second(plane, y, x, padding_mode="zeros"):
    """What the derivative of a backward pass needs at (y, x): (dv/dy, dv/dx, d2v/dydx,
    [((row, col), w, dw/dy, dw/dx), ...] for the corners inside the image).

    Right derivatives, times the clamp's derivative ("border"). Inside a cell v is linear
    in y for fixed x and in x for fixed y, so d2v/dy2 = d2v/dx2 = 0; only the cross term
    d2v/dydx = I[y0, x0] - I[y0, x0+1] - I[y0+1, x0] + I[y0+1, x0+1] is left.
    """
    cell = _cell(*plane.shape, float(y), float(x), padding_mode)
    if cell is None:
        return 0.0, 0.0, 0.0, []
    y0, x0, ly, lx, dclamp_y, dclamp_x = cell
    top_left, top_right = _pixel(plane, y0, x0), _pixel(plane, y0, x0 + 1)
    bottom_left, bottom_right = _pixel(plane, y0 + 1, x0), _pixel(plane, y0 + 1, x0 + 1)
    dv_dy = (1 - lx) * (bottom_left - top_left) + lx * (bottom_right - top_right)
    dv_dx = (1 - ly) * (top_right - top_left) + ly * (bottom_right - bottom_left)
    d2v_dydx = top_left - top_right - bottom_left + bottom_right
    # (pixel, w, dw/dly, dw/dlx) with w = (1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly lx
    corners = [((y0, x0), (1 - ly) * (1 - lx), -(1 - lx), -(1 - ly)),
               ((y0, x0 + 1), (1 - ly) * lx, -lx, 1 - ly),
               ((y0 + 1, x0), ly * (1 - lx), 1 - lx, -ly),
               ((y0 + 1, x0 + 1), ly * lx, lx, ly)]
    height, width = plane.shape
    inside = [((r, s), w, dclamp_y * dw_dy, dclamp_x * dw_dx)
              for (r, s), w, dw_dy, dw_dx in corners if 0 <= r < height and 0 <= s < width]
    return dclamp_y * dv_dy, dclamp_x * dv_dx, dclamp_y * dclamp_x * d2v_dydx, inside


# -- bilinear_sample -------------------------------------------------------------------

def bilinear_sample(image, coords, padding_mode="zeros"):
    B, P = coords.shape[:2]
    out = np.zeros((B, P), image.dtype)
    for b in range(B):
        for p in range(P):
            out[b, p] = bilinear(image[b], coords[b, p, 0], coords[b, p, 1], padding_mode)
    return out


def bilinear_sample_backward(grad_output, image, coords, padding_mode="zeros"):
    grad_image = np.zeros(image.shape, np.float64)
    grad_coords = np.zeros(coords.shape, np.float64)
    for b in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            g = float(grad_output[b, p])
            dy, dx, corners = bilinear_grads(image[b], coords[b, p, 0], coords[b, p, 1], padding_mode)
            grad_coords[b, p] = g * dy, g * dx
            for (r, s), w in corners:
                grad_image[b, r, s] += g * w
    return BilinearSampleGrads(grad_image.astype(image.dtype), grad_coords.astype(image.dtype))


# -- offset_sample ---------------------------------------------------------------------

def offset_sample(input, offset, padding_mode="border"):
    N, C, H, W = input.shape
    out = np.zeros(input.shape, input.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    dy, dx = offset[n, 2 * c, i, j], offset[n, 2 * c + 1, i, j]
                    out[n, c, i, j] = bilinear(input[n, c], i + dy, j + dx, padding_mode)
    return out


def offset_sample_backward(grad_output, input, offset, padding_mode="border"):
    N, C, H, W = input.shape
    grad_input = np.zeros(input.shape, np.float64)
    grad_offset = np.zeros(offset.shape, np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    g = float(grad_output[n, c, i, j])
                    y = i + offset[n, 2 * c, i, j]
                    x = j + offset[n, 2 * c + 1, i, j]
                    dy, dx, corners = bilinear_grads(input[n, c], y, x, padding_mode)
                    grad_offset[n, 2 * c, i, j] = g * dy
                    grad_offset[n, 2 * c + 1, i, j] = g * dx
                    for (r, s), w in corners:
                        grad_input[n, c, r, s] += g * w
    return OffsetSampleGrads(grad_input.astype(input.dtype), grad_offset.astype(input.dtype))


# -- conv2d ------------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """out[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] x[n, g*Cg + c, y, x]."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C_in, H, W = input.shape
    C_out, Cg, kh, kw = weight.shape
    out_h = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((N, C_out, out_h, out_w), np.float64)
    for n in range(N):
        for o in range(C_out):
            g = o // (C_out // groups)
            for oy in range(out_h):
                for ox in range(out_w):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                y, x = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                                total += weight[o, c, i, j] * _pixel(input[n, g * Cg + c], y, x)
                    out[n, o, oy, ox] = total
    return out.astype(input.dtype)


def conv2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0, dilation=1,
                    groups=1):
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C_in, H, W = input.shape
    C_out, Cg, kh, kw = weight.shape
    out_h, out_w = grad_output.shape[2:]
    grad_input = np.zeros(input.shape, np.float64)
    grad_weight = np.zeros(weight.shape, np.float64)
    for n in range(N):
        for o in range(C_out):
            g = o // (C_out // groups)
            for oy in range(out_h):
                for ox in range(out_w):
                    go = float(grad_output[n, o, oy, ox])
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                y, x = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                                if 0 <= y < H and 0 <= x < W:
                                    grad_weight[o, c, i, j] += go * input[n, g * Cg + c, y, x]
                                    grad_input[n, g * Cg + c, y, x] += go * weight[o, c, i, j]
    grad_bias = None if bias is None else grad_output.sum(axis=(0, 2, 3), dtype=np.float64)
    dtype = input.dtype
    return Conv2dGrads(grad_input.astype(dtype), grad_weight.astype(dtype),
                       None if grad_bias is None else grad_bias.astype(dtype))


# -- im2col ------------------------------------------------------------------------------

def im2col(input, kernel_size, stride=1, padding=0, dilation=1):
    """The column matrix (N, C*kh*kw, H_out*W_out) straight from its definition: row
    (c*kh + i)*kw + j, column oy*W_out + ox holds the pixel tap (i, j) of output pixel
    (oy, ox) reads in channel c, 0 in the padding."""
    (kh, kw), (sh, sw) = pair(kernel_size), pair(stride)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    N, C, H, W = input.shape
    out_h = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    columns = np.zeros((N, C * kh * kw, out_h * out_w), input.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oy in range(out_h):
                        for ox in range(out_w):
                            y, x = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                            if 0 <= y < H and 0 <= x < W:
                                row, column = (c * kh + i) * kw + j, oy * out_w + ox
                                columns[n, row, column] = input[n, c, y, x]
    return columns


# -- deform_conv2d -----------------------------------------------------------------------

def _deform_taps(input, offset, weight, stride, padding, dilation, mask):
    """Yield (n, oy, ox, g, G, i, j, tap, y, x, m): every tap of every output pixel, in
    offset group g of G, sampling at (y, x) with modulation m."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C_in, H, W = input.shape
    kh, kw = weight.shape[2:]
    G = offset.shape[1] // (2 * kh * kw)
    out_h, out_w = offset.shape[2:]
    for n in range(N):
        for oy in range(out_h):
            for ox in range(out_w):
                for g in range(G):
                    for i in range(kh):
                        for j in range(kw):
                            tap = g * kh * kw + i * kw + j
                            y = oy * sh - ph + i * dh + offset[n, 2 * tap, oy, ox]
                            x = ox * sw - pw + j * dw + offset[n, 2 * tap + 1, oy, ox]
                            m = 1.0 if mask is None else float(mask[n, tap, oy, ox])
                            # a NaN mask, or a sample that touches no pixel, leaves the tap
                            # out: it adds 0, whatever its mask, and gets no gradient
                            if math.isnan(m) or _cell(H, W, float(y), float(x), "zeros") is None:
                                continue
                            yield n, oy, ox, g, G, i, j, tap, float(y), float(x), m


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """out[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] m * bilinear(x[n, g*Cg + c], y, x)."""
    N, C_in = input.shape[:2]
    C_out, Cg = weight.shape[:2]
    groups = C_in // Cg
    out = np.zeros((N, C_out) + offset.shape[2:], np.float64)
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    for n, oy, ox, g, G, i, j, tap, y, x, m in _deform_taps(input, offset, weight, stride,
                                                            padding, dilation, mask):
        for c in range(g * C_in // G, (g + 1) * C_in // G):   # channels of offset group g
            sample = m * bilinear(input[n, c], y, x, "zeros")
            conv_group = c // Cg
            for o in range(conv_group * C_out // groups, (conv_group + 1) * C_out // groups):
                out[n, o, oy, ox] += weight[o, c - conv_group * Cg, i, j] * sample
    return out.astype(input.dtype)


def deform_conv2d_backward(grad_output, input, offset, weight, bias=None, stride=1, padding=0,
                           dilation=1, mask=None):
    N, C_in = input.shape[:2]
    C_out, Cg = weight.shape[:2]
    groups = C_in // Cg
    grad_input = np.zeros(input.shape, np.float64)
    grad_offset = np.zeros(offset.shape, np.float64)
    grad_weight = np.zeros(weight.shape, np.float64)
    grad_mask = None if mask is None else np.zeros(mask.shape, np.float64)
    for n, oy, ox, g, G, i, j, tap, y, x, m in _deform_taps(input, offset, weight, stride,
                                                            padding, dilation, mask):
        for c in range(g * C_in // G, (g + 1) * C_in // G):
            conv_group = c // Cg
            value = bilinear(input[n, c], y, x, "zeros")
            dv_dy, dv_dx, corners = bilinear_grads(input[n, c], y, x, "zeros")
            for o in range(conv_group * C_out // groups, (conv_group + 1) * C_out // groups):
                go = float(grad_output[n, o, oy, ox])
                w = float(weight[o, c - conv_group * Cg, i, j])
                grad_weight[o, c - conv_group * Cg, i, j] += go * m * value
                grad_offset[n, 2 * tap, oy, ox] += go * w * m * dv_dy
                grad_offset[n, 2 * tap + 1, oy, ox] += go * w * m * dv_dx
                if mask is not None:
                    grad_mask[n, tap, oy, ox] += go * w * value
                for (r, s), weight_rs in corners:
                    grad_input[n, c, r, s] += go * w * m * weight_rs
    grad_bias = None if bias is None else grad_output.sum(axis=(0, 2, 3), dtype=np.float64)
    dtype = input.dtype

    def cast(a):
        return None if a is None else a.astype(dtype)

    return DeformConv2dGrads(cast(grad_input), cast(grad_offset), cast(grad_weight),
                             cast(grad_bias), cast(grad_mask))
