"""Slow loop versions of the forward-mode and second-order functions: the spec, in Python.

For an op ``f`` with backward ``f_backward``:

    f_jvp(<inputs of f>, *, <input>_dot=...)   the change of f's output along the
                                               tangents (None: 0), the Jacobian-vector
                                               product
    f_backward_backward(grad_grads, grad_output, <inputs of f>)
                                               the gradients of the scalar
                                               S = sum over the backward's outputs of
                                               grad_grads.<field> * <field>,
                                               with respect to every input of f_backward

Each is written straight from the equations: the JVP from the op's formula, the double
backward by differentiating the loops of the backward pass in ``dcn_ref/reference.py``
and ``dcn_ref/reference_dcnv3.py`` term by term (not through the identity the fast
kernels use, that the backward's derivative along grad_output is the JVP), with the
bilinear formula and its derivatives from ``reference.bilinear_second`` (nothing from
``dcn_ref.sampling`` or the kernels). Arguments and results are those of the ops in
``dcn_ref.ops`` (NumPy only, no ``target``); small arrays only.
"""
import math

import numpy as np

from .grads import (BilinearSampleBackwardGrads, DCNv3BackwardGrads, DCNv4BackwardGrads,
                    DeformConv2dBackwardGrads, OffsetSampleBackwardGrads)
from .reference import _deform_taps, bilinear, bilinear_second
from .reference_dcnv3 import _geometry, _location, _points, pack_offset_mask, unpack_offset_mask


def _zero_if_none(a, like):
    return np.zeros(like.shape, np.float64) if a is None else np.asarray(a, np.float64)


def _cast(dtype, *arrays):
    return tuple(None if a is None else a.astype(dtype) for a in arrays)


# -- one sample ------------------------------------------------------------------------------

def _sample_jvp(plane, plane_dot, y, x, y_dot, x_dot, padding_mode):
    """d/dt bilinear(plane + t plane_dot, y + t y_dot, x + t x_dot) at t = 0."""
    dv_dy, dv_dx, _, _ = bilinear_second(plane, y, x, padding_mode)
    return bilinear(plane_dot, y, x, padding_mode) + dv_dy * y_dot + dv_dx * x_dot


def _sample_backward_backward(g, plane, y, x, gg_plane, gg_y, gg_x, padding_mode):
    """One sample's backward is  grad_plane[r, s] += g w_rs,  grad_y = g dv/dy,
    grad_x = g dv/dx.  For  S = sum_rs gg_plane[r, s] grad_plane[r, s] + gg_y grad_y
    + gg_x grad_x  this returns (dS/dg, [((r, s), dS/dplane[r, s])], dS/dy, dS/dx)."""
    dv_dy, dv_dx, d2v_dydx, corners = bilinear_second(plane, y, x, padding_mode)
    d_g = gg_y * dv_dy + gg_x * dv_dx
    d_y = gg_x * d2v_dydx * g            # d2v/dy2 = 0: gg_y leaves no term
    d_x = gg_y * d2v_dydx * g
    d_plane = []
    for (r, s), w, dw_dy, dw_dx in corners:
        d_g += gg_plane[r, s] * w
        d_y += g * gg_plane[r, s] * dw_dy
        d_x += g * gg_plane[r, s] * dw_dx
        d_plane.append(((r, s), g * (gg_y * dw_dy + gg_x * dw_dx)))
    return d_g, d_plane, d_y, d_x


# -- bilinear_sample -------------------------------------------------------------------------

def bilinear_sample_jvp(image, coords, padding_mode="zeros", *, image_dot=None, coords_dot=None):
    image_dot = _zero_if_none(image_dot, image)
    coords_dot = _zero_if_none(coords_dot, coords)
    B, P = coords.shape[:2]
    out = np.zeros((B, P), np.float64)
    for b in range(B):
        for p in range(P):
            y, x = coords[b, p]
            out[b, p] = _sample_jvp(image[b], image_dot[b], y, x, coords_dot[b, p, 0],
                                    coords_dot[b, p, 1], padding_mode)
    return out.astype(image.dtype)


