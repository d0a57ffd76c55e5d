"""The op families of the fuzz suite: one entry per public op and its backward.

A family says how to draw a valid call of its op (``draw_case``), how to run it forward and
backward, which loop reference it must equal, and which of its arrays hold sample
positions (offsets, coordinates), whose non-finite values must act as far outside. The
properties in ``properties.py`` are written once against this interface, so a new op
(dcnv3, dcnv4, a torch bridge) joins the suite with one ``Family`` entry in ``FAMILIES``.

A case is a dict of the op's keyword arguments (arrays and scalars). Array contents come
from a NumPy generator seeded by Hypothesis, so a failing case replays exactly; sizes,
parameters, dtypes and the mix of hostile values are drawn by Hypothesis itself.
"""
import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import numpy as np
from hypothesis import strategies as st

from dcn_ref import ops, reference, reference_dcnv3, reference_roi


# -- values -----------------------------------------------------------------------------

def far(dtype):
    """A finite offset far outside any image, in ``dtype``."""
    return 1e300 if np.dtype(dtype) == np.float64 else 1e30


def hostile_values(dtype):
    """NaN, +-inf, huge, denormal and signed zeros, representable in ``dtype``."""
    tiny = 5e-324 if np.dtype(dtype) == np.float64 else 1e-45
    big = far(dtype)
    return [np.nan, np.inf, -np.inf, big, -big, 3e9, -3e9, tiny, -tiny, 0.0, -0.0]


@st.composite
def seeds(draw):
    return np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))


