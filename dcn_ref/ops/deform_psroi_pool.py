"""deform_psroi_pool: deformable position-sensitive RoI pooling (R-FCN), MXNet's
DeformablePSROIPooling."""
from typing import NamedTuple

import numpy as np

from ..geometry import PSRoIPoolGeometry
from ..grads import DeformPSRoIPoolGrads
from ..targets import Call
from . import _args, _rois


class PSRoIPoolArgs(NamedTuple):
    """The checked arguments of a deform_psroi_pool call (arrays on their device)."""
    input: object
    rois: object
    trans: object
    geometry: PSRoIPoolGeometry
    grad_output: object


def _check(input, rois, trans, spatial_scale, output_dim, group_size, pooled_size, part_size,
           sample_per_part, trans_std, no_trans, grad_output=None):
    input = _args.float_array(input, "input", 4, "(N, C, H, W)")
    spatial_scale = _rois.finite_real(spatial_scale, "spatial_scale", positive=True)
    rois, _ = _rois.check_rois(rois, input.shape[0], spatial_scale)
    group_size = _rois.int_in(group_size, "group_size", 1, 2 ** 15)
    pooled_size = _rois.int_in(pooled_size, "pooled_size", 1, 2 ** 15)
    part_size = _rois.int_in(part_size, "part_size", 0, 2 ** 15) or pooled_size
    sample_per_part = _rois.int_in(sample_per_part, "sample_per_part", 1, 2 ** 10)
    trans_std = _rois.finite_real(trans_std, "trans_std")
    K, C = rois.shape[0], input.shape[1]
    groups = group_size * group_size
    if output_dim is None:
        if C % groups:
            raise ValueError(f"input: expected C divisible by group_size**2 = {groups} "
                             f"(C = output_dim * group_size**2), got C = {C}")
        output_dim = C // groups
    output_dim = _rois.int_in(output_dim, "output_dim", 1, 2 ** 31)
    if C != output_dim * groups:
        raise ValueError(f"input: expected C = output_dim * group_size**2 = {output_dim} * "
                         f"{groups} = {output_dim * groups} channels, got {C}")
    if isinstance(no_trans, np.bool_):
        no_trans = bool(no_trans)
    if not (no_trans is None or isinstance(no_trans, bool)):
        raise ValueError(f"no_trans: expected True, False or None, got {no_trans!r}")
    if no_trans is True and trans is not None:
        raise ValueError("trans: expected None with no_trans=True, got an array")
    if no_trans is False and trans is None:
        raise ValueError("trans: expected an array (K, 2*num_classes, part_size, part_size) with "
                         "no_trans=False, got None (pass no_trans=True to pool without offsets)")
    channels_each_class = output_dim
    if trans is not None:
        layout = "(K, 2*num_classes, part_size, part_size)"
        trans = _args.float_array(trans, "trans", 4, layout)
        n_trans = trans.shape[1]
        if n_trans < 2 or n_trans % 2 or output_dim % (n_trans // 2):
            raise ValueError(f"trans: expected 2*num_classes channels with num_classes dividing "
                             f"output_dim = {output_dim}, got {n_trans}")
        _args.expect_shape(trans, "trans", (K, n_trans, part_size, part_size), layout)
        channels_each_class = output_dim // (n_trans // 2)
    if grad_output is not None:
        layout = "(K, output_dim, pooled_size, pooled_size)"
        grad_output = _args.float_array(grad_output, "grad_output", 4, layout)
        _args.expect_shape(grad_output, "grad_output", (K, output_dim, pooled_size, pooled_size),
                           layout)
    _args.same_dtype(input=input, rois=rois, trans=trans, grad_output=grad_output)
    geometry = PSRoIPoolGeometry(
        pooled_size=pooled_size, output_dim=output_dim, group_size=group_size,
        part_size=part_size, sample_per_part=sample_per_part,
        channels_each_class=channels_each_class, spatial_scale=spatial_scale,
        trans_std=trans_std)
    return PSRoIPoolArgs(input, rois, trans, geometry, grad_output)


def deform_psroi_pool(input, rois, trans=None, spatial_scale=1.0, output_dim=None, group_size=1,
                      pooled_size=7, part_size=0, sample_per_part=1, trans_std=0.0, no_trans=None,
                      *, target=None):
    """Deformable position-sensitive RoI pooling: MXNet's DeformablePSROIPooling (R-FCN).

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W)
        ``C = output_dim * group_size**2`` position-sensitive score maps: channel
        ``(ctop*group_size + gi)*group_size + gj`` holds output channel ctop for the bins
        of group (gi, gj).
    rois : ndarray of shape (K, 5)
        Rows (batch_index, x1, y1, x2, y2) in input pixels before ``spatial_scale``; the
        batch index a whole number in [0, N), x2 >= x1, y2 >= y1; K may be 0.
    trans : ndarray of shape (K, 2*num_classes, part_size, part_size) or None
        Normalised offsets; num_classes divides output_dim, and output channel ctop uses
        class ``ctop // (output_dim / num_classes)``. **Channel** ``2*cls`` **is the
        x-shift,** ``2*cls + 1`` **the y-shift** (MXNet's order).
    spatial_scale : float
        Positive.
    output_dim : int or None
        Output channels; None means ``C // group_size**2``.
    group_size : int
        The position-sensitive grid (>= 1): bin (i, j) reads group ``(i*group_size // P,
        j*group_size // P)`` (P = pooled_size).
    pooled_size : int
        P >= 1: the output is P x P bins.
    part_size : int
        The offset grid (>= 0): bin (i, j) uses offset part
        ``(i*part_size // P, j*part_size // P)``; 0 means pooled_size (MXNet's default).
    sample_per_part : int
        Each bin takes ``sample_per_part**2`` samples (>= 1).
    trans_std : float
        The scale of the normalised offsets (MXNet's default 0; R-FCN uses 0.1).
    no_trans : bool or None
        MXNet's flag: True pools without offsets (trans must be None), False requires
        trans; None (the default) follows ``trans is None``.
    target : str or None
        "cpu" or "cuda"; None: "cuda" for CUDA device arrays, else "cpu".

    Returns
    -------
    out : ndarray of shape (K, output_dim, P, P)

    Notes
    -----
    As MXNet computes it (s = spatial_scale, round = C's round, halves away from zero):
    ``x_start = round(x1)*s - 0.5``, ``roi_w = max((round(x2) + 1)*s - 0.5 - x_start,
    0.1)``, ``bin_w = roi_w / P`` (y alike). Bin (i, j) of output channel ctop reads
    input channel ``(ctop*group_size + gi)*group_size + gj`` at the ``sample_per_part**2``
    points

        x = j*bin_w + x_start + trans_std * trans[k, 2*cls, pi, pj] * roi_w + iw * bin_w / sample_per_part

    (y alike with channel ``2*cls + 1``, ih and roi_h): the top-left corners of its sub-bins.
    Samples outside [-0.5, W - 0.5] x [-0.5, H - 0.5] are skipped; the others are clamped
    into the image and interpolated bilinearly; the output is their mean, 0 when none is
    inside. Coordinates are computed in float64, and the bin-to-part map with integer
    division, ``i*part_size // P``: MXNet's float expression ``floor(i / P * part_size)``
    equals it for every pooled_size and part_size up to 21 (in float32 and float64), but
    not always beyond (P = part_size = 22, i = 13 gives 12 in float32).
    """
    call = Call(target, (input, rois, trans))
    args = _check(input, rois, trans, spatial_scale, output_dim, group_size, pooled_size,
                  part_size, sample_per_part, trans_std, no_trans)
    geometry = args.geometry
    be, put = call.backend, call.put
    out = be.empty((args.rois.shape[0], geometry.output_dim, geometry.pooled_size,
                    geometry.pooled_size), args.input.dtype)
    be.deform_psroi_pool(put(args.input), put(args.rois), put(args.trans), geometry, out)
    return call.get(out)


def deform_psroi_pool_backward(grad_output, input, rois, trans=None, spatial_scale=1.0,
                               output_dim=None, group_size=1, pooled_size=7, part_size=0,
                               sample_per_part=1, trans_std=0.0, no_trans=None, *, target=None,
                               deterministic=False):
    """Gradients of a scalar loss with respect to ``input`` and ``trans``.

    Parameters
    ----------
    grad_output : ndarray of shape (K, output_dim, P, P)
    input : ndarray of shape (N, C, H, W)
    rois : ndarray of shape (K, 5)
    trans : ndarray of shape (K, 2*num_classes, part_size, part_size) or None
    spatial_scale : float
    output_dim : int or None
    group_size : int
    pooled_size : int
    part_size : int
    sample_per_part : int
    trans_std : float
    no_trans : bool or None
    target : str or None
        As in ``deform_psroi_pool``.
    deterministic : bool
        On the CUDA target, replace the atomic scatter of the input gradient by a
        fixed-order pass per image plane (bitwise reproducible). The CPU always is.

    Returns
    -------
    DeformPSRoIPoolGrads(input (N, C, H, W), trans ``(K, 2*num_classes, part_size,
    part_size)`` or None). The rois get no gradient.

    Notes
    -----
    Each sample inside gets ``grad_output / count`` (count: the bin's samples inside),
    handed to the four pixels it read. ``d out / d trans[k, 2*cls, pi, pj]`` sums, over
    the output channels of class cls and the bins of part (pi, pj), ``grad_output / count
    * trans_std * roi_w * dv/dx``, where dv/dx is 0 where the sample was clamped and is the
    right derivative at integer x. (MXNet interpolates between floor(x) and ceil(x), so at
    integer x its derivative is 0; elsewhere the two agree.) The count changes only in
    jumps and contributes no gradient term.
    """
    call = Call(target, (grad_output, input, rois, trans))
    args = _check(input, rois, trans, spatial_scale, output_dim, group_size, pooled_size,
                  part_size, sample_per_part, trans_std, no_trans, grad_output)
    be, put = call.backend, call.put
    grad_input = be.zeros(args.input.shape, args.input.dtype)
    grad_trans = None if args.trans is None else be.empty(args.trans.shape, args.input.dtype)
    be.deform_psroi_pool_backward(put(args.grad_output), put(args.input), put(args.rois),
                                  put(args.trans), args.geometry, grad_input, grad_trans,
                                  deterministic)
    return DeformPSRoIPoolGrads(input=call.get(grad_input), trans=call.get(grad_trans))
