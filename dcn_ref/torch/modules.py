"""Drop-in ``torch.nn`` modules around the bridge's ops.

Each module has the constructor arguments, parameter names and shapes of the module it
stands in for, so that a ``state_dict`` saved from that module loads with ``strict=True``:

    DeformConv2d   torchvision.ops.DeformConv2d
    DCNv3          InternImage's DCNv3 module (ops_dcnv3/modules/dcnv3.py), channels last
    DCNv4          OpenGVLab's DCNv4 module (DCNv4_op/DCNv4/modules/dcnv4.py), (N, L, C)

The arithmetic around the deformable op (projections, depthwise convolution, layer norm,
softmax of the DCNv3 weights) is ordinary torch; the op itself is dcn_ref's. Every module
compiles with TorchScript (``torch.jit.script``): the switches that decide which
parameters exist are ``Final``, so that TorchScript compiles only the branches a module
has. ``DeformConv2d`` and ``DCNv3`` also trace with ``torch.fx`` (``DCNv4`` computes the
image size from its input's length, which symbolic tracing cannot).
"""
import math
from typing import Final, Optional, Tuple

import torch
from torch import Tensor
from torch import nn
from torch.nn import functional as F

from ..ops._args import pair
from .functional import dcnv3, dcnv4, deform_conv2d


class DeformConv2d(nn.Module):
    """``torchvision.ops.DeformConv2d`` computed by dcn_ref.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
        Channel groups of the weight; ``in_channels`` must be a multiple.
    bias : bool

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels // groups, kh, kw)
    bias : Parameter of shape (out_channels,) or None

    Notes
    -----
    ``forward(input, offset, mask=None)`` takes input (N, in_channels, H, W), offset
    ``(N, 2*G*kh*kw, H_out, W_out)`` and the optional DCNv2 mask ``(N, G*kh*kw, H_out, W_out)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"groups: expected a divisor of in_channels = {in_channels}, "
                             f"got {groups}")
        if out_channels % groups:
            raise ValueError(f"groups: expected a divisor of out_channels = {out_channels}, "
                             f"got {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """torch.nn.Conv2d's initialisation (as torchvision's DeformConv2d)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class _ChannelsLast(nn.Module):
    """(N, C, H, W) -> (N, H, W, C), a parameter-free step (keeps the state_dict indices)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def _norm(channels, norm_layer):
    """The DCNv3 offset branch's norm, from channels first to channels last."""
    if norm_layer == "LN":
        return nn.Sequential(_ChannelsLast(), nn.LayerNorm(channels, eps=1e-6))
    if norm_layer == "BN":
        return nn.Sequential(nn.BatchNorm2d(channels), _ChannelsLast())
    raise ValueError(f"norm_layer: expected 'LN' or 'BN', got {norm_layer!r}")


def _activation(act_layer):
    layers = {"GELU": nn.GELU, "ReLU": nn.ReLU, "SiLU": nn.SiLU}
    if act_layer not in layers:
        raise ValueError(f"act_layer: expected one of {sorted(layers)}, got {act_layer!r}")
    return layers[act_layer]()


def _check_group(channels, group):
    if group < 1 or channels % group:
        raise ValueError(f"group: expected a positive divisor of channels = {channels}, "
                         f"got {group}")


def _add_center_gate(module, channels, group):
    """The parameters of the center feature scale: a per-group gate from ``channels``."""
    module.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
    module.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))


def _blend_center(query: Tensor, x: Tensor, x_proj: Tensor, weight: Tensor, bias: Tensor,
                  group_channels: int) -> Tensor:
    """x * (1 - s) + x_proj * s with s = sigmoid(linear(query)) repeated over each group."""
    scale = F.linear(query, weight, bias).sigmoid()
    scale = scale.repeat_interleave(group_channels, dim=-1)
    return x * (1 - scale) + x_proj * scale


