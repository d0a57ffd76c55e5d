"""Random DCNv3/DCNv4 problems with sample points kept off the kinks, and DCNv4's packing
written out from its definition (independently of the ops and the loop reference)."""
import numpy as np

from dcn_ref.gradcheck_cases import dcnv3_offsets


def out_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1


def dcnv3_case(rng, *, N=2, H=5, W=6, group=2, group_channels=3, kernel=(3, 2), stride=(1, 1),
               padding=(1, 1), dilation=(1, 1), offset_scale=1.0, remove_center=False,
               reach=2.5, dtype=np.float64):
    """(inputs {input, offset, mask}, params) for dcnv3; points up to ``reach`` px from
    the grid centre (so some fall outside the image), at least 0.1 px from integers."""
    kh, kw = kernel
    out_h = out_size(H, kh, stride[0], padding[0], dilation[0])
    out_w = out_size(W, kw, stride[1], padding[1], dilation[1])
    P = kh * kw - int(remove_center)
    inputs = {
        "input": rng.standard_normal((N, H, W, group * group_channels)),
        "offset": dcnv3_offsets(rng, N, out_h, out_w, group, kernel, dilation, offset_scale,
                                remove_center, reach),
        "mask": rng.uniform(-1, 1, (N, out_h, out_w, group * P)),
    }
    params = {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation,
              "group": group, "offset_scale": offset_scale, "remove_center": remove_center}
    return {k: v.astype(dtype) for k, v in inputs.items()}, params


def pack(offset, mask, group, extra=0, fill=0.0):
    """DCNv4's offset_mask from DCNv3's pair: per group, its 2P offsets then its P weights,
    then ``extra`` padding entries set to ``fill``."""
    N, out_h, out_w = mask.shape[:3]
    P = mask.shape[3] // group
    blocks = [np.concatenate([offset[..., 2 * P * g: 2 * P * (g + 1)], mask[..., P * g: P * (g + 1)]], -1)
              for g in range(group)]
    padding = np.full((N, out_h, out_w, extra), fill, offset.dtype)
    return np.concatenate(blocks + [padding], -1)


def unpack(offset_mask, group, P):
    """DCNv3's (offset, mask) from DCNv4's packed array (padding dropped)."""
    offset = np.concatenate([offset_mask[..., 3 * P * g: 3 * P * g + 2 * P] for g in range(group)], -1)
    mask = np.concatenate([offset_mask[..., 3 * P * g + 2 * P: 3 * P * (g + 1)] for g in range(group)], -1)
    return offset, mask
