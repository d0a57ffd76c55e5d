"""mmcv's deformable convolutions and deformable RoI pools, under mmcv's names, computed by
dcn_ref.

    from dcn_ref.torch.mmcv import ModulatedDeformConv2dPack    # instead of mmcv.ops

Each module has mmcv's constructor arguments, attribute and parameter names, initialisation
and ``state_dict`` keys, so a checkpoint of a model built from mmcv's modules (an
mmdetection backbone with DCN or DCNv2, a head with deformable RoI pooling) loads with
``strict=True`` and computes mmcv's numbers:

    DeformConv2d                mmcv's DeformConv2d: weight, no bias; forward(x, offset)
    DeformConv2dPack            + conv_offset predicting the offsets (mmdetection's "DCN")
    ModulatedDeformConv2d       weight and bias; forward(x, offset, mask), mask used as given
    ModulatedDeformConv2dPack   + conv_offset predicting offsets and mask (mmdetection's "DCNv2")
    DeformRoIPool               forward(input, rois, offset=None)
    DeformRoIPoolPack           + offset_fc, a three-layer MLP predicting the bin offsets
    ModulatedDeformRoIPoolPack  + offset_fc, and mask_fc predicting a mask for every bin

The functions ``deform_conv2d``, ``modulated_deform_conv2d`` and ``deform_roi_pool`` have
mmcv's signatures. mmcv's ``deform_conv2d`` is not torchvision's: it takes ``groups`` and
``deform_groups`` instead of reading them from the shapes, and no bias. So this module's
``deform_conv2d`` and ``DeformConv2d`` are mmcv's, and ``dcn_ref.torch.deform_conv2d`` and
``dcn_ref.torch.DeformConv2d`` stay torchvision's.

The offsets are mmcv's, which are torchvision's: channel ``2*(g*kh*kw + k)`` is the dy of
tap k in deformable group g, the next its dx; the mask has channel ``g*kh*kw + k``; a RoI
pool's offset has the x-shift in channel 0. ``im2col_step`` only cuts mmcv's work into
batch chunks: it is accepted and has no effect on the numbers.
"""
import math
import warnings

import torch
from torch import nn

from .functional import deform_conv2d as _deform_conv2d
from .functional import deform_roi_pool

__all__ = ["deform_conv2d", "modulated_deform_conv2d", "deform_roi_pool", "DeformConv2d",
           "DeformConv2dPack", "ModulatedDeformConv2d", "ModulatedDeformConv2dPack",
           "DeformRoIPool", "DeformRoIPoolPack", "ModulatedDeformRoIPoolPack"]


def _positive_int(value, name):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _pair(value, name):
    value = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return tuple(value)


def _check_groups(input, offset, weight, groups, deform_groups, channels_per_tap, mask=None):
    """mmcv states ``groups`` and ``deform_groups``; the bridge reads them from the shapes.
    Check that the two agree, so that a wrong argument is an error and not another layer."""
    given = {"input": input, "offset": offset, "weight": weight, "mask": mask}
    for name, value in given.items():
        if not (value is None and name == "mask") and not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    _positive_int(groups, "groups")
    _positive_int(deform_groups, "deform_groups")
    if input.dim() == 4 and weight.dim() == 4 and weight.shape[1] * groups != input.shape[1]:
        raise ValueError(f"groups: expected input channels = weight.shape[1] * groups, got "
                         f"{input.shape[1]} input channels, weight {tuple(weight.shape)} and "
                         f"groups = {groups}")
    if offset.dim() == 4 and weight.dim() == 4:
        taps = weight.shape[2] * weight.shape[3]
        expected = channels_per_tap * deform_groups * taps
        if offset.shape[1] != expected:
            raise ValueError(f"deform_groups: expected offset with {channels_per_tap}*"
                             f"deform_groups*kh*kw = {expected} channels for deform_groups = "
                             f"{deform_groups}, got {offset.shape[1]}")


