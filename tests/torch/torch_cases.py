"""Small float64 problems for every op of the bridge, as torch tensors.

Each case is (name, function of dcn_ref.torch, positional args); the arrays come from the
NumPy cases of the ops' own tests, so offsets stay off the integer kinks where a finite
difference would straddle two cells. Integer pairs are given as tuples, which is what
``op_args`` turns into the lists of the registered ops' schemas.
"""
import numpy as np
import torch

import dcn_ref.torch as dt
from dcn_ref.gradcheck import off_kink
from helpers import deform_case
from roi_cases import psroi_case, roi_case


def tensor(a, requires_grad=True):
    return None if a is None else torch.tensor(a, requires_grad=requires_grad)


def deform_conv2d_args(rng, **kwargs):
    """The positional arguments of deform_conv2d (torchvision's order) for deform_case."""
    inputs, params = deform_case(rng, **kwargs)
    t = {k: tensor(v) for k, v in inputs.items()}
    return (t["input"], t["offset"], t["weight"], t["bias"], params["stride"],
            params["padding"], params["dilation"], t["mask"])


def dcnv3_args(rng, N=1, H=4, W=5, group=2, group_channels=2, kernel=(3, 3), stride=1,
               padding=1, dilation=1, offset_scale=1.0, remove_center=False):
    P = kernel[0] * kernel[1] - int(remove_center)
    out_h = (H + 2 * padding - dilation * (kernel[0] - 1) - 1) // stride + 1
    out_w = (W + 2 * padding - dilation * (kernel[1] - 1) - 1) // stride + 1
    x = rng.standard_normal((N, H, W, group * group_channels))
    offset = off_kink(rng, (N, out_h, out_w, group * P * 2), -1.5, 1.5)
    mask = rng.uniform(0.1, 1.0, (N, out_h, out_w, group * P))
    return (tensor(x), tensor(offset), tensor(mask), kernel, (stride,) * 2, (padding,) * 2,
            (dilation,) * 2, group, offset_scale, remove_center)


def dcnv4_args(rng, N=1, H=4, W=5, group=2, group_channels=2, kernel=(3, 3), padding=1,
               extra=3):
    P = kernel[0] * kernel[1]
    x = rng.standard_normal((N, H, W, group * group_channels))
    block = np.concatenate([off_kink(rng, (N, H, W, group, 2 * P), -1.5, 1.5),
                            rng.uniform(0.1, 1.0, (N, H, W, group, P))], axis=-1)
    offset_mask = np.concatenate([block.reshape(N, H, W, -1),
                                  rng.standard_normal((N, H, W, extra))], axis=-1)
    return (tensor(x), tensor(offset_mask), kernel, (1, 1), (padding,) * 2, (1, 1), group, 1.0,
            False)


def op_args(args):
    """The arguments of a case as the registered op takes them: pairs as lists."""
    return tuple(list(a) if isinstance(a, tuple) else a for a in args)


def cases(seed=0):
    """[(case id, op name, function, args)] for every op of the bridge, the optional tensors
    of the RoI pooling ops also left out."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((2, 4, 5))
    coords = np.stack([off_kink(rng, (2, 6), -1.5, 4.5), off_kink(rng, (2, 6), -1.5, 5.5)], -1)
    x = rng.standard_normal((1, 2, 4, 5))
    offset = off_kink(rng, (1, 4, 4, 5), -1.5, 1.5)
    roi, roi_params = roi_case(rng, N=2, C=2, H=5, W=6, K=2)
    ps, ps_params = psroi_case(rng, N=1, K=2, H=5, W=6)
    plain, plain_params = roi_case(rng, N=1, C=2, H=5, W=6, K=2, offset=False, mask=False)
    ps_plain, ps_plain_params = psroi_case(rng, N=1, K=2, H=5, W=6, trans=False, trans_std=0.0)
    named = [
        ("deform_conv2d", dt.deform_conv2d,
         deform_conv2d_args(rng, N=1, C_in=4, C_out=2, H=4, W=5, G=2, groups=2)),
        ("dcnv3", dt.dcnv3, dcnv3_args(rng)),
        ("dcnv3_stride_2_remove_center_scaled", dt.dcnv3,
         dcnv3_args(rng, H=5, W=5, stride=2, offset_scale=0.5, remove_center=True)),
        ("dcnv4", dt.dcnv4, dcnv4_args(rng)),
        ("bilinear_sample", dt.bilinear_sample, (tensor(image), tensor(coords), "zeros")),
        ("offset_sample", dt.offset_sample, (tensor(x), tensor(offset), "border")),
        ("deform_roi_pool", dt.deform_roi_pool,
         (tensor(roi["input"]), tensor(roi["rois"], False), tensor(roi["offset"]),
          *roi_params.values(), tensor(roi["mask"]))),
        ("deform_psroi_pool", dt.deform_psroi_pool,
         (tensor(ps["input"]), tensor(ps["rois"], False), tensor(ps["trans"]),
          *ps_params.values(), None)),
        ("deform_roi_pool_without_offset_and_mask", dt.deform_roi_pool,
         (tensor(plain["input"]), tensor(plain["rois"], False), None, *plain_params.values(),
          None)),
        ("deform_psroi_pool_without_trans", dt.deform_psroi_pool,
         (tensor(ps_plain["input"]), tensor(ps_plain["rois"], False), None,
          *ps_plain_params.values(), None)),
    ]
    return [(case_id, fn.__name__, fn, args) for case_id, fn, args in named]
