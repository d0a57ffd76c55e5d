"""The models of the Keras deform-conv experiment (felixlaumon/deform-conv, cnn.py), in NCHW.

    input (N, 1, H, W), e.g. 28x28 MNIST digits
    conv11 3x3 32          relu  bn      (N, 32, H, W)
    conv12 3x3 64, /2      relu  bn      (N, 64, H/2, W/2)
    conv21 3x3 128         relu  bn      (N, 128, H/2, W/2)
    conv22 3x3 128, /2     relu  bn      (N, 128, H/4, W/4)
    global average pool                  (N, 128)
    fc1 10                               (N, 10) logits; the softmax is in SoftmaxCrossEntropy

As in Keras, the ReLU comes before the batch normalisation, and the layers are called
conv11, conv11_relu, conv11_bn, ..., avg_pool, fc1. The model is fully convolutional up to
the pooling, so any H, W >= 1 works (the strides round up).

The initial weights of a layer depend only on the seed and the layer's name, so cnn(seed),
deform_cnn(kind, seed=seed) and dcnv3_cnn(seed) start with the same conv11, ..., fc1.
dcnv3_cnn adds InternImage's DCNv3 block (``nn.DCNv3``) as residual layers in front of conv21
and conv22.
"""
import zlib

import numpy as np

from .nn import (BatchNorm2D, Conv2D, ConvOffset2D, DCNv3, DeformConv2D, Dense, GlobalAvgPool2D,
                 ReLU, Sequential)

# (name, C_in, C_out, stride) of the four 3x3 convolutions
CONVS = [("conv11", 1, 32, 1), ("conv12", 32, 64, 2), ("conv21", 64, 128, 1),
         ("conv22", 128, 128, 2)]
DEFORMED = ("conv12", "conv21", "conv22")
# The running statistics keep 0.9 of their old value a step (PyTorch's 0.1), not Keras'
# 0.99: with 5,000 training digits there are too few steps for 0.99 to settle.
BN_MOMENTUM = 0.9
KINDS = ("offset", "dcn")
# DCNv3 blocks of dcnv3_cnn: in front of these convolutions, 16 channels per group as in
# InternImage (channels 64 -> 4 groups, 128 -> 8 groups)
DCNV3_BEFORE = ("conv21", "conv22")
DCNV3_GROUP_CHANNELS = 16


def layer_rng(seed, name):
    """The Generator that initialises layer ``name``: a function of (seed, name) only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _build(conv_layer, seed, dtype, name):
    layers = []
    for conv_name, c_in, c_out, stride in CONVS:
        layers += conv_layer(conv_name, c_in, c_out, stride)
        layers += [ReLU(name=f"{conv_name}_relu"),
                   BatchNorm2D(c_out, momentum=BN_MOMENTUM, dtype=dtype, name=f"{conv_name}_bn")]
    layers += [GlobalAvgPool2D(name="avg_pool"),
               Dense(128, 10, rng=layer_rng(seed, "fc1"), dtype=dtype, name="fc1")]
    return Sequential(layers, name=name)


def _conv(name, c_in, c_out, stride, seed, dtype):
    return Conv2D(c_in, c_out, 3, stride=stride, padding=1, rng=layer_rng(seed, name),
                  dtype=dtype, name=name)


def cnn(seed=0, dtype=np.float32):
    """The plain CNN (Keras get_cnn): a Sequential of Conv2D, ReLU, BatchNorm2D, ..., fc1."""
    def conv(name, c_in, c_out, stride):
        return [_conv(name, c_in, c_out, stride, seed, dtype)]

    return _build(conv, seed, dtype, "cnn")


def deform_cnn(kind="offset", modulated=False, seed=0, dtype=np.float32, offset_groups=1):
    """The CNN with deformable sampling in conv12, conv21 and conv22.

    Parameters
    ----------
    kind : str
        "offset": a ConvOffset2D (Keras get_deform_cnn) named conv12_offset, conv21_offset,
        conv22_offset before each of the three; "dcn": the three become DeformConv2D layers
        of the same names (Dai et al. 2017), whose main weights load from a trained cnn().
    modulated : bool
        DCNv2 masks in the DeformConv2D layers (kind "dcn" only).
    seed : int
    dtype : numpy dtype
        float32 or float64.
    offset_groups : int
        G offset groups in each DeformConv2D (kind "dcn" only): the layer's input channels
        split into G groups with offsets of their own.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if offset_groups != 1 and kind != "dcn":
        raise ValueError(f"offset_groups: expected 1 for kind 'offset' (offset groups belong to "
                         f"DeformConv2D, kind 'dcn'), got {offset_groups!r}")
    if modulated and kind != "dcn":
        raise ValueError(f"modulated: expected False for kind 'offset' (masks belong to "
                         f"DeformConv2D, kind 'dcn'), got {modulated!r}")

    def conv(name, c_in, c_out, stride):
        if name not in DEFORMED:
            return [_conv(name, c_in, c_out, stride, seed, dtype)]
        if kind == "dcn":
            return [DeformConv2D(c_in, c_out, 3, stride=stride, padding=1, modulated=modulated,
                                 offset_groups=offset_groups, rng=layer_rng(seed, name),
                                 dtype=dtype, name=name)]
        offsets = ConvOffset2D(c_in, rng=layer_rng(seed, f"{name}_offset"), dtype=dtype,
                               name=f"{name}_offset")
        return [offsets, _conv(name, c_in, c_out, stride, seed, dtype)]

    return _build(conv, seed, dtype, f"deform_cnn_{kind}" + ("_v2" if modulated else ""))