def bilinear_sample_backward_backward(grad_grads, grad_output, image, coords,
                                      padding_mode="zeros"):
    gg_image = _zero_if_none(grad_grads[0], image)
    gg_coords = _zero_if_none(grad_grads[1], coords)
    d_grad_output = np.zeros(grad_output.shape, np.float64)
    d_image = np.zeros(image.shape, np.float64)
    d_coords = np.zeros(coords.shape, np.float64)
    for b in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            y, x = coords[b, p]
            d_g, d_plane, d_y, d_x = _sample_backward_backward(
                float(grad_output[b, p]), image[b], y, x, gg_image[b], gg_coords[b, p, 0],
                gg_coords[b, p, 1], padding_mode)
            d_grad_output[b, p] = d_g
            d_coords[b, p] = d_y, d_x
            for (r, s), d in d_plane:
                d_image[b, r, s] += d
    return BilinearSampleBackwardGrads(*_cast(image.dtype, d_grad_output, d_image, d_coords))


# -- offset_sample ---------------------------------------------------------------------------

def offset_sample_jvp(input, offset, padding_mode="border", *, input_dot=None, offset_dot=None):
    input_dot = _zero_if_none(input_dot, input)
    offset_dot = _zero_if_none(offset_dot, offset)
    N, C, H, W = input.shape
    out = np.zeros(input.shape, np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    y, x = i + offset[n, 2 * c, i, j], j + offset[n, 2 * c + 1, i, j]
                    out[n, c, i, j] = _sample_jvp(input[n, c], input_dot[n, c], y, x,
                                                  offset_dot[n, 2 * c, i, j],
                                                  offset_dot[n, 2 * c + 1, i, j], padding_mode)
    return out.astype(input.dtype)


def offset_sample_backward_backward(grad_grads, grad_output, input, offset,
                                    padding_mode="border"):
    gg_input = _zero_if_none(grad_grads[0], input)
    gg_offset = _zero_if_none(grad_grads[1], offset)
    N, C, H, W = input.shape
    d_grad_output = np.zeros(grad_output.shape, np.float64)
    d_input = np.zeros(input.shape, np.float64)
    d_offset = np.zeros(offset.shape, np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    y, x = i + offset[n, 2 * c, i, j], j + offset[n, 2 * c + 1, i, j]
                    d_g, d_plane, d_y, d_x = _sample_backward_backward(
                        float(grad_output[n, c, i, j]), input[n, c], y, x, gg_input[n, c],
                        gg_offset[n, 2 * c, i, j], gg_offset[n, 2 * c + 1, i, j], padding_mode)
                    d_grad_output[n, c, i, j] = d_g
                    d_offset[n, 2 * c, i, j] = d_y
                    d_offset[n, 2 * c + 1, i, j] = d_x
                    for (r, s), d in d_plane:
                        d_input[n, c, r, s] += d
    return OffsetSampleBackwardGrads(*_cast(input.dtype, d_grad_output, d_input, d_offset))


# -- deform_conv2d ---------------------------------------------------------------------------

def deform_conv2d_jvp(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                      mask=None, *, input_dot=None, offset_dot=None, weight_dot=None,
                      bias_dot=None, mask_dot=None):
    """out_dot = b_dot + sum w_dot m v + w (m_dot v + m (bilinear(x_dot) + dv/dy dy_dot
    + dv/dx dx_dot)) over the taps and channels of each output pixel."""
    N, C_in = input.shape[:2]
    C_out, Cg = weight.shape[:2]
    groups = C_in // Cg
    input_dot = _zero_if_none(input_dot, input)
    offset_dot = _zero_if_none(offset_dot, offset)
    weight_dot = _zero_if_none(weight_dot, weight)
    out = np.zeros((N, C_out) + offset.shape[2:], np.float64)
    if bias_dot is not None:
        out += np.asarray(bias_dot, np.float64)[None, :, None, None]
    for n, oy, ox, g, G, i, j, tap, y, x, m in _deform_taps(input, offset, weight, stride,
                                                            padding, dilation, mask):
        m_dot = 0.0 if mask_dot is None else float(mask_dot[n, tap, oy, ox])
        dy_dot, dx_dot = offset_dot[n, 2 * tap, oy, ox], offset_dot[n, 2 * tap + 1, oy, ox]
        for c in range(g * C_in // G, (g + 1) * C_in // G):
            v = bilinear(input[n, c], y, x)
            v_dot = _sample_jvp(input[n, c], input_dot[n, c], y, x, dy_dot, dx_dot, "zeros")
            conv_group = c // Cg
            for o in range(conv_group * C_out // groups, (conv_group + 1) * C_out // groups):
                c_w = c - conv_group * Cg
                w, w_dot = weight[o, c_w, i, j], weight_dot[o, c_w, i, j]
                out[n, o, oy, ox] += w_dot * m * v + w * (m_dot * v + m * v_dot)
    return out.astype(input.dtype)


def deform_conv2d_backward_backward(grad_grads, grad_output, input, offset, weight, bias=None,
                                    stride=1, padding=0, dilation=1, mask=None):
    """Per tap, channel c and output channel o, the backward adds

        grad_weight += go m v,   grad_offset (dy, dx) += go w m (dv/dy, dv/dx),
        grad_mask += go w v,     grad_input[c, r, s] += go w m w_rs,    (w: the weight)

    so S gains  go (gg_w m v + w m (gg_dy dv/dy + gg_dx dv/dx) + w gg_m v
    + w m sum_rs gg_x[c, r, s] w_rs),  differentiated here in go, w, m, the pixels and
    (dy, dx) (grad_bias = sum go: S gains gg_b go)."""
    gg_input, gg_offset, gg_weight, gg_bias, gg_mask = grad_grads
    N, C_in = input.shape[:2]
    C_out, Cg = weight.shape[:2]
    groups = C_in // Cg
    gg_input = _zero_if_none(gg_input, input)
    gg_offset = _zero_if_none(gg_offset, offset)
    gg_weight = _zero_if_none(gg_weight, weight)
    d_grad_output = np.zeros(grad_output.shape, np.float64)
    if gg_bias is not None:
        d_grad_output += np.asarray(gg_bias, np.float64)[None, :, None, None]
    d_input = np.zeros(input.shape, np.float64)
    d_offset = np.zeros(offset.shape, np.float64)
    d_weight = np.zeros(weight.shape, np.float64)
    d_mask = None if mask is None else np.zeros(mask.shape, np.float64)
    for n, oy, ox, g, G, i, j, tap, y, x, m in _deform_taps(input, offset, weight, stride,
                                                            padding, dilation, mask):
        gg_m = 0.0 if mask is None or gg_mask is None else float(gg_mask[n, tap, oy, ox])
        gg_dy, gg_dx = gg_offset[n, 2 * tap, oy, ox], gg_offset[n, 2 * tap + 1, oy, ox]
        for c in range(g * C_in // G, (g + 1) * C_in // G):
            plane, gg_plane = input[n, c], gg_input[n, c]
            v = bilinear(plane, y, x)
            dv_dy, dv_dx, d2v_dydx, corners = bilinear_second(plane, y, x)
            v_gg = sum(gg_plane[r, s] * w_rs for (r, s), w_rs, _, _ in corners)
            v_gg_dy = sum(gg_plane[r, s] * dw_dy for (r, s), _, dw_dy, _ in corners)
            v_gg_dx = sum(gg_plane[r, s] * dw_dx for (r, s), _, _, dw_dx in corners)
            conv_group = c // Cg
            c_w = c - conv_group * Cg
            for o in range(conv_group * C_out // groups, (conv_group + 1) * C_out // groups):
                go = float(grad_output[n, o, oy, ox])
                w, gg_w = float(weight[o, c_w, i, j]), float(gg_weight[o, c_w, i, j])
                moved = gg_dy * dv_dy + gg_dx * dv_dx
                d_grad_output[n, o, oy, ox] += gg_w * m * v + w * m * moved + w * gg_m * v \
                    + w * m * v_gg
                d_weight[o, c_w, i, j] += go * (m * moved + gg_m * v + m * v_gg)
                if d_mask is not None:
                    d_mask[n, tap, oy, ox] += go * (gg_w * v + w * moved + w * v_gg)
                # d/dy: v -> dv/dy, dv/dy -> d2v/dy2 = 0, dv/dx -> d2v/dydx, w_rs -> dw_rs/dy
                d_offset[n, 2 * tap, oy, ox] += go * (gg_w * m * dv_dy + w * m * gg_dx * d2v_dydx
                                                      + w * gg_m * dv_dy + w * m * v_gg_dy)
                d_offset[n, 2 * tap + 1, oy, ox] += go * (gg_w * m * dv_dx
                                                          + w * m * gg_dy * d2v_dydx
                                                          + w * gg_m * dv_dx + w * m * v_gg_dx)
                for (r, s), w_rs, dw_dy, dw_dx in corners:
                    d_input[n, c, r, s] += go * (gg_w * m * w_rs + w * m * (gg_dy * dw_dy
                                                                            + gg_dx * dw_dx)
                                                 + w * gg_m * w_rs)
    d_bias = None if bias is None else np.zeros(bias.shape, np.float64)
    return DeformConv2dBackwardGrads(*_cast(input.dtype, d_grad_output, d_input, d_offset,
                                            d_weight, d_bias, d_mask))


# -- dcnv3 and dcnv4 -------------------------------------------------------------------------

def _dcnv3_points(input, offset, mask, kernel_size, stride, padding, dilation, group,
                  offset_scale, remove_center):
    """Yield (n, ho, wo, g, k, y, x, m, Cg): every point that adds to the output (k = g*P + p,
    sampling at (y, x) with weight m)."""
    N, H, W, C = input.shape
    grid, out_h, out_w, points = _geometry(input, kernel_size, stride, padding, dilation,
                                           remove_center)
    P, Cg = len(points), C // group
    for n in range(N):
        for ho in range(out_h):
            for wo in range(out_w):
                for g in range(group):
                    for p, (i, j) in enumerate(points):
                        k = g * P + p
                        m = float(mask[n, ho, wo, k])
                        if math.isnan(m) or H == 0 or W == 0:   # adds nothing, as in dcnv3
                            continue
                        dx = float(offset[n, ho, wo, 2 * k])
                        dy = float(offset[n, ho, wo, 2 * k + 1])
                        y, x = _location(ho, wo, i, j, dx, dy, grid, offset_scale)
                        yield n, ho, wo, g, k, y, x, m, Cg


def dcnv3_jvp(input, offset, mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
              offset_scale=1.0, remove_center=False, *, input_dot=None, offset_dot=None,
              mask_dot=None):
    """out_dot = sum over points of m_dot v + m (bilinear(input_dot) + offset_scale
    (dv/dy dy_dot + dv/dx dx_dot)), the offsets stored x first."""
    input_dot = _zero_if_none(input_dot, input)
    offset_dot = _zero_if_none(offset_dot, offset)
    mask_dot = _zero_if_none(mask_dot, mask)
    N, H, W, C = input.shape
    _, out_h, out_w, _ = _geometry(input, kernel_size, stride, padding, dilation, remove_center)
    out = np.zeros((N, out_h, out_w, C), np.float64)
    for n, ho, wo, g, k, y, x, m, Cg in _dcnv3_points(input, offset, mask, kernel_size, stride,
                                                      padding, dilation, group, offset_scale,
                                                      remove_center):
        dx_dot, dy_dot = offset_dot[n, ho, wo, 2 * k], offset_dot[n, ho, wo, 2 * k + 1]
        for c in range(g * Cg, (g + 1) * Cg):
            plane = input[n, :, :, c]
            v_dot = _sample_jvp(plane, input_dot[n, :, :, c], y, x, offset_scale * dy_dot,
                                offset_scale * dx_dot, "zeros")
            out[n, ho, wo, c] += mask_dot[n, ho, wo, k] * bilinear(plane, y, x) + m * v_dot
    return out.astype(input.dtype)


def dcnv3_backward_backward(grad_grads, grad_output, input, offset, mask, kernel_size=3,
                            stride=1, padding=0, dilation=1, group=1, offset_scale=1.0,
                            remove_center=False):
    """Per point and channel c the backward adds (s = offset_scale)

        grad_mask += go v,  grad_offset (x, y) += go m s (dv/dx, dv/dy),
        grad_input[r, s, c] += go m w_rs,

    so S gains  go (gg_m v + m s (gg_ox dv/dx + gg_oy dv/dy) + m sum_rs gg_x[r, s, c] w_rs),
    differentiated here in go, m, the pixels and the offsets (d/d dy = s d/dy)."""
    gg_input = _zero_if_none(grad_grads[0], input)
    gg_offset = _zero_if_none(grad_grads[1], offset)
    gg_mask = _zero_if_none(grad_grads[2], mask)
    s = offset_scale
    d_grad_output = np.zeros(grad_output.shape, np.float64)
    d_input = np.zeros(input.shape, np.float64)
    d_offset = np.zeros(offset.shape, np.float64)
    d_mask = np.zeros(mask.shape, np.float64)
    for n, ho, wo, g, k, y, x, m, Cg in _dcnv3_points(input, offset, mask, kernel_size, stride,
                                                      padding, dilation, group, offset_scale,
                                                      remove_center):
        gg_ox, gg_oy = gg_offset[n, ho, wo, 2 * k], gg_offset[n, ho, wo, 2 * k + 1]
        gg_m = gg_mask[n, ho, wo, k]
        for c in range(g * Cg, (g + 1) * Cg):
            go = float(grad_output[n, ho, wo, c])
            plane, gg_plane = input[n, :, :, c], gg_input[n, :, :, c]
            v = bilinear(plane, y, x)
            dv_dy, dv_dx, d2v_dydx, corners = bilinear_second(plane, y, x)
            v_gg = sum(gg_plane[r, t] * w_rs for (r, t), w_rs, _, _ in corners)
            v_gg_dy = sum(gg_plane[r, t] * dw_dy for (r, t), _, dw_dy, _ in corners)
            v_gg_dx = sum(gg_plane[r, t] * dw_dx for (r, t), _, _, dw_dx in corners)
            moved = s * (gg_ox * dv_dx + gg_oy * dv_dy)
            d_grad_output[n, ho, wo, c] += gg_m * v + m * moved + m * v_gg
            d_mask[n, ho, wo, k] += go * (moved + v_gg)
            d_offset[n, ho, wo, 2 * k] += go * s * (gg_m * dv_dx + m * s * gg_oy * d2v_dydx
                                                    + m * v_gg_dx)
            d_offset[n, ho, wo, 2 * k + 1] += go * s * (gg_m * dv_dy + m * s * gg_ox * d2v_dydx
                                                        + m * v_gg_dy)
            for (r, t), w_rs, dw_dy, dw_dx in corners:
                d_input[n, r, t, c] += go * (gg_m * w_rs + m * s * (gg_ox * dw_dx + gg_oy * dw_dy))
    return DCNv3BackwardGrads(*_cast(input.dtype, d_grad_output, d_input, d_offset, d_mask))


def dcnv4_jvp(input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
              offset_scale=1.0, remove_center=False, *, input_dot=None, offset_mask_dot=None):
    P = _points(kernel_size, remove_center)
    offset, mask = unpack_offset_mask(offset_mask, group, P)
    offset_dot = mask_dot = None
    if offset_mask_dot is not None:
        offset_dot, mask_dot = unpack_offset_mask(offset_mask_dot, group, P)
    return dcnv3_jvp(input, offset, mask, kernel_size, stride, padding, dilation, group,
                     offset_scale, remove_center, input_dot=input_dot, offset_dot=offset_dot,
                     mask_dot=mask_dot)


def dcnv4_backward_backward(grad_grads, grad_output, input, offset_mask, kernel_size=3,
                            stride=1, padding=0, dilation=1, group=1, offset_scale=1.0,
                            remove_center=False):
    P = _points(kernel_size, remove_center)
    offset, mask = unpack_offset_mask(offset_mask, group, P)
    gg_offset = gg_mask = None
    if grad_grads[1] is not None:
        gg_offset, gg_mask = unpack_offset_mask(grad_grads[1], group, P)
    grads = dcnv3_backward_backward((grad_grads[0], gg_offset, gg_mask), grad_output, input,
                                    offset, mask, kernel_size, stride, padding, dilation, group,
                                    offset_scale, remove_center)
    packed = pack_offset_mask(grads.offset, grads.mask, group, P, offset_mask.shape[3])
    return DCNv4BackwardGrads(grads.grad_output, grads.input, packed)