class DCNv3(nn.Module):
    """The DCNv3 block of InternImage, with its constructor and parameter names.

    Parameters
    ----------
    channels : int
    kernel_size : int
    dw_kernel_size : int or None
        The depthwise convolution of the offset branch; None means kernel_size.
    stride : int
    pad : int
    dilation : int
    group : int
        A divisor of channels.
    offset_scale : float
    act_layer : str
        "GELU", "ReLU" or "SiLU".
    norm_layer : str
        "LN" or "BN".
    center_feature_scale : bool
    remove_center : bool

    Notes
    -----
    ``forward(input)``: input (N, H, W, channels) -> (N, H, W, channels) (stride 1). The
    offset branch is depthwise conv, norm, activation, then the linear layers ``offset``
    and ``mask``; the weights are a softmax over the points of each group.
    """

    center_feature_scale: Final[bool]

    def __init__(self, channels=64, kernel_size=3, dw_kernel_size=None, stride=1, pad=1,
                 dilation=1, group=4, offset_scale=1.0, act_layer="GELU", norm_layer="LN",
                 center_feature_scale=False, remove_center=False):
        super().__init__()
        _check_group(channels, group)
        if remove_center and kernel_size % 2 == 0:
            raise ValueError(f"remove_center: needs an odd kernel_size, got {kernel_size}")
        dw_kernel_size = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels, self.kernel_size, self.dw_kernel_size = channels, kernel_size, dw_kernel_size
        self.stride, self.pad, self.dilation = stride, pad, dilation
        self.group, self.group_channels = group, channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        points = kernel_size * kernel_size - self.remove_center
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, stride=1,
                      padding=(dw_kernel_size - 1) // 2, groups=channels),
            _norm(channels, norm_layer),
            _activation(act_layer))
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            _add_center_gate(self, channels, group)
        self.reset_parameters()

    def reset_parameters(self):
        """Zero offsets and uniform weights at the start; Xavier projections."""
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, input: Tensor) -> Tensor:
        N, H, W, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        query = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = self.offset(query)
        mask = F.softmax(self.mask(query).reshape(N, H, W, self.group, -1), dim=-1)
        mask = mask.reshape(N, H, W, -1).to(x.dtype)
        x = dcnv3(x, offset, mask, self.kernel_size, self.stride, self.pad, self.dilation,
                  self.group, self.offset_scale, bool(self.remove_center))
        if self.center_feature_scale:
            x = _blend_center(query, x, x_proj, self.center_feature_scale_proj_weight,
                              self.center_feature_scale_proj_bias, self.group_channels)
        return self.output_proj(x)


class DCNv4(nn.Module):
    """The DCNv4 block of OpenGVLab's DCNv4 package, with its constructor and parameter names.

    Parameters
    ----------
    channels : int
    kernel_size : int
    stride : int
    pad : int
    dilation : int
    group : int
        A divisor of channels.
    offset_scale : float
    dw_kernel_size : int or None
        None: offsets and weights come from the input by one linear layer; else from a
        depthwise convolution of this size first.
    center_feature_scale : bool
    remove_center : bool
    output_bias : bool
    without_pointwise : bool
        Leave out the value and output projections.

    Notes
    -----
    ``forward(input, shape=None)``: input (N, L, channels) with ``L = H*W``, shape (H, W)
    (None means a square image) -> (N, L, channels). Unlike the original CUDA kernels, any
    channels per group work. The linear layer ``offset_mask`` has
    ``D = ceil(3*group*P / 8)*8`` outputs; the entries past ``3*group*P`` are padding.
    """

    center_feature_scale: Final[bool]
    without_pointwise: Final[bool]
    dw_kernel_size: Final[Optional[int]]

    def __init__(self, channels=64, kernel_size=3, stride=1, pad=1, dilation=1, group=4,
                 offset_scale=1.0, dw_kernel_size=None, center_feature_scale=False,
                 remove_center=False, output_bias=True, without_pointwise=False, **kwargs):
        super().__init__()
        _check_group(channels, group)
        self.channels, self.kernel_size, self.dw_kernel_size = channels, kernel_size, dw_kernel_size
        self.stride, self.pad, self.dilation = stride, pad, dilation
        self.group, self.group_channels = group, channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        self.without_pointwise = without_pointwise
        self.K = group * (kernel_size * kernel_size - self.remove_center)
        if dw_kernel_size is not None:
            self.offset_mask_dw = nn.Conv2d(channels, channels, dw_kernel_size, stride=1,
                                            padding=(dw_kernel_size - 1) // 2, groups=channels)
        self.offset_mask = nn.Linear(channels, int(math.ceil(self.K * 3 / 8) * 8))
        if not without_pointwise:
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, channels, bias=output_bias)
        if center_feature_scale:
            _add_center_gate(self, channels, group)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        if not self.without_pointwise:
            nn.init.xavier_uniform_(self.value_proj.weight)
            nn.init.zeros_(self.value_proj.bias)
            nn.init.xavier_uniform_(self.output_proj.weight)
            if self.output_proj.bias is not None:
                nn.init.zeros_(self.output_proj.bias)

    def forward(self, input: Tensor, shape: Optional[Tuple[int, int]] = None) -> Tensor:
        N, L, C = input.shape
        if shape is None:
            H = W = int(L ** 0.5)
        else:
            H, W = shape
        if H * W != L:
            raise ValueError(f"shape: expected (H, W) with H*W = L = {L}, got ({H}, {W})")
        x = input if self.without_pointwise else self.value_proj(input)
        x = x.reshape(N, H, W, -1)
        query = input
        if self.dw_kernel_size is not None:
            query = self.offset_mask_dw(input.reshape(N, H, W, C).permute(0, 3, 1, 2))
            query = query.permute(0, 2, 3, 1).reshape(N, L, C)
        offset_mask = self.offset_mask(query).reshape(N, H, W, -1)
        x_proj = x
        x = dcnv4(x, offset_mask, self.kernel_size, self.stride, self.pad, self.dilation,
                  self.group, self.offset_scale, bool(self.remove_center))
        if self.center_feature_scale:
            x = _blend_center(x, x, x_proj, self.center_feature_scale_proj_weight,
                              self.center_feature_scale_proj_bias, self.group_channels)
        x = x.reshape(N, L, -1)
        return x if self.without_pointwise else self.output_proj(x)
