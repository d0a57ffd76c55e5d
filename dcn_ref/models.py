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

``cnn(widths=...)`` is the same network with other channel counts; ``matched_widths`` finds
the widths that give it as many parameters as another model (the experiment's
capacity-matched controls), and ``load_narrower`` starts such a wide cnn as exactly a
trained cnn of the standard widths.
"""
import zlib

import numpy as np

from .nn import (BatchNorm2D, Conv2D, ConvOffset2D, DCNv3, DeformConv2D, Dense, GlobalAvgPool2D,
                 ReLU, Sequential)

# (name, C_in, C_out, stride) of the four 3x3 convolutions
CONVS = [("conv11", 1, 32, 1), ("conv12", 32, 64, 2), ("conv21", 64, 128, 1),
         ("conv22", 128, 128, 2)]
WIDTHS = tuple(c_out for _, _, c_out, _ in CONVS)      # (32, 64, 128, 128)
CLASSES = 10
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


def _convs(widths):
    """(name, C_in, C_out, stride) of the four convolutions with output channels ``widths``."""
    c_ins = (1,) + tuple(widths[:-1])
    return [(name, c_in, c_out, stride)
            for (name, _, _, stride), c_in, c_out in zip(CONVS, c_ins, widths)]


def _build(conv_layer, seed, dtype, name, widths=WIDTHS):
    layers = []
    for conv_name, c_in, c_out, stride in _convs(widths):
        layers += conv_layer(conv_name, c_in, c_out, stride)
        layers += [ReLU(name=f"{conv_name}_relu"),
                   BatchNorm2D(c_out, momentum=BN_MOMENTUM, dtype=dtype, name=f"{conv_name}_bn")]
    layers += [GlobalAvgPool2D(name="avg_pool"),
               Dense(widths[-1], CLASSES, rng=layer_rng(seed, "fc1"), dtype=dtype, name="fc1")]
    return Sequential(layers, name=name)


def _conv(name, c_in, c_out, stride, seed, dtype):
    return Conv2D(c_in, c_out, 3, stride=stride, padding=1, rng=layer_rng(seed, name),
                  dtype=dtype, name=name)


def cnn(seed=0, dtype=np.float32, widths=WIDTHS):
    """The plain CNN (Keras get_cnn): a Sequential of Conv2D, ReLU, BatchNorm2D, ..., fc1.

    Parameters
    ----------
    seed : int
    dtype : numpy dtype
        float32 or float64.
    widths : tuple of int
        The output channels of conv11, conv12, conv21 and conv22, four positive ints;
        ``WIDTHS``, Keras' (32, 64, 128, 128), by default. Other widths give a wider or
        narrower cnn with the same layer names.
    """
    widths = _check_widths(widths)

    def conv(name, c_in, c_out, stride):
        return [_conv(name, c_in, c_out, stride, seed, dtype)]

    return _build(conv, seed, dtype, "cnn" if widths == WIDTHS else "cnn_wide", widths)


def _check_widths(widths):
    try:
        widths = tuple(widths)
    except TypeError:
        widths = None
    if (widths is None or len(widths) != len(CONVS)
            or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 1
                       for w in widths)):
        raise ValueError(f"widths: expected {len(CONVS)} positive ints (the output channels of "
                         f"conv11, conv12, conv21, conv22), got {widths!r}")
    return tuple(int(w) for w in widths)


def cnn_num_params(widths=WIDTHS):
    """The parameter count of ``cnn(widths=widths)``: per 3x3 convolution ``C_in*C_out*9``
    weights and ``C_out`` biases, and ``2*C_out`` in its batch norm (gamma and beta; the
    running statistics are state, not parameters); fc1 ``C*10`` weights and 10 biases."""
    widths = _check_widths(widths)
    convs = sum(c_in * c_out * 9 + c_out + 2 * c_out for _, c_in, c_out, _ in _convs(widths))
    return convs + widths[-1] * CLASSES + CLASSES


def matched_widths(num_params):
    """The widths of a cnn with about ``num_params`` parameters.

    Parameters
    ----------
    num_params : int
        From the cnn's 242,250 to 1000 times that.

    Returns
    -------
    tuple of 4 ints
        Keras' widths (32, 64, 128, 128) all multiplied by one factor (at least 1) and
        rounded to whole channels, the factor found on a grid of steps of 1/512 (one
        channel of conv11 or less) as the one whose ``cnn_num_params`` is nearest.

    Notes
    -----
    For the experiment's deformable models: ``deform_cnn("dcn", offset_groups=4)``, 387,618
    parameters, gives (41, 81, 162, 162) and 387,520; ``deform_cnn("offset")``, 629,322,
    gives (52, 103, 207, 207) and 629,989.
    """
    if isinstance(num_params, bool) or not isinstance(num_params, (int, np.integer)) \
            or not cnn_num_params() <= num_params <= 1000 * cnn_num_params():
        raise ValueError(f"num_params: expected an int from {cnn_num_params():,} (the cnn's "
                         f"count) to 1000 times that, got {num_params!r}")
    best, best_error = WIDTHS, abs(cnn_num_params() - num_params)
    factor = 1.0
    while True:
        factor += 1 / 512
        widths = tuple(max(1, round(factor * w)) for w in WIDTHS)
        count = cnn_num_params(widths)
        if abs(count - num_params) < best_error:
            best, best_error = widths, abs(count - num_params)
        if count > num_params:                    # the counts only grow from here
            return best


def load_narrower(model, state):
    """Start ``model``, a wider cnn, as exactly the narrower cnn whose ``state`` is given.

    Parameters
    ----------
    model : Sequential
        E.g. ``cnn(widths=...)``, with every array at least as large in every axis as the
        array of the same name in ``state``; changed in place.
    state : dict
        The ``state_dict()`` of the narrower cnn (e.g. a trained ``cnn()``).

    Returns
    -------
    list of str
        The keys of ``model`` that ``state`` does not have (none for two cnns).

    Notes
    -----
    Every array of ``state`` goes into the leading channels of the model's array of the
    same name; the weights by which the leading (old) output channels of a convolution, and
    fc1's logits, would read the extra input channels are set to zero. The extra channels
    keep the model's own initial values (their incoming weights drawn as the layer's, bias
    and beta 0, gamma 1, running statistics 0 and 1), so they compute features from the
    start, but nothing reads them until training moves those zero weights: the model's
    logits are the narrower cnn's, in eval mode and in train mode (batch statistics are
    per channel).
    """
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(f"state: expected keys of model {model.name!r}, got unexpected "
                         f"{unexpected}")
    widened = {}
    for key, value in own.items():
        if key not in state:
            continue
        old = np.asarray(state[key])
        if old.ndim != value.ndim or any(o > n for o, n in zip(old.shape, value.shape)):
            raise ValueError(f"state: expected {key} no larger than {value.shape} in any "
                             f"axis, got {old.shape}")
        leading = tuple(slice(0, n) for n in old.shape)
        value[leading] = old
        if value.ndim >= 2:                       # (C_out, C_in, ...): old outputs, new inputs
            value[:old.shape[0], old.shape[1]:] = 0
        widened[key] = value
    model.load_state_dict(widened, strict=False)
    return [k for k in own if k not in state]


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