def deform_conv2d(input, offset, weight, stride=1, padding=0, dilation=1, groups=1,
                  deform_groups=1, bias=False, im2col_step=32):
    """mmcv's ``deform_conv2d`` (DCNv1), computed by ``dcn_ref.torch.deform_conv2d``.

    Parameters
    ----------
    input : Tensor of shape (N, C_in, H, W)
    offset : Tensor of shape (N, 2*deform_groups*kh*kw, H_out, W_out)
        (dy, dx) of each tap, as in torchvision.
    weight : Tensor of shape (C_out, C_in/groups, kh, kw)
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
        Channel groups of the weight: ``C_in = weight.shape[1] * groups``.
    deform_groups : int
        Offset groups: ``offset.shape[1] = 2*deform_groups*kh*kw``.
    bias : bool
        False; mmcv's deformable convolution has no bias.
    im2col_step : int
        mmcv's batch chunk; no effect on the result.

    Returns
    -------
    Tensor of shape (N, C_out, H_out, W_out)
    """
    _check_groups(input, offset, weight, groups, deform_groups, 2)
    if bias is not False:
        raise ValueError(f"bias: expected False (mmcv's deform_conv2d has no bias), got {bias!r}")
    _positive_int(im2col_step, "im2col_step")
    return _deform_conv2d(input, offset, weight, None, stride, padding, dilation)


def modulated_deform_conv2d(input, offset, mask, weight, bias=None, stride=1, padding=0,
                            dilation=1, groups=1, deform_groups=1):
    """mmcv's ``modulated_deform_conv2d`` (DCNv2), computed by ``dcn_ref.torch.deform_conv2d``.

    Parameters
    ----------
    input : Tensor of shape (N, C_in, H, W)
    offset : Tensor of shape (N, 2*deform_groups*kh*kw, H_out, W_out)
        (dy, dx) of each tap, as in torchvision.
    mask : Tensor of shape (N, deform_groups*kh*kw, H_out, W_out)
        Used as given: the sigmoid is the caller's (``ModulatedDeformConv2dPack`` applies it).
    weight : Tensor of shape (C_out, C_in/groups, kh, kw)
    bias : Tensor of shape (C_out,) or None
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
        Channel groups of the weight: ``C_in = weight.shape[1] * groups``.
    deform_groups : int
        Offset groups: ``offset.shape[1] = 2*deform_groups*kh*kw``.

    Returns
    -------
    Tensor of shape (N, C_out, H_out, W_out)
    """
    _check_groups(input, offset, weight, groups, deform_groups, 2, mask)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
    return _deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)


def _deform_groups(deform_groups, deformable_groups, owner):
    """mmcv's old keyword ``deformable_groups``, still accepted there with a warning."""
    if deformable_groups is None:
        return deform_groups
    if deform_groups != 1:
        raise ValueError(f"deformable_groups: the old name of deform_groups; expected one of "
                         f"the two, got both ({deformable_groups!r} and {deform_groups!r})")
    warnings.warn(f"{owner}: deformable_groups is deprecated, use deform_groups",
                  DeprecationWarning, stacklevel=3)
    return deformable_groups


class _ConvBase(nn.Module):
    """The attributes that mmcv's two deformable convolutions share (and nn.Conv2d's
    ``transposed`` and ``output_padding``, which mmcv sets for code that reads them)."""

    def _set_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                      groups, deform_groups):
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.groups = _positive_int(groups, "groups")
        self.deform_groups = _positive_int(deform_groups, "deform_groups")
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"groups: expected a divisor of {name} = {channels}, got {groups}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.transposed = False
        self.output_padding = (0,)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))

    def _offset_conv(self, channels_per_tap):
        """mmcv's ``conv_offset``: the layer's geometry, a bias, zero at the start."""
        kh, kw = self.kernel_size
        conv = nn.Conv2d(self.in_channels, channels_per_tap * self.deform_groups * kh * kw,
                         self.kernel_size, stride=self.stride, padding=self.padding,
                         dilation=self.dilation, bias=True)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, deform_groups={self.deform_groups}, "
                f"bias={getattr(self, 'bias', None) is not None}")


