"""DepthwiseConv2D: a channels-last depthwise convolution (one kh x kw filter per channel).

The DCNv3 and DCNv4 blocks run one over their input to give every pixel a view of its
neighbourhood before predicting offsets. Stride 1 and no dilation, as there; the sums over
the kh*kw shifted copies of the input are written out in NumPy (channels last needs no
transposes that way).
"""
import numpy as np

from ._args import float_dtype, pair, positive_int
from .init import initial_weight
from .layer import Layer, check_channels_last


def depthwise_conv(x, weight, bias, padding):
    """Depthwise cross-correlation, channels last, stride 1, zero padding.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    weight : ndarray of shape (C, 1, kh, kw), torch's layout for ``groups=C``.
    bias : ndarray of shape (C,) or None
    padding : (pad_h, pad_w)

    Returns
    -------
    ndarray of shape (N, H_out, W_out, C), H_out = H + 2*pad_h - kh + 1 (W_out alike)::

        out[n, y, x, c] = bias[c] + sum_{i, j} weight[c, 0, i, j] * xpad[n, y + i, x + j, c]
    """
    (pad_h, pad_w), (kh, kw) = padding, weight.shape[2:]
    xpad = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    H_out, W_out = xpad.shape[1] - kh + 1, xpad.shape[2] - kw + 1
    out = np.zeros((x.shape[0], H_out, W_out, x.shape[3]), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += xpad[:, i:i + H_out, j:j + W_out, :] * weight[:, 0, i, j]
    if bias is not None:
        out += bias
    return out


def depthwise_conv_backward(grad, x, weight, padding, has_bias=True):
    """Gradients of ``depthwise_conv``: grad (N, H_out, W_out, C) -> (dx, dweight, dbias).

    Each shifted copy of the input got weight[c, 0, i, j] times grad, so::

        dxpad[n, y + i, x + j, c] += weight[c, 0, i, j] * grad[n, y, x, c]
        dweight[c, 0, i, j] = sum_{n, y, x} grad[n, y, x, c] * xpad[n, y + i, x + j, c]
        dbias[c] = sum_{n, y, x} grad[n, y, x, c]

    and dx is dxpad without its padding. dbias is None without a bias.
    """
    (pad_h, pad_w), (kh, kw) = padding, weight.shape[2:]
    N, H, W, C = x.shape
    H_out, W_out = grad.shape[1:3]
    xpad = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    dxpad = np.zeros_like(xpad)
    dweight = np.zeros_like(weight)
    for i in range(kh):
        for j in range(kw):
            dxpad[:, i:i + H_out, j:j + W_out, :] += grad * weight[:, 0, i, j]
            dweight[:, 0, i, j] = np.sum(grad * xpad[:, i:i + H_out, j:j + W_out, :],
                                         axis=(0, 1, 2))
    dbias = grad.sum(axis=(0, 1, 2)) if has_bias else None
    return dxpad[:, pad_h:pad_h + H, pad_w:pad_w + W, :], dweight, dbias


class DepthwiseConv2D(Layer):
    """Depthwise 2-d convolution in channels last: ``torch.nn.Conv2d(C, C, k, padding=p,
    groups=C)`` on (N, H, W, C) instead of (N, C, H, W).

    Parameters
    ----------
    channels : int
        C.
    kernel_size : int or (kh, kw)
    padding : int, (h, w) or None
        None: ``(kh - 1)//2`` and ``(kw - 1)//2``, which keeps H and W for odd kernels
        (InternImage's choice).
    bias : bool
    init : str
        "glorot_uniform" or "he_normal" (``fan_in = fan_out = kh*kw``); the bias starts at 0.
    rng : numpy Generator, int or None
        For the initial weights (a seed, or None for a fresh one).
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, H, W, C) -> (N, H_out, W_out, C), ``H_out = H + 2*pad_h - kh + 1`` (W_out alike);
    weight (C, 1, kh, kw), bias (C,). Forward and backward: ``depthwise_conv`` and
    ``depthwise_conv_backward``.
    """

    def __init__(self, channels, kernel_size=3, padding=None, bias=True, *,
                 init="glorot_uniform", rng=None, dtype=np.float32, name="dw_conv"):
        super().__init__(name)
        self.channels = positive_int(channels, "channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        kh, kw = self.kernel_size
        self.padding = ((kh - 1) // 2, (kw - 1) // 2) if padding is None else pair(
            padding, "padding", 0)
        dtype = float_dtype(dtype)
        self.add_param("weight", initial_weight(init, rng, (self.channels, 1, kh, kw),
                                                fan_in=kh * kw, fan_out=kh * kw, dtype=dtype))
        if bias:
            self.add_param("bias", np.zeros(self.channels, dtype))

    def output_shape(self, H, W):
        """(H_out, W_out) for an input of H x W."""
        return (H + 2 * self.padding[0] - self.kernel_size[0] + 1,
                W + 2 * self.padding[1] - self.kernel_size[1] + 1)

    def forward(self, x):
        """x (N, H, W, C) -> (N, H_out, W_out, C)."""
        check_channels_last(self, x, self.channels, ndim=4)
        H_out, W_out = self.output_shape(*x.shape[1:3])
        if H_out < 1 or W_out < 1:
            raise ValueError(f"{self.name}: input: expected H and W of at least the kernel "
                             f"size {self.kernel_size} less twice the padding {self.padding}, "
                             f"got shape {x.shape}")
        out = depthwise_conv(x, self.params["weight"], self.params.get("bias"), self.padding)
        return self._save(out, x)

    def backward(self, grad):
        """grad (N, H_out, W_out, C) -> dL/dx (N, H, W, C); dL/dweight, dL/dbias to grads."""
        (x,) = self._saved(grad)
        dx, dweight, dbias = depthwise_conv_backward(grad, x, self.params["weight"], self.padding,
                                                     "bias" in self.params)
        self._store_grads(weight=dweight, **({"bias": dbias} if dbias is not None else {}))
        return dx
