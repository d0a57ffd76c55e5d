"""Slow loop versions of the RoI pooling ops and their backward passes: the spec.

Written straight from the source they reproduce, torchvision's roi_align CPU kernel and
mmcv's deform_roi_pool CUDA kernel for ``deform_roi_pool``, MXNet's
DeformablePSROIPooling for ``deform_psroi_pool``, in plain Python floats, with their
own bilinear rules (nothing from ``dcn_ref.sampling``, ``dcn_ref.roi_sampling`` or the
kernels). Derivatives are the right derivatives of the forward functions (0 where a
coordinate was clamped), the convention of the rest of dcn_ref. Small arrays only.
Arguments and results are those of ``dcn_ref.ops`` (NumPy, no ``target``, no checks).
"""
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from .grads import DeformPSRoIPoolGrads, DeformRoIPoolGrads
from .reference import pair


# -- deform_roi_pool -----------------------------------------------------------------------

def roi_align_point(plane, y, x):
    """torchvision's ``bilinear_interpolate`` on a 2-d plane, with its derivatives.

    Returns (value, dv/dy, dv/dx, [((row, col), weight), ...]).
    """
    H, W = plane.shape
    if not (-1.0 <= y <= H and -1.0 <= x <= W):       # outside (NaN too): nothing
        return 0.0, 0.0, 0.0, []
    if H == 0 or W == 0:                               # an image with no pixel reads 0
        return 0.0, 0.0, 0.0, []
    yc, xc = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(yc), int(xc)
    if y_low >= H - 1:
        y_low = y_high = H - 1
        yc = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_low = x_high = W - 1
        xc = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = yc - y_low, xc - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    v1, v2 = float(plane[y_low, x_low]), float(plane[y_low, x_high])
    v3, v4 = float(plane[y_high, x_low]), float(plane[y_high, x_high])
    value = hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4
    # moving y to the right changes the value only where it was not clamped: 0 <= y < H-1
    dv_dy = hx * (v3 - v1) + lx * (v4 - v2) if 0.0 <= y < H - 1 else 0.0
    dv_dx = hy * (v2 - v1) + ly * (v4 - v3) if 0.0 <= x < W - 1 else 0.0
    weights = [((y_low, x_low), hy * hx), ((y_low, x_high), hy * lx),
               ((y_high, x_low), ly * hx), ((y_high, x_high), ly * lx)]
    return value, dv_dy, dv_dx, weights


def _roi_align_samples(rois, offset, mask, output_size, spatial_scale, sampling_ratio, gamma):
    """Yield (k, i, j, n, y, x, m, count, roi_h, roi_w): every sample of every bin, with its
    bin's mask value and sample count, as mmcv's kernel computes them."""
    ph, pw = pair(output_size)
    for k in range(rois.shape[0]):
        n = int(rois[k, 0])
        roi_start_w = float(rois[k, 1]) * spatial_scale - 0.5
        roi_start_h = float(rois[k, 2]) * spatial_scale - 0.5
        roi_end_w = float(rois[k, 3]) * spatial_scale - 0.5
        roi_end_h = float(rois[k, 4]) * spatial_scale - 0.5
        roi_w, roi_h = roi_end_w - roi_start_w, roi_end_h - roi_start_h
        bin_h, bin_w = roi_h / ph, roi_w / pw
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw)
        count = max(grid_h * grid_w, 1)
        for i in range(ph):
            for j in range(pw):
                start_w, start_h = roi_start_w, roi_start_h
                if offset is not None:                    # channel 0 moves x, channel 1 y
                    # a zero offset does not move the bin, even where gamma * roi_w is inf
                    dx, dy = float(offset[k, 0, i, j]), float(offset[k, 1, i, j])
                    start_w += gamma * roi_w * dx if dx != 0 else 0.0
                    start_h += gamma * roi_h * dy if dy != 0 else 0.0
                m = 1.0 if mask is None else float(mask[k, 0, i, j])
                if math.isnan(m):                         # a NaN mask leaves the bin out: 0
                    continue
                for iy in range(grid_h):
                    y = start_h + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        yield k, i, j, n, y, x, m, count, roi_h, roi_w


def deform_roi_pool(input, rois, offset=None, output_size=7, spatial_scale=1.0, sampling_ratio=0,
                    gamma=0.1, mask=None):
    """out[k, c, i, j] = mask * (1/count) * sum over the bin's samples of v(input[n, c], y, x)."""
    ph, pw = pair(output_size)
    out = np.zeros((rois.shape[0], input.shape[1], ph, pw), np.float64)
    for k, i, j, n, y, x, m, count, _, _ in _roi_align_samples(
            rois, offset, mask, output_size, spatial_scale, sampling_ratio, gamma):
        for c in range(input.shape[1]):
            out[k, c, i, j] += m * roi_align_point(input[n, c], y, x)[0] / count
    return out.astype(input.dtype)