class DeformConv2d(_ConvBase):
    """mmcv's ``DeformConv2d`` (DCNv1): a weight, no bias; the offsets are an input.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
        Channel groups of the weight; divides in_channels and out_channels.
    deform_groups : int
        Offset groups; divides in_channels.
    bias : bool
        False (mmcv refuses a bias here).
    im2col_step : int
        mmcv's batch chunk; kept as an attribute, no effect on the result.
    deformable_groups : int or None
        mmcv's old name of deform_groups (with a DeprecationWarning).

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels // groups, kh, kw)
        mmcv's initialisation: ``kaiming_uniform_`` for a ReLU,
        ``U(-sqrt(6 / fan_in), sqrt(6 / fan_in))``.

    Notes
    -----
    ``forward(x, offset)``: x (N, in_channels, H, W), offset
    ``(N, 2*deform_groups*kh*kw, H_out, W_out)`` -> (N, out_channels, H_out, W_out).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, deform_groups=1, bias=False, im2col_step=32, *,
                 deformable_groups=None):
        super().__init__()
        if bias:
            raise ValueError(f"bias: expected False (mmcv's DeformConv2d has no bias), got "
                             f"{bias!r}")
        deform_groups = _deform_groups(deform_groups, deformable_groups, type(self).__name__)
        self._set_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, deform_groups)
        self.im2col_step = _positive_int(im2col_step, "im2col_step")
        self.reset_parameters()

    def reset_parameters(self):
        """The weight as mmcv initialises it: ``kaiming_uniform_(nonlinearity="relu")``."""
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x, offset):
        return deform_conv2d(x, offset, self.weight, self.stride, self.padding, self.dilation,
                             self.groups, self.deform_groups, False, self.im2col_step)


class DeformConv2dPack(DeformConv2d):
    """mmcv's ``DeformConv2dPack`` (mmdetection's ``DCN``): a ``DeformConv2d`` whose offsets
    come from the input through ``conv_offset``, a plain convolution.

    Takes the arguments of ``DeformConv2d``. ``conv_offset`` has the layer's kernel size,
    stride, padding and dilation, ``2*deform_groups*kh*kw`` outputs and a bias, all zero at
    the start: a fresh layer is a plain convolution. ``forward(x)``: x (N, in_channels, H, W)
    -> (N, out_channels, H_out, W_out). state_dict keys: ``weight``, ``conv_offset.weight``,
    ``conv_offset.bias``.
    """

    _version = 2        # mmcv's: the state_dict metadata of its checkpoints says 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = self._offset_conv(2)

    def init_offset(self):
        """Zero offsets (mmcv's name for it)."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        return super().forward(x, self.conv_offset(x))


class ModulatedDeformConv2d(_ConvBase):
    """mmcv's ``ModulatedDeformConv2d`` (DCNv2): offsets and mask are inputs.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    kernel_size : int or (h, w) pair
    stride : int or (h, w) pair
    padding : int or (h, w) pair
    dilation : int or (h, w) pair
    groups : int
        Channel groups of the weight; divides in_channels and out_channels.
    deform_groups : int
        Offset groups; divides in_channels.
    bias : bool
        A bias (any true value, as mmcv's ``"auto"``).
    deformable_groups : int or None
        mmcv's old name of deform_groups (with a DeprecationWarning).

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels // groups, kh, kw)
        mmcv's initialisation: ``U(-1/sqrt(n), 1/sqrt(n))`` with ``n = in_channels*kh*kw``.
    bias : Parameter of shape (out_channels,) or None
        Zero at the start.

    Notes
    -----
    ``forward(x, offset, mask)``: x (N, in_channels, H, W), offset
    ``(N, 2*deform_groups*kh*kw, H_out, W_out)``, mask ``(N, deform_groups*kh*kw, H_out,
    W_out)``, used as given -> (N, out_channels, H_out, W_out).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, deform_groups=1, bias=True, *, deformable_groups=None):
        super().__init__()
        deform_groups = _deform_groups(deform_groups, deformable_groups, type(self).__name__)
        self._set_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, deform_groups)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.init_weights()

    def init_weights(self):
        """mmcv's initialisation (its name for it): the weight uniform in ``+-1/sqrt(n)``
        with ``n = in_channels*kh*kw`` (not divided by groups), the bias zero."""
        bound = 1 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x, offset, mask):
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride,
                                       self.padding, self.dilation, self.groups,
                                       self.deform_groups)


class ModulatedDeformConv2dPack(ModulatedDeformConv2d):
    """mmcv's ``ModulatedDeformConv2dPack`` (mmdetection's ``DCNv2``): offsets and mask from
    the input through ``conv_offset``, the mask through a sigmoid.

    Takes the arguments of ``ModulatedDeformConv2d``. ``conv_offset`` has the layer's
    geometry, ``3*deform_groups*kh*kw`` outputs and a bias, all zero at the start (offsets
    0, mask 0.5). Its output is read as mmcv reads it, split in three equal chunks
    ``o1, o2, m`` along the channels: ``offset = cat(o1, o2)`` (the first
    ``2*deform_groups*kh*kw`` channels, in the layout of ``offset``) and
    ``mask = sigmoid(m)``. ``forward(x)``: x (N, in_channels, H, W) ->
    (N, out_channels, H_out, W_out). state_dict keys: ``weight``, ``bias`` (with a bias),
    ``conv_offset.weight``, ``conv_offset.bias``.
    """

    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = self._offset_conv(3)
        self.init_weights()     # again, as mmcv does: the same random draws for one seed

    def init_weights(self):
        """``ModulatedDeformConv2d.init_weights``, and ``conv_offset`` zero."""
        super().init_weights()
        if hasattr(self, "conv_offset"):
            nn.init.zeros_(self.conv_offset.weight)
            nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        out = self.conv_offset(x)                       # (N, 3*G*kh*kw, H_out, W_out)
        n_offset = 2 * out.shape[1] // 3                # the chunks o1 and o2, concatenated
        offset, mask = out[:, :n_offset], torch.sigmoid(out[:, n_offset:])
        return super().forward(x, offset, mask)


class DeformRoIPool(nn.Module):
    """mmcv's ``DeformRoIPool``: ``deform_roi_pool`` with the pooling arguments stored.

    Parameters
    ----------
    output_size : int or (ph, pw)
    spatial_scale : float
    sampling_ratio : int
    gamma : float
        As in ``dcn_ref.torch.deform_roi_pool`` (and ``dcn_ref.ops.deform_roi_pool``).

    Notes
    -----
    ``forward(input, rois, offset=None)``: input (N, C, H, W), rois (K, 5) rows
    (batch_index, x1, y1, x2, y2), offset (K, 2, ph, pw) with the x-shift in channel 0 ->
    (K, C, ph, pw). No parameters.
    """

    def __init__(self, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
        super().__init__()
        self.output_size = _pair(output_size, "output_size")
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)

    def forward(self, input, rois, offset=None):
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale,
                               self.sampling_ratio, self.gamma)

    def extra_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}")


def _mlp(sizes, last):
    """Linear layers of ``sizes`` with a ReLU between two, then ``last`` (mmcv's fc heads:
    the ReLUs are modules too, so the Linear layers sit at indices 0, 2, 4)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        layers.append(nn.ReLU(inplace=True) if i < len(sizes) - 2 else last)
    return nn.Sequential(*(layer for layer in layers if layer is not None))


