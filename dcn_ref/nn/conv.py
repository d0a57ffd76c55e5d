"""Conv2D: a plain 2-d convolution layer on ``dcn_ref.ops.conv2d``."""
import numpy as np

from .. import ops
from ._args import float_dtype, pair, positive_int
from .init import initial_weight
from .layer import Layer


def resolve_padding(padding, kernel, dilation):
    """``padding`` as an (h, w) pair; "same" keeps H and W at stride 1.

    "same" is the symmetric padding ``dilation*(k - 1)/2``, so the kernel (dilated) must have
    an odd size. With stride 2 it gives the output size of Keras' 'same' padding but centres
    the taps one pixel differently: TensorFlow pads (0, 1) on an even input, this pads (1, 1).
    """
    if padding == "same":
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ValueError(f"padding: expected an odd kernel_size for 'same', got {kernel}")
        return (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    if isinstance(padding, str):
        raise ValueError(f"padding: expected 'same', an int or a pair of ints, got {padding!r}")
    return pair(padding, "padding", 0)


class ConvLayer(Layer):
    """What Conv2D and DeformConv2D share: the checked geometry, a weight (C_out, C_in, kh,
    kw) with an optional bias (C_out,), and the ops' stride/padding/dilation arguments."""

    def _set_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = resolve_padding(padding, self.kernel_size, self.dilation)

    def _add_weight_and_bias(self, bias, init, rng, dtype):
        kh, kw = self.kernel_size
        self.add_param("weight", initial_weight(
            init, rng, (self.out_channels, self.in_channels, kh, kw),
            fan_in=self.in_channels * kh * kw, fan_out=self.out_channels * kh * kw, dtype=dtype))
        if bias:
            self.add_param("bias", np.zeros(self.out_channels, dtype))

    def _conv_args(self):
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


class Conv2D(ConvLayer):
    """2-d convolution (cross-correlation) with weight (C_out, C_in, kh, kw) and bias (C_out,).

    Parameters
    ----------
    in_channels : int
    out_channels : int
    kernel_size : int or (kh, kw)
    stride : int or (h, w)
    padding : str, int or (h, w)
        "same" (see ``resolve_padding``), or the zeros added on each side.
    bias : bool
    dilation : int or (h, w)
    init : str
        "glorot_uniform" (Keras' default) or "he_normal"; the bias starts at zero.
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
    ``H_out = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (W_out alike).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same",
                 bias=True, *, dilation=1, init="glorot_uniform", rng=None, dtype=np.float32,
                 name="conv"):
        super().__init__(name)
        self._set_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self._add_weight_and_bias(bias, init, rng, float_dtype(dtype))

    def forward(self, x):
        """x (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        self._check_input(x, "(N, C_in, H, W)", self.in_channels)
        out = ops.conv2d(x, self.params["weight"], self.params.get("bias"), **self._conv_args())
        return self._save(out, x)

    def backward(self, grad):
        """grad (N, C_out, H_out, W_out) -> dL/dx (N, C_in, H, W); dL/dweight, dL/dbias to grads."""
        (x,) = self._saved(grad)
        g = ops.conv2d_backward(grad, x, self.params["weight"], self.params.get("bias"),
                                **self._conv_args())
        self._store_grads(weight=g.weight, **({"bias": g.bias} if g.bias is not None else {}))
        return g.input
