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

The initial weights of a layer depend only on the seed and the layer's name, so cnn(seed)
and deform_cnn(kind, seed=seed) start with the same conv11, ..., fc1.
"""
import zlib

import numpy as np

from .nn import (BatchNorm2D, Conv2D, ConvOffset2D, DeformConv2D, Dense, GlobalAvgPool2D, ReLU,
                 Sequential)

# (name, C_in, C_out, stride) of the four 3x3 convolutions
CONVS = [("conv11", 1, 32, 1), ("conv12", 32, 64, 2), ("conv21", 64, 128, 1),
         ("conv22", 128, 128, 2)]
DEFORMED = ("conv12", "conv21", "conv22")
# The running statistics keep 0.9 of their old value a step (PyTorch's 0.1), not Keras'
# 0.99: with 5,000 training digits there are too few steps for 0.99 to settle.
BN_MOMENTUM = 0.9
KINDS = ("offset", "dcn")


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
    kind : "offset": a ConvOffset2D (Keras get_deform_cnn) named conv12_offset, conv21_offset,
        conv22_offset before each of the three; "dcn": the three become DeformConv2D layers
        of the same names (Dai et al. 2017), whose main weights load from a trained cnn().
    modulated : bool, DCNv2 masks in the DeformConv2D layers (kind "dcn" only).
    offset_groups : int, G offset groups in each DeformConv2D (kind "dcn" only): the layer's
        input channels split into G groups with offsets of their own.
    seed : int
    dtype : float32 (default) or float64
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