class DeformRoIPoolPack(DeformRoIPool):
    """mmcv's ``DeformRoIPoolPack``: the bin offsets predicted from the RoI's plain pooling.

    Parameters
    ----------
    output_size : int or (ph, pw)
    output_channels : int
        C, the channels of the input.
    deform_fc_channels : int
        The width of the hidden layers of ``offset_fc``.
    spatial_scale : float
    sampling_ratio : int
    gamma : float
        As in ``DeformRoIPool``.

    Notes
    -----
    ``forward(input, rois)`` -> (K, C, ph, pw)::

        pooled = deform_roi_pool(input, rois)                      # (K, C, ph, pw), no offsets
        offset = offset_fc(pooled.reshape(K, C*ph*pw)).reshape(K, 2, ph, pw)
        out = deform_roi_pool(input, rois, offset)

    ``offset_fc`` is ``Linear(C*ph*pw, fc)``, ReLU, ``Linear(fc, fc)``, ReLU,
    ``Linear(fc, 2*ph*pw)`` with state_dict keys ``offset_fc.0.*``, ``offset_fc.2.*``,
    ``offset_fc.4.*``; the last layer starts at zero, the others as ``torch.nn.Linear``.
    """

    def __init__(self, output_size, output_channels, deform_fc_channels=1024,
                 spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = _positive_int(output_channels, "output_channels")
        self.deform_fc_channels = _positive_int(deform_fc_channels, "deform_fc_channels")
        bins = self.output_size[0] * self.output_size[1]
        fc = deform_fc_channels
        self.offset_fc = _mlp([bins * output_channels, fc, fc, 2 * bins], None)
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)

    def _pooled(self, input, rois):
        if not isinstance(input, torch.Tensor) or input.dim() != 4:
            raise ValueError(f"input: expected a tensor (N, C, H, W), got "
                             f"{getattr(input, 'shape', type(input).__name__)}")
        if input.shape[1] != self.output_channels:
            raise ValueError(f"input: expected output_channels = {self.output_channels} "
                             f"channels, got {input.shape[1]}")
        return super().forward(input, rois).reshape(rois.shape[0], -1)   # (K, C*ph*pw)

    def _offset(self, pooled):
        return self.offset_fc(pooled).reshape(pooled.shape[0], 2, *self.output_size)

    def forward(self, input, rois):
        return super().forward(input, rois, self._offset(self._pooled(input, rois)))


