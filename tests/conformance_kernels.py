"""Deformable convolutions with torchvision's signature, written here from the equation
(NumPy, nothing from dcn_ref), each with one deliberate mistake, for the conformance tests:

    correct                  the contract's rule (the control)
    swapped                  reads the offset pairs as (dx, dy)
    clamped                  clamps every sample point into the image (replicated border)
    dilation_ignored         samples the taps one pixel apart whatever the dilation
    crashes_on_nan_float64   correct, but ends its process on a float64 NaN offset

Each takes and returns torch tensors; none has gradients.
"""
import os
import signal

import numpy as np
import torch


def _bilinear(image, y, x, clamp):
    """image (N, C, H, W), y and x (N, H_out, W_out) -> (N, C, H_out, W_out), zero outside
    (or, with clamp, the point moved onto the nearest pixel of the image first)."""
    N, C, H, W = image.shape
    if clamp:
        y, x = np.clip(y, 0, H - 1), np.clip(x, 0, W - 1)
    out = np.zeros((N, C) + y.shape[1:])
    valid = (y > -1) & (y < H) & (x > -1) & (x < W)          # False for NaN
    y, x = np.where(valid, y, -2), np.where(valid, x, -2)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    n = np.arange(N)[:, None, None]
    for dy in (0, 1):
        for dx in (0, 1):
            r, c = y0 + dy, x0 + dx
            weight = (1 - abs(y - r)) * (1 - abs(x - c)) * valid
            inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
            pixel = image[n, :, np.clip(r, 0, H - 1), np.clip(c, 0, W - 1)]   # (N, Ho, Wo, C)
            out += np.moveaxis(pixel * (weight * inside)[..., None], -1, 1)
    return out


def _deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask, swap=False,
                   clamp=False, ignore_dilation=False):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, (1, 1) if ignore_dilation else dilation
    N, C, H, W = input.shape
    C_out, C_per_group, kh, kw = weight.shape
    K, (out_h, out_w) = kh * kw, offset.shape[2:]
    G = offset.shape[1] // (2 * K)
    columns = np.zeros((N, C, K, out_h, out_w))
    for k in range(K):
        i, j = divmod(k, kw)
        grid_y = np.arange(out_h)[:, None] * sh - ph + i * dh
        grid_x = np.arange(out_w)[None, :] * sw - pw + j * dw
        for g in range(G):
            dy, dx = offset[:, 2 * (g * K + k)], offset[:, 2 * (g * K + k) + 1]
            if swap:
                dy, dx = dx, dy
            with np.errstate(invalid="ignore"):
                taps = _bilinear(input[:, g * C // G:(g + 1) * C // G], grid_y + dy, grid_x + dx,
                                 clamp)
            if mask is not None:
                m = mask[:, g * K + k]
                taps = taps * np.where(np.isnan(m), 0, m)[:, None]
            columns[:, g * C // G:(g + 1) * C // G, k] = taps
    groups = C // C_per_group
    columns = columns.reshape(N, groups, C_per_group * K, out_h * out_w)
    w = weight.reshape(groups, C_out // groups, C_per_group * K)
    out = np.einsum("gok,ngkl->ngol", w, columns).reshape(N, C_out, out_h, out_w)
    return out if bias is None else out + bias[None, :, None, None]


def _with_torch(swap=False, clamp=False, ignore_dilation=False):
    def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), mask=None):
        arrays = [None if t is None else t.detach().double().numpy()
                  for t in (input, offset, weight, bias, mask)]
        out = _deform_conv2d(*arrays[:4], stride, padding, dilation, arrays[4], swap, clamp,
                             ignore_dilation)
        return torch.from_numpy(out).to(input.dtype)
    return deform_conv2d


correct = _with_torch()
swapped = _with_torch(swap=True)
clamped = _with_torch(clamp=True)
dilation_ignored = _with_torch(ignore_dilation=True)


def crashes_on_nan_float64(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0),
                           dilation=(1, 1), mask=None):
    if input.dtype == torch.float64 and torch.isnan(offset).any():
        os.kill(os.getpid(), signal.SIGSEGV)       # what an out-of-bounds read would do
    return correct(input, offset, weight, bias, stride, padding, dilation, mask)