def deform_roi_pool_backward(grad_output, input, rois, offset=None, output_size=7,
                             spatial_scale=1.0, sampling_ratio=0, gamma=0.1, mask=None):
    grad_input = np.zeros(input.shape, np.float64)
    grad_offset = None if offset is None else np.zeros(offset.shape, np.float64)
    grad_mask = None if mask is None else np.zeros(mask.shape, np.float64)
    for k, i, j, n, y, x, m, count, roi_h, roi_w in _roi_align_samples(
            rois, offset, mask, output_size, spatial_scale, sampling_ratio, gamma):
        for c in range(input.shape[1]):
            g = float(grad_output[k, c, i, j])
            value, dv_dy, dv_dx, weights = roi_align_point(input[n, c], y, x)
            if not weights:                 # read nothing: no gradient (however huge the scale)
                continue
            for (r, s), w in weights:
                grad_input[n, c, r, s] += g * m * w / count
            if offset is not None:          # x = ... + gamma * roi_w * offset[k, 0, i, j]
                grad_offset[k, 0, i, j] += g * m * dv_dx / count * gamma * roi_w
                grad_offset[k, 1, i, j] += g * m * dv_dy / count * gamma * roi_h
            if mask is not None:
                grad_mask[k, 0, i, j] += g * value / count
    dtype = input.dtype

    def cast(a):
        return None if a is None else a.astype(dtype)

    return DeformRoIPoolGrads(cast(grad_input), cast(grad_offset), cast(grad_mask))


# -- deform_psroi_pool ---------------------------------------------------------------------

