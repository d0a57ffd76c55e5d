"""Slow loop versions of dcnv3 and dcnv4 and their backward passes: the spec, in Python.

Written straight from the equations (see ``dcn_ref.ops.dcnv3``), with the bilinear
formula of ``dcn_ref.reference`` (nothing from ``dcn_ref.sampling`` or the kernels), so
the fast kernels are tested against something independent. Arguments and results are
those of the ops (NumPy only, no ``target``); validation is the ops' job. Small arrays only.
"""
import math
from typing import NamedTuple

import numpy as np

from .grads import DCNv3Grads, DCNv4Grads
from .reference import bilinear, bilinear_grads, pair


def kernel_points(kh, kw, remove_center=False):
    """[(i, j), ...]: the kernel positions, column i and row j, in DCNv3's order (column-major:
    i outer, j inner), without the centre (kw//2, kh//2) when remove_center."""
    return [(i, j) for i in range(kw) for j in range(kh)
            if not (remove_center and (i, j) == (kw // 2, kh // 2))]


class _Grid(NamedTuple):
    """The regular grid of the kernel positions, in the spec's short names."""
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int


def _geometry(input, kernel_size, stride, padding, dilation, remove_center):
    N, H, W, C = input.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    out_h = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    grid = _Grid(kh, kw, sh, sw, ph, pw, dh, dw)
    return grid, out_h, out_w, kernel_points(kh, kw, remove_center)


def _location(ho, wo, i, j, dx, dy, grid, offset_scale):
    half_h, half_w = grid.dh * (grid.kh - 1) // 2, grid.dw * (grid.kw - 1) // 2
    y = ho * grid.sh - grid.ph + half_h + (j * grid.dh - half_h + dy) * offset_scale
    x = wo * grid.sw - grid.pw + half_w + (i * grid.dw - half_w + dx) * offset_scale
    return y, x


def dcnv3(input, offset, mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
    N, H, W, C = input.shape
    grid, out_h, out_w, points = _geometry(input, kernel_size, stride, padding, dilation,
                                           remove_center)
    P, Cg = len(points), C // group
    out = np.zeros((N, out_h, out_w, C), np.float64)
    for n in range(N):
        for ho in range(out_h):
            for wo in range(out_w):
                for g in range(group):
                    for p, (i, j) in enumerate(points):
                        dx = float(offset[n, ho, wo, (g * P + p) * 2])
                        dy = float(offset[n, ho, wo, (g * P + p) * 2 + 1])
                        m = float(mask[n, ho, wo, g * P + p])
                        if math.isnan(m) or H == 0 or W == 0:   # a NaN weight, or no pixel:
                            continue                            # the point adds nothing
                        y, x = _location(ho, wo, i, j, dx, dy, grid, offset_scale)
                        for c in range(g * Cg, (g + 1) * Cg):
                            out[n, ho, wo, c] += m * bilinear(input[n, :, :, c], y, x)
    return out.astype(input.dtype)


def dcnv3_backward(grad_output, input, offset, mask, kernel_size=3, stride=1, padding=0,
                   dilation=1, group=1, offset_scale=1.0, remove_center=False):
    N, H, W, C = input.shape
    grid, out_h, out_w, points = _geometry(input, kernel_size, stride, padding, dilation,
                                           remove_center)
    P, Cg = len(points), C // group
    grad_input = np.zeros(input.shape, np.float64)
    grad_offset = np.zeros(offset.shape, np.float64)
    grad_mask = np.zeros(mask.shape, np.float64)
    for n in range(N):
        for ho in range(out_h):
            for wo in range(out_w):
                for g in range(group):
                    for p, (i, j) in enumerate(points):
                        k = g * P + p
                        dx, dy = float(offset[n, ho, wo, 2 * k]), float(offset[n, ho, wo, 2 * k + 1])
                        m = float(mask[n, ho, wo, k])
                        if math.isnan(m) or H == 0 or W == 0:   # as in dcnv3: adds nothing
                            continue
                        y, x = _location(ho, wo, i, j, dx, dy, grid, offset_scale)
                        for c in range(g * Cg, (g + 1) * Cg):
                            go = float(grad_output[n, ho, wo, c])
                            plane = input[n, :, :, c]
                            # out += m * v(y, x),  y = ... + dy * offset_scale
                            dv_dy, dv_dx, corners = bilinear_grads(plane, y, x)
                            grad_mask[n, ho, wo, k] += go * bilinear(plane, y, x)
                            grad_offset[n, ho, wo, 2 * k] += go * m * dv_dx * offset_scale
                            grad_offset[n, ho, wo, 2 * k + 1] += go * m * dv_dy * offset_scale
                            for (r, s), w in corners:
                                grad_input[n, r, s, c] += go * m * w
    return DCNv3Grads(grad_input.astype(input.dtype), grad_offset.astype(input.dtype),
                      grad_mask.astype(input.dtype))


def unpack_offset_mask(offset_mask, group, points):
    """DCNv4's packed (N, H_out, W_out, D) as DCNv3's pair (offset (.., group*P*2), mask
    (.., group*P)): group g's block is at [g*3P, (g+1)*3P), 2P offsets then P weights."""
    P = points
    offset = np.concatenate([offset_mask[..., g * 3 * P: g * 3 * P + 2 * P] for g in range(group)], -1)
    mask = np.concatenate([offset_mask[..., g * 3 * P + 2 * P: (g + 1) * 3 * P] for g in range(group)], -1)
    return offset, mask


def pack_offset_mask(offset, mask, group, points, D):
    """The inverse of ``unpack_offset_mask``, with zeros in the padding entries [group*3P, D)."""
    P = points
    packed = np.zeros(offset.shape[:3] + (D,), offset.dtype)
    for g in range(group):
        packed[..., g * 3 * P: g * 3 * P + 2 * P] = offset[..., g * 2 * P: (g + 1) * 2 * P]
        packed[..., g * 3 * P + 2 * P: (g + 1) * 3 * P] = mask[..., g * P: (g + 1) * P]
    return packed


def _points(kernel_size, remove_center):
    kh, kw = pair(kernel_size)
    return kh * kw - int(bool(remove_center))


def dcnv4(input, offset_mask, kernel_size=3, stride=1, padding=0, dilation=1, group=1,
          offset_scale=1.0, remove_center=False):
    offset, mask = unpack_offset_mask(offset_mask, group, _points(kernel_size, remove_center))
    return dcnv3(input, offset, mask, kernel_size, stride, padding, dilation, group, offset_scale,
                 remove_center)


def dcnv4_backward(grad_output, input, offset_mask, kernel_size=3, stride=1, padding=0,
                   dilation=1, group=1, offset_scale=1.0, remove_center=False):
    P = _points(kernel_size, remove_center)
    offset, mask = unpack_offset_mask(offset_mask, group, P)
    grads = dcnv3_backward(grad_output, input, offset, mask, kernel_size, stride, padding,
                           dilation, group, offset_scale, remove_center)
    packed = pack_offset_mask(grads.offset, grads.mask, group, P, offset_mask.shape[3])
    return DCNv4Grads(grads.input, packed)