class ModulatedDeformRoIPoolPack(DeformRoIPoolPack):
    """mmcv's ``ModulatedDeformRoIPoolPack``: ``DeformRoIPoolPack`` and a mask per bin.

    Takes the arguments of ``DeformRoIPoolPack``. ``mask_fc`` is ``Linear(C*ph*pw, fc)``,
    ReLU, ``Linear(fc, ph*pw)``, Sigmoid (keys ``mask_fc.0.*``, ``mask_fc.2.*``), its last
    Linear zero at the start (mask 0.5). ``forward(input, rois)`` returns
    ``deform_roi_pool(input, rois, offset) * mask`` with ``mask`` (K, 1, ph, pw), both
    predicted from the RoI's plain pooling.
    """

    def __init__(self, output_size, output_channels, deform_fc_channels=1024,
                 spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
        super().__init__(output_size, output_channels, deform_fc_channels, spatial_scale,
                         sampling_ratio, gamma)
        bins = self.output_size[0] * self.output_size[1]
        self.mask_fc = _mlp([bins * output_channels, deform_fc_channels, bins], nn.Sigmoid())
        nn.init.zeros_(self.mask_fc[2].weight)
        nn.init.zeros_(self.mask_fc[2].bias)

    def forward(self, input, rois):
        pooled = self._pooled(input, rois)
        mask = self.mask_fc(pooled).reshape(pooled.shape[0], 1, *self.output_size)
        return DeformRoIPool.forward(self, input, rois, self._offset(pooled)) * mask
