"""deform_roi_pool: deformable RoI pooling (Dai et al. 2017), mmcv's DeformRoIPool."""
import math
from typing import NamedTuple

import numpy as np

from ..geometry import RoIPoolGeometry
from ..grads import DeformRoIPoolGrads
from ..targets import Call
from . import _args, _rois


class RoIPoolArgs(NamedTuple):
    """The checked arguments of a deform_roi_pool call (arrays on their device)."""
    input: object
    rois: object
    offset: object
    mask: object
    geometry: RoIPoolGeometry
    grad_output: object


def _check(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, mask,
           grad_output=None):
    input = _args.float_array(input, "input", 4, "(N, C, H, W)")
    spatial_scale = _rois.finite_real(spatial_scale, "spatial_scale", positive=True)
    rois, host = _rois.check_rois(rois, input.shape[0], spatial_scale)
    pooled_h, pooled_w = _args.pair(output_size, "output_size", 1, 2 ** 24)
    max_ratio = math.isqrt(_rois.MAX_SAMPLES_PER_BIN)
    sampling_ratio = _rois.int_in(sampling_ratio, "sampling_ratio", 0, max_ratio)
    gamma = _rois.finite_real(gamma, "gamma")
    K, C = rois.shape[0], input.shape[1]
    if offset is not None:
        offset = _args.float_array(offset, "offset", 4, "(K, 2, ph, pw)")
        _args.expect_shape(offset, "offset", (K, 2, pooled_h, pooled_w),
                           "(K, 2, ph, pw): channel 0 = x-shift, 1 = y-shift")
    if mask is not None:
        mask = _args.float_array(mask, "mask", 4, "(K, 1, ph, pw)")
        _args.expect_shape(mask, "mask", (K, 1, pooled_h, pooled_w), "(K, 1, ph, pw)")
    if grad_output is not None:
        grad_output = _args.float_array(grad_output, "grad_output", 4, "(K, C, ph, pw)")
        _args.expect_shape(grad_output, "grad_output", (K, C, pooled_h, pooled_w), "(K, C, ph, pw)")
    _args.same_dtype(input=input, rois=rois, offset=offset, mask=mask, grad_output=grad_output)
    # the sampling grid of each RoI, computed as the kernels do, to bound it
    # (a RoI from -1e308 to 1e308 overflows to an infinite width: an infinite grid, refused)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = host[:, 1:] * spatial_scale - 0.5
        roi_w, roi_h = scaled[:, 2] - scaled[:, 0], scaled[:, 3] - scaled[:, 1]
        if sampling_ratio > 0:
            samples = np.full(K, float(sampling_ratio ** 2))
        else:
            samples = np.ceil(roi_h / pooled_h) * np.ceil(roi_w / pooled_w)
    for r in np.flatnonzero(~(samples <= _rois.MAX_SAMPLES_PER_BIN))[:1]:
        count = f"{int(samples[r])}" if samples[r] < 1e18 else f"{samples[r]:.4g}"
        raise ValueError(f"rois: expected at most {_rois.MAX_SAMPLES_PER_BIN} samples a bin, got "
                         f"row {r} = {host[r].tolist()} (times spatial_scale = {spatial_scale!r}), "
                         f"whose adaptive grid (sampling_ratio=0) has {count}; pass a "
                         f"positive sampling_ratio")
    geometry = RoIPoolGeometry(
        pooled_h=pooled_h, pooled_w=pooled_w, spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio, gamma=gamma,
        max_bin_samples=int(max(1.0, samples.max(initial=1.0))))
    return RoIPoolArgs(input, rois, offset, mask, geometry, grad_output)