def positions(rng, shape, low, high, dtype, hostile):
    """Uniform positions in [low, high), with a ``hostile`` fraction of hostile values."""
    a = rng.uniform(low, high, shape)
    if hostile and a.size:
        picks = rng.random(shape) < hostile
        a[picks] = rng.choice(hostile_values(dtype), size=int(picks.sum()))
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def data(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# -- the families ------------------------------------------------------------------------

class Grads(NamedTuple):
    """The gradients of a family without a NamedTuple of its own (im2col)."""
    input: object


@dataclasses.dataclass
class Family:
    """One op and its backward, as the properties see them.

    name         the op's name (and the child process's argument)
    draw_case    ``draw_case(draw, dtype, hostile)`` -> dict of keyword arguments; hostile
                 in [0, 1] is the fraction of hostile values in the position arrays (and of
                 NaN and zero masks); from EXTREME on, the scalars may be extreme too
    forward      ``forward(**case)`` -> ndarray
    backward     ``backward(grad_output, **case)`` -> NamedTuple of gradients named after
                 the inputs (None for an input that was not given)
    reference    the loop versions (float64), same signatures; None: no loop reference
    positions    names of the arrays whose values are sample positions
    far_ok       ``far_ok(case)``: whether replacing a non-finite position by a far one must
                 give the same result (False where the op scales positions by zero)
    nan_is_far   whether a NaN position acts as far outside (False for "border" padding,
                 where +-inf lands on the edge but NaN reads nothing)
    """
    name: str
    draw_case: Callable
    forward: Callable
    backward: Callable
    reference: Optional[tuple] = None
    positions: tuple = ()
    far_ok: Callable = lambda case: True
    nan_is_far: Callable = lambda case: True


#: From this hostile fraction on, scalars may be extreme (the reference property stays below:
#: where a true gradient overflows, the loops and the kernels may overflow differently).
EXTREME = 0.5


def extreme(draw, hostile, usual, wild):
    """One of ``usual``, or from EXTREME on one of ``usual + wild`` (huge, tiny scales)."""
    return draw(st.sampled_from(list(usual) + (list(wild) if hostile >= EXTREME else [])))


def masks(rng, shape, dtype, hostile):
    """Mask values in [-1, 1): a ``hostile`` fraction NaN or exactly 0, half and half."""
    m = rng.uniform(-1.0, 1.0, shape)
    if hostile and m.size:
        u = rng.random(shape)
        m[u < hostile / 2] = np.nan
        m[(u >= hostile / 2) & (u < hostile)] = 0.0
    return m.astype(dtype)


def _small(draw, low=0, high=3):
    """An int in [low, high]; with low = 0, zero (an empty dimension) one time in ten or so,
    so that most cases have something to compute."""
    if low == 0 and draw(st.integers(0, 9)) > 0:
        low = 1
    return draw(st.integers(low, max(low, high)))


# bilinear_sample -----------------------------------------------------------------------

def draw_bilinear(draw, dtype, hostile):
    rng = draw(seeds())
    B, H, W, P = _small(draw), _small(draw, 0, 4), _small(draw, 0, 4), _small(draw, 0, 5)
    return {"image": data(rng, (B, H, W), dtype),
            "coords": positions(rng, (B, P, 2), -2.0, max(H, W) + 1.0, dtype, hostile),
            "padding_mode": draw(st.sampled_from(["zeros", "border"]))}


# offset_sample --------------------------------------------------------------------------

def draw_offset_sample(draw, dtype, hostile):
    rng = draw(seeds())
    N, C, H, W = _small(draw), _small(draw), _small(draw, 0, 4), _small(draw, 0, 4)
    return {"input": data(rng, (N, C, H, W), dtype),
            "offset": positions(rng, (N, 2 * C, H, W), -2.0, 2.0, dtype, hostile),
            "padding_mode": draw(st.sampled_from(["zeros", "border"]))}


def _border(case):
    return case.get("padding_mode") != "border"


# conv2d and deform_conv2d ----------------------------------------------------------------

def _conv_geometry(draw):
    """(kh, kw, stride, padding, dilation, H, W) with a non-empty output."""
    kh, kw = _small(draw, 1, 3), _small(draw, 1, 3)
    stride = tuple(draw(st.sampled_from([1, 2, 3, 2 ** 31 - 1])) for _ in range(2))
    padding = (_small(draw, 0, 2), _small(draw, 0, 2))
    dilation = (_small(draw, 1, 2), _small(draw, 1, 2))
    H = max(0, dilation[0] * (kh - 1) + 1 - 2 * padding[0]) + _small(draw, 0, 3)
    W = max(0, dilation[1] * (kw - 1) + 1 - 2 * padding[1]) + _small(draw, 0, 3)
    return kh, kw, stride, padding, dilation, H, W


def _out(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def draw_conv2d(draw, dtype, hostile):
    rng = draw(seeds())
    kh, kw, stride, padding, dilation, H, W = _conv_geometry(draw)
    groups = _small(draw, 1, 2)
    N, C_in, C_out = _small(draw), groups * _small(draw, 1, 2), groups * _small(draw, 1, 2)
    return {"input": data(rng, (N, C_in, H, W), dtype),
            "weight": data(rng, (C_out, C_in // groups, kh, kw), dtype),
            "bias": data(rng, (C_out,), dtype) if draw(st.booleans()) else None,
            "stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def draw_deform_conv2d(draw, dtype, hostile):
    rng = draw(seeds())
    kh, kw, stride, padding, dilation, H, W = _conv_geometry(draw)
    G, groups = _small(draw, 1, 2), _small(draw, 1, 2)
    N = _small(draw)
    C_in, C_out = math.lcm(G, groups) * _small(draw, 1, 2), groups * _small(draw, 1, 2)
    out_h, out_w = _out(H, kh, stride[0], padding[0], dilation[0]), _out(W, kw, stride[1], padding[1], dilation[1])
    K = kh * kw
    mask = masks(rng, (N, G * K, out_h, out_w), dtype, hostile) if draw(st.booleans()) else None
    return {"input": data(rng, (N, C_in, H, W), dtype),
            "offset": positions(rng, (N, 2 * G * K, out_h, out_w), -2.0, 2.0, dtype, hostile),
            "weight": data(rng, (C_out, C_in // groups, kh, kw), dtype),
            "bias": data(rng, (C_out,), dtype) if draw(st.booleans()) else None,
            "stride": stride, "padding": padding, "dilation": dilation, "mask": mask}


# deform_roi_pool and deform_psroi_pool ---------------------------------------------------

def _rois(draw, rng, K, N, H, W, scale, dtype):
    """(K, 5) RoIs that may stick out of the image; some of zero width or height. In image
    pixels (before ``scale``) for a usual scale; as they are for an extreme one, which then
    shrinks them to a point or blows them up far beyond the image."""
    x1 = rng.uniform(-2.0, W + 1.0, K)
    y1 = rng.uniform(-2.0, H + 1.0, K)
    size = rng.uniform(0.0, max(H, W, 1) * 1.2, (K, 2))
    if draw(st.booleans()):
        size[rng.random((K, 2)) < 0.3] = 0.0
    boxes = np.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], axis=1)
    if 1e-3 <= scale <= 1e3:
        boxes /= scale
    index = rng.integers(0, max(N, 1), (K, 1))
    return np.concatenate([index, boxes], axis=1).astype(dtype)


def draw_roi_pool(draw, dtype, hostile):
    rng = draw(seeds())
    N, C, H, W = _small(draw, 1, 2), _small(draw, 0, 2), _small(draw, 0, 4), _small(draw, 0, 4)
    K = _small(draw, 0, 3)
    ph, pw = _small(draw, 1, 2), _small(draw, 1, 3)
    scale = extreme(draw, hostile, [1.0, 0.5, 2.0], [1e-300, 1e200])
    offset = positions(rng, (K, 2, ph, pw), -1.0, 1.0, dtype, hostile) if draw(st.booleans()) else None
    mask = masks(rng, (K, 1, ph, pw), dtype, hostile) if draw(st.booleans()) else None
    return {"input": data(rng, (N, C, H, W), dtype),
            "rois": _rois(draw, rng, K, N, H, W, scale, dtype),
            "offset": offset, "output_size": (ph, pw), "spatial_scale": scale,
            # (an extreme scale makes the adaptive grid of a RoI huge: refused, not valid)
            "sampling_ratio": draw(st.integers(0 if 1e-3 <= scale <= 1e3 else 1, 3)),
            "gamma": extreme(draw, hostile, [0.1, 1.0, -0.5, 0.0, 1e6], [1e308, -1e308, 5e-324]),
            "mask": mask}


def roi_far_ok(case):
    """A far offset moves a bin far only when gamma * roi size is not 0 (or tiny)."""
    rois = np.asarray(case["rois"], np.float64) * case["spatial_scale"]
    sizes = np.concatenate([rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]])
    return abs(case["gamma"]) >= 1e-3 and bool((sizes >= 1e-3).all())


def draw_psroi_pool(draw, dtype, hostile):
    rng = draw(seeds())
    group_size, pooled_size = _small(draw, 1, 2), _small(draw, 1, 3)
    output_dim = _small(draw, 1, 2)
    N, H, W, K = _small(draw, 1, 2), _small(draw, 0, 4), _small(draw, 0, 4), _small(draw, 0, 3)
    part_size = draw(st.sampled_from([0, 1, 2]))
    parts = part_size or pooled_size
    num_classes = draw(st.sampled_from([c for c in (1, 2) if output_dim % c == 0]))
    scale = extreme(draw, hostile, [1.0, 0.5], [1e-300, 1e200])
    trans = None
    if draw(st.booleans()):
        trans = positions(rng, (K, 2 * num_classes, parts, parts), -1.0, 1.0, dtype, hostile)
    return {"input": data(rng, (N, output_dim * group_size ** 2, H, W), dtype),
            "rois": _rois(draw, rng, K, N, H, W, scale, dtype), "trans": trans,
            "spatial_scale": scale, "output_dim": output_dim, "group_size": group_size,
            "pooled_size": pooled_size, "part_size": part_size,
            "sample_per_part": _small(draw, 1, 3),
            "trans_std": extreme(draw, hostile, [0.1, 1.0, -0.5, 0.0], [1e308, -1e308, 5e-324])}


def psroi_far_ok(case):
    return abs(case["trans_std"]) >= 1e-3


# im2col / col2im ------------------------------------------------------------------------

def draw_im2col(draw, dtype, hostile):
    rng = draw(seeds())
    kh, kw, stride, padding, dilation, H, W = _conv_geometry(draw)
    N, C = _small(draw), _small(draw)
    return {"input": data(rng, (N, C, H, W), dtype), "kernel_size": (kh, kw),
            "stride": stride, "padding": padding, "dilation": dilation}


def col2im_of(grad_output, input, **params):
    """im2col's backward: col2im of the columns' gradient, ``grad_output``."""
    ops.im2col(input, **params)                  # checks input and the parameters
    try:
        return Grads(ops.col2im(grad_output, np.shape(input), **params))
    except ValueError as exc:                    # col2im calls grad_output "columns"
        raise ValueError(str(exc).replace("columns:", "grad_output:", 1)) from None


def col2im_loops(grad_output, input, **params):
    """The adjoint of ``reference.im2col``, column by column: sum_e grad[e] * d cols[e] / d x."""
    grad = np.zeros(input.shape, np.float64)
    flat = grad.reshape(-1)
    for p in range(flat.size):
        unit = np.zeros(input.shape, np.float64)
        unit.reshape(-1)[p] = 1.0
        flat[p] = np.sum(reference.im2col(unit, **params) * grad_output)
    return Grads(grad.astype(input.dtype))


# dcnv3 and dcnv4 (channels last) ----------------------------------------------------------

def _dcnv3_geometry(draw):
    """(kernel_size, stride, padding, dilation, group, Cg, remove_center, H, W, out_h, out_w, P)."""
    remove_center = draw(st.booleans())
    if remove_center:
        kh, kw = draw(st.sampled_from([(1, 3), (3, 1), (3, 3)]))
    else:
        kh, kw = _small(draw, 1, 3), _small(draw, 1, 3)
    stride = (_small(draw, 1, 2), _small(draw, 1, 2))
    padding = (_small(draw, 0, 2), _small(draw, 0, 2))
    dilation = (_small(draw, 1, 2), _small(draw, 1, 2))
    H = max(0, dilation[0] * (kh - 1) + 1 - 2 * padding[0]) + _small(draw, 0, 2)
    W = max(0, dilation[1] * (kw - 1) + 1 - 2 * padding[1]) + _small(draw, 0, 2)
    group = _small(draw, 1, 2)
    # few channels a group, or enough for the CPU kernels' eight-channel lanes and a remainder
    Cg = _small(draw, 0, 2) if draw(st.booleans()) else draw(st.integers(8, 11))
    out_h, out_w = _out(H, kh, stride[0], padding[0], dilation[0]), _out(W, kw, stride[1], padding[1], dilation[1])
    return ((kh, kw), stride, padding, dilation, group, Cg, remove_center, H, W, out_h, out_w,
            kh * kw - int(remove_center))


def _dcnv3_case(draw, dtype, hostile):
    rng = draw(seeds())
    (kernel_size, stride, padding, dilation, group, Cg, remove_center, H, W, out_h, out_w,
     P) = _dcnv3_geometry(draw)
    N = _small(draw, 0, 2)
    case = {"input": data(rng, (N, H, W, group * Cg), dtype),
            "offset": positions(rng, (N, out_h, out_w, group * P * 2), -2.0, 2.0, dtype, hostile),
            "mask": masks(rng, (N, out_h, out_w, group * P), dtype, hostile), "kernel_size": kernel_size, "stride": stride,
            "padding": padding, "dilation": dilation, "group": group,
            "offset_scale": extreme(draw, hostile, [1.0, 0.5, 2.0, -1.0], [1e308, 5e-324, 0.0]),
            "remove_center": remove_center}
    return case, P, rng


def draw_dcnv3(draw, dtype, hostile):
    return _dcnv3_case(draw, dtype, hostile)[0]


def draw_dcnv4(draw, dtype, hostile):
    case, P, rng = _dcnv3_case(draw, dtype, hostile)
    group = case["group"]
    D = group * P * 3 + _small(draw, 0, 3)        # padding entries, ignored
    packed = reference_dcnv3.pack_offset_mask(case.pop("offset"), case.pop("mask"), group, P, D)
    packed[..., group * P * 3:] = positions(rng, packed[..., group * P * 3:].shape, -9.0, 9.0,
                                            dtype, hostile)
    case["offset_mask"] = packed
    return {k: case[k] for k in ["input", "offset_mask", "kernel_size", "stride", "padding",
                                 "dilation", "group", "offset_scale", "remove_center"]}


def dcnv3_far_ok(case):
    return abs(case["offset_scale"]) >= 1e-3


# -- the table ----------------------------------------------------------------------------

FAMILIES = {f.name: f for f in [
    Family("bilinear_sample", draw_bilinear, ops.bilinear_sample, ops.bilinear_sample_backward,
           (reference.bilinear_sample, reference.bilinear_sample_backward), ("coords",),
           nan_is_far=_border),
    Family("offset_sample", draw_offset_sample, ops.offset_sample, ops.offset_sample_backward,
           (reference.offset_sample, reference.offset_sample_backward), ("offset",),
           nan_is_far=_border),
    Family("conv2d", draw_conv2d, ops.conv2d, ops.conv2d_backward,
           (reference.conv2d, reference.conv2d_backward)),
    Family("deform_conv2d", draw_deform_conv2d, ops.deform_conv2d, ops.deform_conv2d_backward,
           (reference.deform_conv2d, reference.deform_conv2d_backward), ("offset",)),
    Family("deform_roi_pool", draw_roi_pool, ops.deform_roi_pool, ops.deform_roi_pool_backward,
           (reference_roi.deform_roi_pool, reference_roi.deform_roi_pool_backward), ("offset",),
           far_ok=roi_far_ok),
    Family("deform_psroi_pool", draw_psroi_pool, ops.deform_psroi_pool,
           ops.deform_psroi_pool_backward,
           (reference_roi.deform_psroi_pool, reference_roi.deform_psroi_pool_backward), ("trans",),
           far_ok=psroi_far_ok),
    Family("im2col", draw_im2col, ops.im2col, col2im_of, (reference.im2col, col2im_loops)),
    Family("dcnv3", draw_dcnv3, ops.dcnv3, ops.dcnv3_backward,
           (reference_dcnv3.dcnv3, reference_dcnv3.dcnv3_backward), ("offset",),
           far_ok=dcnv3_far_ok),
    # offset_mask mixes positions and weights (a NaN weight is not a far one), so the
    # far-outside property is dcnv3's; the rest runs on the packed layout
    Family("dcnv4", draw_dcnv4, ops.dcnv4, ops.dcnv4_backward,
           (reference_dcnv3.dcnv4, reference_dcnv3.dcnv4_backward)),
]}

# New ops join here: a draw function, the op and its backward, the loop reference and the
# names of its position arrays. A torch bridge is a Family whose forward and backward go
# through torch and whose reference is the NumPy op.
