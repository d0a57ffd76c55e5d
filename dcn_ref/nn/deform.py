"""The two deformable layers: Keras' ConvOffset2D and the paper's DeformConv2D.

ConvOffset2D (the layer of the well-known Keras implementation) moves every pixel of every
channel by its own learned (dy, dx) and leaves the convolving to the next layer. DeformConv2D
(Dai et al. 2017; with ``modulated``, Zhu et al. 2019) moves the taps of its own kernel.
Both learn their offsets with an ordinary convolution of their input.
"""
import numpy as np
from scipy.special import expit as sigmoid

from .. import ops
from ._args import float_dtype, positive_float, positive_int
from .conv import ConvLayer
from .layer import Layer

PADDING_MODES = ("border", "zeros")


class ConvOffset2D(Layer):
    """Keras' ConvOffset2D: a 3x3 convolution predicts (dy, dx) for each channel and pixel,
    then every channel is resampled there by bilinear interpolation.

    Parameters
    ----------
    channels : int
        C.
    init_std : float
        The weight starts as ``N(0, init_std**2)`` (Keras: 0.01).
    padding_mode : str
        "border" (Keras: coordinates clamped into the image) or "zeros".
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    input x (N, C, H, W) -> output (N, C, H, W)::

        offset = conv2d(x, weight, padding=1)          # (N, 2C, H, W), weight (2C, C, 3, 3)
        out[n, c, i, j] = bilinear(x[n, c], i + offset[n, 2c, i, j], j + offset[n, 2c+1, i, j])

    x reaches the output along two paths, so dL/dx is the sum of the sampling's input
    gradient and the offset convolution's input gradient.
    """

    def __init__(self, channels, init_std=0.01, padding_mode="border", *, rng=None,
                 dtype=np.float32, name="conv_offset"):
        super().__init__(name)
        self.channels = positive_int(channels, "channels")
        positive_float(init_std, "init_std", allow_zero=True)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode: expected one of {list(PADDING_MODES)}, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        rng = np.random.default_rng(rng)
        shape = (2 * self.channels, self.channels, 3, 3)
        self.add_param("weight", (rng.standard_normal(shape) * init_std).astype(float_dtype(dtype)))

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W)."""
        self._check_input(x, "(N, C, H, W)", self.channels)
        offset = ops.conv2d(x, self.params["weight"], None, padding=1)    # (N, 2C, H, W)
        out = ops.offset_sample(x, offset, self.padding_mode)
        return self._save(out, x, offset)

    def backward(self, grad):
        """grad (N, C, H, W) -> dL/dx (N, C, H, W); dL/dweight to grads."""
        x, offset = self._saved(grad)
        sample = ops.offset_sample_backward(grad, x, offset, self.padding_mode)
        conv = ops.conv2d_backward(sample.offset, x, self.params["weight"], None, padding=1)
        self._store_grads(weight=conv.weight)
        return sample.input + conv.input


class DeformConv2D(ConvLayer):
    """Deformable convolution (DCNv1; DCNv2 with ``modulated``) with its offset convolution.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    kernel_size : int or (h, w)
    stride : int or (h, w)
    padding : int, (h, w) or str
        The zeros added on each side, or "same".
    dilation : int or (h, w)
    offset_groups : int
        G, dividing in_channels: the channels of one group share offsets.
    modulated : bool
        Add the DCNv2 mask (a sigmoid of a third convolution).
    bias : bool
        A bias for the main convolution (the offset and mask convolutions always have one).
    init : str
        The main weight's initialiser, as for Conv2D.
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    input x (N, C_in, H, W) -> output (N, C_out, H_out, W_out), H_out as for Conv2D::

        offset = conv2d(x, offset_weight, offset_bias)          # (N, 2*G*kh*kw, H_out, W_out)
        mask = sigmoid(conv2d(x, mask_weight, mask_bias))       # (N, G*kh*kw, H_out, W_out)
        out = deform_conv2d(x, offset, weight, bias, mask=mask)

    with the layer's kernel size, stride, padding and dilation in all three, so that the
    offsets come at output resolution. Offset and mask convolutions start at zero (as in the
    papers): offsets 0 and mask 0.5, so a fresh layer is a plain convolution (halved by the
    mask when modulated, bias aside). ``weight`` and ``bias`` have the names and shapes of a
    Conv2D's, so they load from a trained plain convolution of the same layer name.

    dL/dx sums three paths: the deformable sampling, the offset and the mask convolutions.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1,
                 offset_groups=1, modulated=False, bias=True, *, init="glorot_uniform", rng=None,
                 dtype=np.float32, name="deform_conv"):
        super().__init__(name)
        self._set_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.offset_groups = positive_int(offset_groups, "offset_groups")
        if self.in_channels % self.offset_groups:
            raise ValueError(f"offset_groups: expected a divisor of in_channels = "
                             f"{self.in_channels}, got {self.offset_groups}")
        self.modulated = bool(modulated)
        dtype = float_dtype(dtype)
        kh, kw = self.kernel_size
        taps = self.offset_groups * kh * kw                     # G*kh*kw sample points a pixel
        self._add_weight_and_bias(bias, init, rng, dtype)
        self.add_param("offset_weight", np.zeros((2 * taps, self.in_channels, kh, kw), dtype))
        self.add_param("offset_bias", np.zeros(2 * taps, dtype))
        if self.modulated:
            self.add_param("mask_weight", np.zeros((taps, self.in_channels, kh, kw), dtype))
            self.add_param("mask_bias", np.zeros(taps, dtype))

    def forward(self, x):
        """x (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        self._check_input(x, "(N, C_in, H, W)", self.in_channels)
        p, conv = self.params, self._conv_args()
        offset = ops.conv2d(x, p["offset_weight"], p["offset_bias"], **conv)  # (N, 2*G*K, H_out, W_out)
        mask = None
        if self.modulated:
            mask = sigmoid(ops.conv2d(x, p["mask_weight"], p["mask_bias"], **conv))  # (N, G*K, ...)
        out = ops.deform_conv2d(x, offset, p["weight"], p.get("bias"), mask=mask, **conv)
        return self._save(out, x, offset, mask)

    def backward(self, grad):
        """grad (N, C_out, H_out, W_out) -> dL/dx (N, C_in, H, W); every dL/dparam to grads."""
        x, offset, mask = self._saved(grad)
        p, conv = self.params, self._conv_args()
        g = ops.deform_conv2d_backward(grad, x, offset, p["weight"], p.get("bias"), mask=mask,
                                       **conv)
        off = ops.conv2d_backward(g.offset, x, p["offset_weight"], p["offset_bias"], **conv)
        grads = {"weight": g.weight, "offset_weight": off.weight, "offset_bias": off.bias}
        if g.bias is not None:
            grads["bias"] = g.bias
        grad_x = g.input + off.input
        if self.modulated:
            # mask = sigmoid(z)  =>  dmask/dz = mask * (1 - mask)
            m = ops.conv2d_backward(g.mask * mask * (1 - mask), x, p["mask_weight"],
                                    p["mask_bias"], **conv)
            grads.update(mask_weight=m.weight, mask_bias=m.bias)
            grad_x += m.input
        self._store_grads(**grads)
        return grad_x