def deform_roi_pool(input, rois, offset=None, output_size=7, spatial_scale=1.0, sampling_ratio=0,
                    gamma=0.1, mask=None, *, target=None):
    """Deformable RoI pooling: mmcv's DeformRoIPool (with ``mask``, ModulatedDeformRoIPool).

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W)
    rois : ndarray of shape (K, 5)
        Rows (batch_index, x1, y1, x2, y2) in input pixels *before* ``spatial_scale``
        (e.g. image pixels for a feature map of stride 16 and ``spatial_scale = 1/16``). The
        batch index must be a whole number in [0, N); x2 >= x1, y2 >= y1; K may be 0.
    offset : ndarray of shape (K, 2, ph, pw) or None
        Normalised bin offsets. **Channel 0 is the x-shift, channel 1 the y-shift** (mmcv's
        order; the other ops of dcn_ref put y first): bin (i, j) of RoI k moves by
        ``gamma * roi_w * offset[k, 0, i, j]`` pixels in x and ``gamma * roi_h *
        offset[k, 1, i, j]`` in y. None: no offsets (``torchvision.ops.roi_align``).
    output_size : int or (ph, pw)
    spatial_scale : float
        Positive.
    sampling_ratio : int
        Each bin averages sampling_ratio x sampling_ratio samples; 0 means
        ``ceil(roi_h / ph)`` x ``ceil(roi_w / pw)`` (adaptive, per RoI).
    gamma : float
        The scale of the normalised offsets (0.1 in the paper and in mmcv).
    mask : ndarray of shape (K, 1, ph, pw) or None
        Multiplies each bin (ModulatedDeformRoIPool: ``deform_roi_pool(...) * mask``). A
        NaN value makes its bin 0, with zero gradients from it.
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (K, C, ph, pw)

    Notes
    -----
    RoI k, scaled and shifted by half a pixel (roi_align's ``aligned=True``), spans
    ``x in [x1*s - 0.5, x2*s - 0.5]``, ``y in [y1*s - 0.5, y2*s - 0.5]``. Bin (i, j) is
    ``bin_h = roi_h / ph`` by ``bin_w = roi_w / pw``; its samples sit at the centres of a
    grid_h x grid_w sub-grid of the moved bin,
    ``y = y1*s - 0.5 + dy + i*bin_h + (iy + 0.5) * bin_h / grid_h`` (x alike), and

        out[k, c, i, j] = mask[k, 0, i, j] * sum_{iy, ix} v(y, x) / max(grid_h * grid_w, 1)

    with roi_align's bilinear rule v: 0 for a sample with y < -1, y > H, x < -1 or x > W,
    else the image value at the point clamped into [0, H-1] x [0, W-1]. Without offset
    and mask this is ``torchvision.ops.roi_align(input, rois, output_size, spatial_scale,
    sampling_ratio, aligned=True)``. Coordinates are computed in float64.
    """
    call = Call(target, (input, rois, offset, mask))
    args = _check(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, mask)
    geometry = args.geometry
    be, put = call.backend, call.put
    out = be.empty((args.rois.shape[0], args.input.shape[1], geometry.pooled_h, geometry.pooled_w),
                   args.input.dtype)
    be.deform_roi_pool(put(args.input), put(args.rois), put(args.offset), put(args.mask),
                       geometry, out)
    return call.get(out)


def deform_roi_pool_backward(grad_output, input, rois, offset=None, output_size=7,
                             spatial_scale=1.0, sampling_ratio=0, gamma=0.1, mask=None, *,
                             target=None, deterministic=False):
    """Gradients of a scalar loss with respect to ``input``, ``offset`` and ``mask``.

    Parameters
    ----------
    grad_output : ndarray of shape (K, C, ph, pw)
        d loss / d out.
    input : ndarray of shape (N, C, H, W)
    rois : ndarray of shape (K, 5)
    offset : ndarray of shape (K, 2, ph, pw) or None
    output_size : int or (ph, pw)
    spatial_scale : float
    sampling_ratio : int
    gamma : float
    mask : ndarray of shape (K, 1, ph, pw) or None
    target : str or None
        As in ``deform_roi_pool``.
    deterministic : bool
        On the CUDA target, replace the atomic scatter of the input gradient by a
        fixed-order pass per image plane, so that two runs are bitwise equal. The CPU is
        always deterministic.

    Returns
    -------
    DeformRoIPoolGrads(input (N, C, H, W), offset (K, 2, ph, pw) or None, mask (K, 1, ph, pw)
    or None). The rois get no gradient.

    Notes
    -----
    With ``w = mask / max(grid_h * grid_w, 1)`` the weight of each sample in its bin:

    - input: every sample hands ``w * grad_output[k, c, i, j]`` to the four pixels it
      read, times their bilinear weights;
    - offset: ``d out / d offset[k, 0, i, j] = w * gamma * roi_w * sum_samples dv/dx``
      (summed over channels with grad_output), channel 1 alike with ``roi_h`` and dv/dy;
      dv/dx is 0 where the sample was clamped (x < 0 or x >= W - 1) or is outside, and is
      the right derivative at integer x;
    - mask: ``sum_samples v / max(grid_h * grid_w, 1)``, the unmasked bin value.

    mmcv's kernel differs in one place: for a sample in [-1, 0) it returns the slope of
    the cell [0, 1] as the offset gradient, although clamping makes the output flat there;
    this op returns the true derivative, 0.
    """
    call = Call(target, (grad_output, input, rois, offset, mask))
    args = _check(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, mask,
                  grad_output)
    be, put = call.backend, call.put
    dtype = args.input.dtype
    grad_input = be.zeros(args.input.shape, dtype)
    grad_offset = None if args.offset is None else be.empty(args.offset.shape, dtype)
    grad_mask = None if args.mask is None else be.empty(args.mask.shape, dtype)
    be.deform_roi_pool_backward(put(args.grad_output), put(args.input), put(args.rois),
                                put(args.offset), put(args.mask), args.geometry, grad_input,
                                grad_offset, grad_mask, deterministic)
    return DeformRoIPoolGrads(input=call.get(grad_input), offset=call.get(grad_offset),
                              mask=call.get(grad_mask))
