"""Plain torch stand-ins for the modules the bridge's modules replace, written for the tests
from the published descriptions: the parameter names and shapes of InternImage's DCNv3
module and OpenGVLab's DCNv4 module, and a DCNv3/DCNv4 core op computed with
``torch.nn.functional.grid_sample`` (independent of dcn_ref's kernels)."""
import math

import torch
from torch import nn
from torch.nn import functional as F


def dcn_core(x, offset, weights, kernel, stride, pad, dilation, group, offset_scale):
    """sum_p weights[p] * bilinear(x, y_p, x_p) per group, channels last, zero padding.

    x (N, H, W, C); offset (N, Ho, Wo, group*P*2) as (x, y) pairs; weights (N, Ho, Wo,
    group*P). Point p = i*kh + j (kernel column i outer, row j inner) samples
    y = ho*stride - pad + half + (j*dilation - half + dy)*offset_scale, x alike with i.
    """
    N, H, W, C = x.shape
    _, Ho, Wo, _ = offset.shape
    kh = kw = kernel
    P = kh * kw
    half = dilation * (kernel - 1) // 2
    i, j = torch.meshgrid(torch.arange(kw), torch.arange(kh), indexing="ij")   # p = i*kh + j
    grid_x = (i.reshape(-1) * dilation - half).to(x.dtype)                     # (P,)
    grid_y = (j.reshape(-1) * dilation - half).to(x.dtype)
    base_y = (torch.arange(Ho) * stride - pad + half).to(x.dtype).view(1, Ho, 1, 1, 1)
    base_x = (torch.arange(Wo) * stride - pad + half).to(x.dtype).view(1, 1, Wo, 1, 1)
    offset = offset.reshape(N, Ho, Wo, group, P, 2)
    ys = base_y + (grid_y + offset[..., 1]) * offset_scale                    # (N, Ho, Wo, g, P)
    xs = base_x + (grid_x + offset[..., 0]) * offset_scale
    # grid_sample with align_corners=False puts pixel centre k at (2k + 1)/size - 1
    grid = torch.stack([(2 * xs + 1) / W - 1, (2 * ys + 1) / H - 1], dim=-1)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(N * group, Ho, Wo * P, 2)
    planes = x.reshape(N, H, W, group, C // group).permute(0, 3, 4, 1, 2)
    planes = planes.reshape(N * group, C // group, H, W)
    samples = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False).reshape(N, group, C // group, Ho, Wo, P)
    w = weights.reshape(N, Ho, Wo, group, P).permute(0, 3, 1, 2, 4).unsqueeze(2)
    out = (samples * w).sum(-1)                                                # (N, g, Cg, Ho, Wo)
    return out.permute(0, 3, 4, 1, 2).reshape(N, Ho, Wo, C)


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class InternImageDCNv3(nn.Module):
    """InternImage's DCNv3 module (LN, GELU), parameters as named there."""

    def __init__(self, channels, kernel_size=3, stride=1, pad=1, dilation=1, group=4,
                 offset_scale=1.0, center_feature_scale=False):
        super().__init__()
        self.channels, self.kernel_size, self.stride, self.pad = channels, kernel_size, stride, pad
        self.dilation, self.group, self.offset_scale = dilation, group, offset_scale
        self.center_feature_scale = center_feature_scale
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2,
                      groups=channels),
            nn.Sequential(ToChannelsLast(), nn.LayerNorm(channels, eps=1e-6)),
            nn.GELU())
        self.offset = nn.Linear(channels, group * kernel_size ** 2 * 2)
        self.mask = nn.Linear(channels, group * kernel_size ** 2)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))

    def forward(self, input):
        N, H, W, C = input.shape
        x = self.input_proj(input)
        query = self.dw_conv(input.permute(0, 3, 1, 2))
        weights = F.softmax(self.mask(query).reshape(N, H, W, self.group, -1), -1)
        out = dcn_core(x, self.offset(query), weights.reshape(N, H, W, -1), self.kernel_size,
                       self.stride, self.pad, self.dilation, self.group, self.offset_scale)
        if self.center_feature_scale:
            gate = torch.sigmoid(query @ self.center_feature_scale_proj_weight.T
                                 + self.center_feature_scale_proj_bias)
            gate = gate[..., None].expand(N, H, W, self.group, C // self.group).reshape(N, H, W, C)
            out = out * (1 - gate) + x * gate
        return self.output_proj(out)


class OpenGVLabDCNv4(nn.Module):
    """OpenGVLab's DCNv4 module (with a depthwise offset branch), parameters as named there."""

    def __init__(self, channels, kernel_size=3, pad=1, group=4, dw_kernel_size=3):
        super().__init__()
        self.kernel_size, self.pad, self.group = kernel_size, pad, group
        K = group * kernel_size ** 2
        self.offset_mask_dw = nn.Conv2d(channels, channels, dw_kernel_size,
                                        padding=(dw_kernel_size - 1) // 2, groups=channels)
        self.offset_mask = nn.Linear(channels, int(math.ceil(K * 3 / 8) * 8))
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)

    def forward(self, input, shape):
        N, L, C = input.shape
        H, W = shape
        P, g = self.kernel_size ** 2, self.group
        x = self.value_proj(input).reshape(N, H, W, C)
        query = self.offset_mask_dw(input.reshape(N, H, W, C).permute(0, 3, 1, 2))
        packed = self.offset_mask(query.permute(0, 2, 3, 1))[..., :g * P * 3]
        packed = packed.reshape(N, H, W, g, 3 * P)
        offset = packed[..., :2 * P].reshape(N, H, W, -1)
        weights = packed[..., 2 * P:].reshape(N, H, W, -1)
        out = dcn_core(x, offset, weights, self.kernel_size, 1, self.pad, 1, g, 1.0)
        return self.output_proj(out.reshape(N, L, C))