def c_round(v):
    """C's round(): the nearest integer, halves away from zero (2.5 -> 3, -0.5 -> -1)."""
    return float(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def psroi_point(plane, h, w):
    """MXNet's sample: None when skipped, else (value, dv/dh, dv/dw, [((row, col), weight)])."""
    H, W = plane.shape
    if not (-0.5 <= w <= W - 0.5 and -0.5 <= h <= H - 0.5):
        return None
    if H == 0 or W == 0:                               # counted, but no pixel to read
        return 0.0, 0.0, 0.0, []
    wc, hc = min(max(w, 0.0), W - 1.0), min(max(h, 0.0), H - 1.0)
    x1, x2, y1, y2 = math.floor(wc), math.ceil(wc), math.floor(hc), math.ceil(hc)
    dist_x, dist_y = wc - x1, hc - y1
    v11, v12 = float(plane[y1, x1]), float(plane[y2, x1])
    v21, v22 = float(plane[y1, x2]), float(plane[y2, x2])
    value = ((1 - dist_x) * (1 - dist_y) * v11 + (1 - dist_x) * dist_y * v12
             + dist_x * (1 - dist_y) * v21 + dist_x * dist_y * v22)
    weights = [((y1, x1), (1 - dist_x) * (1 - dist_y)), ((y2, x1), (1 - dist_x) * dist_y),
               ((y1, x2), dist_x * (1 - dist_y)), ((y2, x2), dist_x * dist_y)]
    # right derivatives: inside the cell [floor, floor + 1], 0 where the point was clamped
    dv_dw = dv_dh = 0.0
    if 0.0 <= w < W - 1:
        xf = math.floor(w)
        dv_dw = ((1 - dist_y) * (float(plane[y1, xf + 1]) - float(plane[y1, xf]))
                 + dist_y * (float(plane[y2, xf + 1]) - float(plane[y2, xf])))
    if 0.0 <= h < H - 1:
        yf = math.floor(h)
        dv_dh = ((1 - dist_x) * (float(plane[yf + 1, x1]) - float(plane[yf, x1]))
                 + dist_x * (float(plane[yf + 1, x2]) - float(plane[yf, x2])))
    return value, dv_dh, dv_dw, weights


def _psroi_bins(input, rois, trans, spatial_scale, output_dim, group_size, pooled_size,
                part_size, sample_per_part, trans_std):
    """Yield (k, ctop, i, j, n, c, points, tk, roi_h, roi_w): every output bin, the input
    plane it reads, its sample points [(h, w)] and the trans element pair (cls, pi, pj)
    that moves it (None without trans), as MXNet's kernel computes them."""
    P = pooled_size
    part_size = part_size or pooled_size
    C = input.shape[1]
    output_dim = output_dim or C // group_size ** 2
    num_classes = 1 if trans is None else trans.shape[1] // 2
    channels_each_class = output_dim // num_classes
    for k in range(rois.shape[0]):
        n = int(rois[k, 0])
        roi_start_w = c_round(rois[k, 1]) * spatial_scale - 0.5
        roi_start_h = c_round(rois[k, 2]) * spatial_scale - 0.5
        roi_end_w = (c_round(rois[k, 3]) + 1.0) * spatial_scale - 0.5
        roi_end_h = (c_round(rois[k, 4]) + 1.0) * spatial_scale - 0.5
        roi_w = max(roi_end_w - roi_start_w, 0.1)
        roi_h = max(roi_end_h - roi_start_h, 0.1)
        bin_h, bin_w = roi_h / P, roi_w / P
        sub_h, sub_w = bin_h / sample_per_part, bin_w / sample_per_part
        for ctop in range(output_dim):
            for i in range(P):
                for j in range(P):
                    part_h, part_w = i * part_size // P, j * part_size // P
                    cls = ctop // channels_each_class
                    tk, trans_x, trans_y = None, 0.0, 0.0
                    if trans is not None:
                        tk = (cls, part_h, part_w)
                        trans_x = float(trans[k, 2 * cls, part_h, part_w]) * trans_std
                        trans_y = float(trans[k, 2 * cls + 1, part_h, part_w]) * trans_std
                    wstart = j * bin_w + roi_start_w + trans_x * roi_w
                    hstart = i * bin_h + roi_start_h + trans_y * roi_h
                    gw = min(max(j * group_size // P, 0), group_size - 1)
                    gh = min(max(i * group_size // P, 0), group_size - 1)
                    c = (ctop * group_size + gh) * group_size + gw
                    points = [(hstart + ih * sub_h, wstart + iw * sub_w)
                              for ih in range(sample_per_part) for iw in range(sample_per_part)]
                    yield k, ctop, i, j, n, c, points, tk, roi_h, roi_w


def deform_psroi_pool(input, rois, trans=None, spatial_scale=1.0, output_dim=None, group_size=1,
                      pooled_size=7, part_size=0, sample_per_part=1, trans_std=0.0, no_trans=None):
    """out[k, ctop, i, j] = the mean of the bin's samples that are inside (0 if none)."""
    output_dim = output_dim or input.shape[1] // group_size ** 2
    out = np.zeros((rois.shape[0], output_dim, pooled_size, pooled_size), np.float64)
    for k, ctop, i, j, n, c, points, _, _, _ in _psroi_bins(
            input, rois, trans, spatial_scale, output_dim, group_size, pooled_size, part_size,
            sample_per_part, trans_std):
        samples = [psroi_point(input[n, c], h, w) for h, w in points]
        values = [s[0] for s in samples if s is not None]
        out[k, ctop, i, j] = sum(values) / len(values) if values else 0.0
    return out.astype(input.dtype)


def deform_psroi_pool_backward(grad_output, input, rois, trans=None, spatial_scale=1.0,
                               output_dim=None, group_size=1, pooled_size=7, part_size=0,
                               sample_per_part=1, trans_std=0.0, no_trans=None):
    grad_input = np.zeros(input.shape, np.float64)
    grad_trans = None if trans is None else np.zeros(trans.shape, np.float64)
    for k, ctop, i, j, n, c, points, tk, roi_h, roi_w in _psroi_bins(
            input, rois, trans, spatial_scale, output_dim, group_size, pooled_size, part_size,
            sample_per_part, trans_std):
        samples = [s for s in (psroi_point(input[n, c], h, w) for h, w in points) if s is not None]
        if not samples:
            continue
        g = float(grad_output[k, ctop, i, j]) / len(samples)
        for _, dv_dh, dv_dw, weights in samples:
            for (r, s), w in weights:
                grad_input[n, c, r, s] += g * w
            if tk is not None:          # w = ... + trans_std * trans[k, 2*cls, ...] * roi_w
                cls, part_h, part_w = tk
                grad_trans[k, 2 * cls, part_h, part_w] += g * dv_dw * trans_std * roi_w
                grad_trans[k, 2 * cls + 1, part_h, part_w] += g * dv_dh * trans_std * roi_h
    dtype = input.dtype
    return DeformPSRoIPoolGrads(grad_input.astype(dtype),
                                None if grad_trans is None else grad_trans.astype(dtype))
