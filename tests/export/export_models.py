"""The model the export tests export once: every exportable op of dcn_ref.torch, and
the inputs it runs on. Imported by the tests and by the OpenVINO subprocess."""
import torch
from torch import nn

import dcn_ref.torch as dt

#: The outputs of ``Everything``, in order.
OUTPUTS = ("DeformConv2d", "deform_conv2d", "DCNv3", "dcnv3", "DCNv4", "dcnv4",
           "bilinear_sample[zeros]", "bilinear_sample[border]", "offset_sample[border]",
           "offset_sample[zeros]")


class Everything(nn.Module):
    """A DCNv2 layer (offsets and mask from a convolution), a grouped deform_conv2d with two
    offset groups and no bias or mask, the DCNv3 and DCNv4 blocks, dcnv3 and dcnv4 with
    rectangular kernels, strides and remove_center, and the two sampling ops in both
    padding modes."""

    def __init__(self, channels=8):
        super().__init__()
        C = channels
        self.offset_conv = nn.Conv2d(C, 3 * 9, 3, padding=1)
        self.dcn = dt.DeformConv2d(C, C, 3, padding=1)
        self.grouped_weight = nn.Parameter(torch.randn(6, C // 2, 2, 3) * 0.2)
        self.dcnv3_block = dt.DCNv3(C, group=2)
        self.dcnv4_block = dt.DCNv4(C, group=2)
        self.v3_offset = nn.Linear(C, 2 * 8 * 2)             # group 2, P = 8: 3x3 less its centre
        self.v3_mask = nn.Linear(C, 2 * 8)
        self.v4_offset_mask = nn.Linear(C, 2 * 6 * 3 + 4)   # group 2, P = 6 (3x2), 4 padding
        for layer in (self.v3_offset, self.v4_offset_mask, self.offset_conv):
            nn.init.normal_(layer.weight, std=0.5)
        for block in (self.dcnv3_block.offset, self.dcnv4_block.offset_mask):
            nn.init.normal_(block.weight, std=0.3)

    def forward(self, x, coords):
        N, C, H, W = x.shape
        offset_mask = self.offset_conv(x)
        offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
        out = [self.dcn(x, offset, mask)]
        grouped_offset = offset_mask[:, :24, :7, :6] * 2                # 2 offset groups of 2x3
        out.append(dt.deform_conv2d(x, grouped_offset, self.grouped_weight, dilation=(1, 1)))
        last = x.permute(0, 2, 3, 1)                                    # (N, H, W, C)
        out.append(self.dcnv3_block(last))
        v3_off = self.v3_offset(last[:, ::2, ::2])                      # stride 2: (N, 4, 4, ...)
        out.append(dt.dcnv3(last, v3_off, self.v3_mask(last[:, ::2, ::2]).softmax(-1), 3,
                            stride=2, padding=1, group=2, offset_scale=0.5, remove_center=True))
        out.append(self.dcnv4_block(last.reshape(N, H * W, C), (H, W)))
        v4 = self.v4_offset_mask(last[:, :, :7])                        # kernel (3, 2), pad (1, 0)
        out.append(dt.dcnv4(last, v4, (3, 2), padding=(1, 0), group=2))
        image = x[:, 0]
        out.append(dt.bilinear_sample(image, coords, "zeros"))
        out.append(dt.bilinear_sample(image, coords, "border"))
        out.append(dt.offset_sample(x, offset_mask[:, :16] * 3))
        out.append(dt.offset_sample(x, offset_mask[:, :16] * 3, "zeros"))
        return tuple(out)


def make_model():
    torch.manual_seed(0)
    return Everything().eval()


def make_inputs(batch, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, 8, 8, generator=g)
    coords = torch.rand(batch, 12, 2, generator=g) * 11 - 2           # (y, x) in [-2, 9)
    return x, coords