class ResidualDCNv3(DCNv3):
    """x + DCNv3(x) on NCHW feature maps: InternImage's block as one layer of the Keras model.

    Parameters
    ----------
    channels : int
        As for ``nn.DCNv3`` (the block has a 3x3 grid, stride 1, pad 1).
    group : int
        As for ``nn.DCNv3``.
    rng : numpy Generator, int or None
        As for ``nn.DCNv3``.
    dtype : numpy dtype
        As for ``nn.DCNv3``.
    name : str

    Notes
    -----
    x (N, C, H, W) -> x + transpose(DCNv3(transpose(x))) (N, C, H, W), the transposes
    between NCHW and the block's channels-last layout. Its output projection starts at zero,
    so a fresh layer is the identity; everything else starts as in ``nn.DCNv3`` (offsets
    and point weights zero, so once the output projection moves, the block first learns on
    the regular 3x3 grid). Parameter names are those of ``nn.DCNv3``.
    """

    def __init__(self, channels, group, *, rng=None, dtype=np.float32, name="dcnv3"):
        super().__init__(channels, kernel_size=3, pad=1, group=group, rng=rng, dtype=dtype,
                         name=name)
        self.params["output_proj_weight"][...] = 0

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W)."""
        self._check_input(x, "(N, C, H, W)", self.channels)
        core = super().forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        return x + core.transpose(0, 3, 1, 2)

    def backward(self, grad):
        """grad (N, C, H, W) -> dL/dx (N, C, H, W); every dL/dparam to grads."""
        if not isinstance(grad, np.ndarray) or grad.ndim != 4:
            got = grad.shape if isinstance(grad, np.ndarray) else type(grad).__name__
            raise ValueError(f"{self.name}: grad: expected an ndarray of shape (N, C, H, W), "
                             f"got {got}")
        dx = super().backward(np.ascontiguousarray(grad.transpose(0, 2, 3, 1)))
        return grad + dx.transpose(0, 3, 1, 2)


def dcnv3_cnn(seed=0, dtype=np.float32):
    """The CNN with an InternImage-style DCNv3 block in front of conv21 and of conv22.

    Each block is a ``ResidualDCNv3`` named conv21_dcnv3 / conv22_dcnv3, on the 14x14 maps
    (for 28x28 digits) that conv21 and conv22 read, 64 and 128 channels, 16 per group.
    The blocks go in front of the convolutions rather than in their place: a DCNv3 block
    keeps its channels and its image size (stride 1), so it can take neither conv21's
    64 -> 128 channels nor conv22's stride 2 (InternImage, too, keeps its downsampling in
    separate convolutions), and its softmax-weighted sum of sampled points followed by a
    C x C projection cannot express a trained 3x3 convolution. As residual blocks whose
    output projection starts at zero, the model starts as exactly the cnn whose weights it
    loads (conv11, ..., fc1 keep their names), like the deform_cnn models, whose offsets
    start at zero; conv21 and conv22 then see the same 14x14 maps resampled, where
    deform_cnn("dcn") moves the sampling of conv21 and conv22 themselves.
    """
    def conv(name, c_in, c_out, stride):
        layers = []
        if name in DCNV3_BEFORE:
            layers.append(ResidualDCNv3(c_in, c_in // DCNV3_GROUP_CHANNELS,
                                        rng=layer_rng(seed, f"{name}_dcnv3"), dtype=dtype,
                                        name=f"{name}_dcnv3"))
        return layers + [_conv(name, c_in, c_out, stride, seed, dtype)]

    return _build(conv, seed, dtype, "dcnv3_cnn")
