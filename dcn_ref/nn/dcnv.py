"""The DCNv3 and DCNv4 blocks: deformable aggregation between two linear projections.

DCNv3 is InternImage's core operator module (Wang et al. 2023), DCNv4 its successor from
OpenGVLab (Xiong et al. 2024). Both are channels last: input (N, H, W, C) -> (N, H, W, C).
The deformable aggregation itself is ``dcn_ref.ops.dcnv3`` / ``dcnv4``; everything around it
(projections, depthwise convolution, layer norm, GELU, softmax) is built from the layers'
forward and backward functions, so every gradient is written out here, nothing is automatic.
"""
import numbers

import numpy as np
from scipy.special import expit as sigmoid

from .. import ops
from ._args import float_dtype, pair, positive_int
from .activation import gelu, gelu_backward, softmax, softmax_backward
from .dense import linear, linear_backward
from .depthwise import depthwise_conv, depthwise_conv_backward
from .init import glorot_uniform
from .layer import Layer, check_channels_last
from .norm import layer_norm, layer_norm_backward


class DeformableBlock(Layer):
    """What DCNv3 and DCNv4 share: the checked geometry, the projections' initialisation,
    the op's arguments and the center feature scale."""

    def _set_geometry(self, channels, kernel_size, dw_kernel_size, stride, pad, dilation, group,
                      offset_scale, remove_center, center_feature_scale):
        self.channels = positive_int(channels, "channels")
        self.group = positive_int(group, "group")
        if self.channels % self.group:
            raise ValueError(f"group: expected a divisor of channels = {self.channels}, "
                             f"got {self.group}")
        self.group_channels = self.channels // self.group
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.pad = pair(pad, "pad", 0)
        self.dilation = pair(dilation, "dilation", 1)
        if not isinstance(offset_scale, numbers.Real) or not np.isfinite(offset_scale):
            raise ValueError(f"offset_scale: expected a finite number, got {offset_scale!r}")
        self.offset_scale = float(offset_scale)
        self.remove_center = bool(remove_center)
        self.center_feature_scale = bool(center_feature_scale)
        kh, kw = self.kernel_size
        if self.remove_center and (kh % 2 == 0 or kw % 2 == 0):
            raise ValueError(f"remove_center: expected an odd kernel_size, got {self.kernel_size}")
        keeps_size = self.stride == (1, 1) and all(
            2 * p == d * (k - 1) for p, d, k in zip(self.pad, self.dilation, self.kernel_size))
        if not keeps_size:
            raise ValueError(f"pad: expected stride 1 and 2*pad = dilation*(kernel_size - 1), "
                             f"so that the op keeps H and W (the offsets are predicted at every "
                             f"input pixel), got kernel_size {self.kernel_size}, stride "
                             f"{self.stride}, pad {self.pad}, dilation {self.dilation}")
        self.points = kh * kw - self.remove_center                      # P
        self.dw_kernel_size = None
        if dw_kernel_size is not None:
            self.dw_kernel_size = pair(dw_kernel_size, "dw_kernel_size", 1)
            if self.dw_kernel_size[0] % 2 == 0 or self.dw_kernel_size[1] % 2 == 0:
                raise ValueError(f"dw_kernel_size: expected odd sizes (the depthwise "
                                 f"convolution keeps H and W), got {dw_kernel_size!r}")

    def _op_args(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.pad,
                "dilation": self.dilation, "group": self.group,
                "offset_scale": self.offset_scale, "remove_center": self.remove_center}

    def _add_projection(self, name, rng, dtype, bias=True):
        """A C x C Linear, Xavier-uniform weight and zero bias (InternImage's reset)."""
        C = self.channels
        self.add_param(f"{name}_weight", glorot_uniform(rng, (C, C), C, C, dtype))
        if bias:
            self.add_param(f"{name}_bias", np.zeros(C, dtype))

    def _add_depthwise(self, name, rng, dtype):
        """A depthwise convolution with PyTorch's default initialisation of a Conv2d
        (InternImage does not reset it): weight and bias U(-b, b), b = 1/sqrt(kh*kw)."""
        kh, kw = self.dw_kernel_size
        bound = 1 / np.sqrt(kh * kw)
        self.add_param(f"{name}_weight",
                       rng.uniform(-bound, bound, (self.channels, 1, kh, kw)).astype(dtype))
        self.add_param(f"{name}_bias", rng.uniform(-bound, bound, self.channels).astype(dtype))

    def _dw_padding(self):
        return ((self.dw_kernel_size[0] - 1) // 2, (self.dw_kernel_size[1] - 1) // 2)

    def _add_center_feature_scale(self, dtype):
        if self.center_feature_scale:
            self.add_param("center_feature_scale_proj_weight",
                           np.zeros((self.group, self.channels), dtype))
            self.add_param("center_feature_scale_proj_bias", np.zeros(self.group, dtype))

    # -- center feature scale: y = core * (1 - s) + x_proj * s, s per pixel and group ----

    def _blend(self, query, core, x_proj):
        """s = sigmoid(linear(query)) (N, H, W, group), repeated over each group's channels."""
        p = self.params
        s = sigmoid(linear(query, p["center_feature_scale_proj_weight"],
                           p["center_feature_scale_proj_bias"]))
        s_c = np.repeat(s, self.group_channels, axis=-1)                  # (N, H, W, C)
        return core * (1 - s_c) + x_proj * s_c, s, s_c

    def _blend_backward(self, grad, query, core, x_proj, s, s_c):
        """-> (dcore, dx_proj, dquery); the scale's parameter gradients in a dict."""
        ds = (grad * (x_proj - core)).reshape(*s.shape, self.group_channels).sum(-1)
        dz = ds * s * (1 - s)                                             # sigmoid'
        dquery, dweight, dbias = linear_backward(dz, query,
                                                 self.params["center_feature_scale_proj_weight"])
        return grad * (1 - s_c), grad * s_c, dquery, {
            "center_feature_scale_proj_weight": dweight, "center_feature_scale_proj_bias": dbias}

    def _check(self, x):
        check_channels_last(self, x, self.channels, ndim=4)
        if x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(f"{self.name}: input: expected H, W >= 1, got shape {x.shape}")
        return x


class DCNv3(DeformableBlock):
    """InternImage's DCNv3 module, channels last, with a hand-written backward pass.

    Parameters
    ----------
    channels : int
        C (``= group * group_channels``).
    kernel_size : int or (kh, kw)
        The sampling grid of the op: ``P = kh*kw`` points (one less with ``remove_center``).
    dw_kernel_size : int, (h, w) or None
        The depthwise convolution before the offset and mask projections (odd); None means
        kernel_size.
    stride : int or (h, w)
        Of the op. The offsets are predicted at every input pixel, so the op must keep H and
        W: stride 1 and ``2*pad = dilation*(kernel_size - 1)``.
    pad : int or (h, w)
        Of the op (see stride).
    dilation : int or (h, w)
        Of the op (see stride).
    group : int
        Channel groups; each has its own offsets and point weights.
    offset_scale : float
        Scales the regular grid and the offsets (see ``ops.dcnv3``).
    center_feature_scale : bool
        Blend the op's output with the input projection by a learned per-group gate (starts
        at ``sigmoid(0) = 1/2``).
    remove_center : bool
        Drop the grid's centre point (odd kernels only).
    eps : float
        Of the layer norm (InternImage: 1e-6).
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, H, W, C) -> out (N, H, W, C)::

        x_proj = x @ input_proj_weight.T + input_proj_bias
        x1     = GELU(LayerNorm(depthwise_conv(x)))                  # (N, H, W, C)
        offset = x1 @ offset_weight.T + offset_bias                  # (N, H, W, group*P*2)
        mask   = softmax over the P points of each group of (x1 @ mask_weight.T + mask_bias)
        y      = dcnv3(x_proj, offset, mask, ...)                    # (N, H, W, C)
        y      = y * (1 - s) + x_proj * s,  s = sigmoid(x1 @ Wc.T + bc) per group
                                                           # with center_feature_scale
        out    = y @ output_proj_weight.T + output_proj_bias

    Initialisation as InternImage's: offset and mask projections zero (so a fresh block
    samples the regular grid with weight 1/P on every point), input and output projections
    Xavier uniform with zero bias, layer norm 1 and 0, depthwise convolution PyTorch's
    default. ``TORCH_NAMES`` maps the parameter names to the keys of InternImage's
    state_dict.
    """

    TORCH_NAMES = {
        "input_proj_weight": "input_proj.weight", "input_proj_bias": "input_proj.bias",
        "dw_conv_weight": "dw_conv.0.weight", "dw_conv_bias": "dw_conv.0.bias",
        "norm_weight": "dw_conv.1.1.weight", "norm_bias": "dw_conv.1.1.bias",
        "offset_weight": "offset.weight", "offset_bias": "offset.bias",
        "mask_weight": "mask.weight", "mask_bias": "mask.bias",
        "output_proj_weight": "output_proj.weight", "output_proj_bias": "output_proj.bias",
        "center_feature_scale_proj_weight": "center_feature_scale_proj_weight",
        "center_feature_scale_proj_bias": "center_feature_scale_proj_bias",
    }

    def __init__(self, channels=64, kernel_size=3, dw_kernel_size=None, stride=1, pad=1,
                 dilation=1, group=4, offset_scale=1.0, center_feature_scale=False,
                 remove_center=False, *, eps=1e-6, rng=None, dtype=np.float32, name="dcnv3"):
        super().__init__(name)
        self._set_geometry(channels, kernel_size,
                           kernel_size if dw_kernel_size is None else dw_kernel_size,
                           stride, pad, dilation, group, offset_scale, remove_center,
                           center_feature_scale)
        self.eps = float(eps)
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(rng)
        C, GP = self.channels, self.group * self.points
        self._add_projection("input_proj", rng, dtype)
        self._add_depthwise("dw_conv", rng, dtype)
        self.add_param("norm_weight", np.ones(C, dtype))
        self.add_param("norm_bias", np.zeros(C, dtype))
        self.add_param("offset_weight", np.zeros((2 * GP, C), dtype))
        self.add_param("offset_bias", np.zeros(2 * GP, dtype))
        self.add_param("mask_weight", np.zeros((GP, C), dtype))
        self.add_param("mask_bias", np.zeros(GP, dtype))
        self._add_projection("output_proj", rng, dtype)
        self._add_center_feature_scale(dtype)

    def forward(self, x):
        """x (N, H, W, C) -> (N, H, W, C)."""
        self._check(x)
        p = self.params
        N, H, W, _ = x.shape
        x_proj = linear(x, p["input_proj_weight"], p["input_proj_bias"])
        t = depthwise_conv(x, p["dw_conv_weight"], p["dw_conv_bias"], self._dw_padding())
        u, xhat, inv_std = layer_norm(t, p["norm_weight"], p["norm_bias"], self.eps)
        x1 = gelu(u)
        offset = linear(x1, p["offset_weight"], p["offset_bias"])        # (N, H, W, G*P*2)
        logits = linear(x1, p["mask_weight"], p["mask_bias"])            # (N, H, W, G*P)
        mask = softmax(logits.reshape(N, H, W, self.group, self.points)).reshape(logits.shape)
        core = ops.dcnv3(x_proj, offset, mask, **self._op_args())        # (N, H, W, C)
        y, s, s_c = core, None, None
        if self.center_feature_scale:
            y, s, s_c = self._blend(x1, core, x_proj)
        out = linear(y, p["output_proj_weight"], p["output_proj_bias"])
        return self._save(out, x, x_proj, u, xhat, inv_std, x1, offset, mask, core, y, s, s_c)

    def backward(self, grad):
        """grad (N, H, W, C) -> dL/dx (N, H, W, C); every dL/dparam to grads."""
        x, x_proj, u, xhat, inv_std, x1, offset, mask, core, y, s, s_c = self._saved(grad)
        p = self.params
        N, H, W, _ = x.shape
        grads = {}
        dy, grads["output_proj_weight"], grads["output_proj_bias"] = linear_backward(
            grad, y, p["output_proj_weight"])
        dcore, dx_proj, dx1 = dy, 0, 0
        if self.center_feature_scale:
            dcore, dx_proj, dx1, scale_grads = self._blend_backward(dy, x1, core, x_proj, s, s_c)
            grads.update(scale_grads)
        g = ops.dcnv3_backward(dcore, x_proj, offset, mask, **self._op_args())
        dx_proj = dx_proj + g.input
        shape5 = (N, H, W, self.group, self.points)
        dlogits = softmax_backward(g.mask.reshape(shape5), mask.reshape(shape5))
        dx1_mask, grads["mask_weight"], grads["mask_bias"] = linear_backward(
            dlogits.reshape(mask.shape), x1, p["mask_weight"])
        dx1_offset, grads["offset_weight"], grads["offset_bias"] = linear_backward(
            g.offset, x1, p["offset_weight"])
        du = gelu_backward(dx1 + dx1_mask + dx1_offset, u)
        dt, grads["norm_weight"], grads["norm_bias"] = layer_norm_backward(
            du, xhat, inv_std, p["norm_weight"])
        dx_dw, grads["dw_conv_weight"], grads["dw_conv_bias"] = depthwise_conv_backward(
            dt, x, p["dw_conv_weight"], self._dw_padding())
        dx_in, grads["input_proj_weight"], grads["input_proj_bias"] = linear_backward(
            dx_proj, x, p["input_proj_weight"])
        self._store_grads(**grads)
        return dx_in + dx_dw


class DCNv4(DeformableBlock):
    """OpenGVLab's DCNv4 module, channels last, with a hand-written backward pass.

    Parameters
    ----------
    channels : int
        As for DCNv3 (any P and group width: the original kernels want group_channels
        divisible by 16 and P of 8 or 9; this op does not).
    kernel_size : int or (kh, kw)
        As for DCNv3.
    stride : int or (h, w)
        As for DCNv3.
    pad : int or (h, w)
        As for DCNv3.
    dilation : int or (h, w)
        As for DCNv3.
    group : int
        As for DCNv3.
    offset_scale : float
        As for DCNv3.
    dw_kernel_size : int, (h, w) or None
        A depthwise convolution (no norm, no activation) before the offset_mask projection;
        None: the projection reads the input.
    center_feature_scale : bool
        As for DCNv3, but the gate reads the op's output.
    remove_center : bool
        As for DCNv3.
    output_bias : bool
        A bias in the output projection.
    without_pointwise : bool
        Drop the value and output projections (the op alone, with its offset_mask projection).
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, H, W, C) -> out (N, H, W, C), with ``D = group*P*3`` rounded up to a multiple of 8::

        v  = x @ value_proj_weight.T + value_proj_bias               # (N, H, W, C)
        om = q @ offset_mask_weight.T + offset_mask_bias             # (N, H, W, D)
             (q = depthwise_conv(x) with dw_kernel_size, else x)
        y  = dcnv4(v, om, ...)                                       # (N, H, W, C)
        y  = y * (1 - s) + v * s,  s = sigmoid(y @ Wc.T + bc) per group
                                                           # with center_feature_scale
        out = y @ output_proj_weight.T + output_proj_bias

    No softmax: the P weights of a group are used as they come. The last ``D - group*P*3``
    outputs of the offset_mask projection are padding the op ignores; their weights get
    zero gradient. Initialisation as the original: offset_mask zero (a fresh block sums the
    regular grid with weight 0, so its op output is 0), value and output projections Xavier
    uniform with zero bias. ``TORCH_NAMES`` maps the parameter names to the original
    module's state_dict keys.
    """

    TORCH_NAMES = {
        "value_proj_weight": "value_proj.weight", "value_proj_bias": "value_proj.bias",
        "offset_mask_dw_weight": "offset_mask_dw.weight",
        "offset_mask_dw_bias": "offset_mask_dw.bias",
        "offset_mask_weight": "offset_mask.weight", "offset_mask_bias": "offset_mask.bias",
        "output_proj_weight": "output_proj.weight", "output_proj_bias": "output_proj.bias",
        "center_feature_scale_proj_weight": "center_feature_scale_proj_weight",
        "center_feature_scale_proj_bias": "center_feature_scale_proj_bias",
    }

    def __init__(self, channels=64, kernel_size=3, stride=1, pad=1, dilation=1, group=4,
                 offset_scale=1.0, dw_kernel_size=None, center_feature_scale=False,
                 remove_center=False, output_bias=True, without_pointwise=False, *, rng=None,
                 dtype=np.float32, name="dcnv4"):
        super().__init__(name)
        self._set_geometry(channels, kernel_size, dw_kernel_size, stride, pad, dilation, group,
                           offset_scale, remove_center, center_feature_scale)
        self.pointwise = not without_pointwise
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(rng)
        used = self.group * self.points * 3
        self.offset_mask_channels = -(-used // 8) * 8                    # D
        if self.pointwise:
            self._add_projection("value_proj", rng, dtype)
        if self.dw_kernel_size is not None:
            self._add_depthwise("offset_mask_dw", rng, dtype)
        self.add_param("offset_mask_weight", np.zeros((self.offset_mask_channels, self.channels),
                                                      dtype))
        self.add_param("offset_mask_bias", np.zeros(self.offset_mask_channels, dtype))
        if self.pointwise:
            self._add_projection("output_proj", rng, dtype, bias=output_bias)
        self._add_center_feature_scale(dtype)

    def forward(self, x):
        """x (N, H, W, C) -> (N, H, W, C)."""
        self._check(x)
        p = self.params
        v = linear(x, p["value_proj_weight"], p["value_proj_bias"]) if self.pointwise else x
        q = x
        if self.dw_kernel_size is not None:
            q = depthwise_conv(x, p["offset_mask_dw_weight"], p["offset_mask_dw_bias"],
                               self._dw_padding())
        om = linear(q, p["offset_mask_weight"], p["offset_mask_bias"])   # (N, H, W, D)
        core = ops.dcnv4(v, om, **self._op_args())                       # (N, H, W, C)
        y, s, s_c = core, None, None
        if self.center_feature_scale:
            y, s, s_c = self._blend(core, core, v)
        out = y
        if self.pointwise:
            out = linear(y, p["output_proj_weight"], p.get("output_proj_bias"))
        return self._save(out, x, v, q, om, core, y, s, s_c)

    def backward(self, grad):
        """grad (N, H, W, C) -> dL/dx (N, H, W, C); every dL/dparam to grads."""
        x, v, q, om, core, y, s, s_c = self._saved(grad)
        p = self.params
        grads = {}
        dy = grad
        if self.pointwise:
            dy, grads["output_proj_weight"], bias = linear_backward(
                grad, y, p["output_proj_weight"], "output_proj_bias" in p)
            if bias is not None:
                grads["output_proj_bias"] = bias
        dcore, dv = dy, 0
        if self.center_feature_scale:
            # the gate reads the op's output: core reaches y directly and through s
            dcore, dv, dcore_gate, scale_grads = self._blend_backward(dy, core, core, v, s, s_c)
            dcore = dcore + dcore_gate
            grads.update(scale_grads)
        g = ops.dcnv4_backward(dcore, v, om, **self._op_args())
        dv = dv + g.input
        dq, grads["offset_mask_weight"], grads["offset_mask_bias"] = linear_backward(
            g.offset_mask, q, p["offset_mask_weight"])
        dx = dq
        if self.dw_kernel_size is not None:
            dx, grads["offset_mask_dw_weight"], grads["offset_mask_dw_bias"] = \
                depthwise_conv_backward(dq, x, p["offset_mask_dw_weight"], self._dw_padding())
        if self.pointwise:
            dv, grads["value_proj_weight"], grads["value_proj_bias"] = linear_backward(
                dv, x, p["value_proj_weight"])
        self._store_grads(**grads)
        return dx + dv
