"""Layers with hand-written backward passes: those of the Keras model (named after its
layers, NCHW), and the channels-last DCNv3 and DCNv4 blocks of InternImage and OpenGVLab with
the layers they are built from (Linear, LayerNorm, GELU, DepthwiseConv2D).

Each layer has ``forward(x)``, ``backward(grad) -> grad_input``, ``params`` and ``grads``
(dicts of arrays), ``trainable``, ``train()``/``eval()`` and a ``name``; see ``layer.Layer``.
"""
from .activation import GELU, ReLU
from .conv import Conv2D
from .dcnv import DCNv3, DCNv4
from .deform import ConvOffset2D, DeformConv2D
from .dense import Dense, Linear
from .depthwise import DepthwiseConv2D
from .layer import Layer, LoadResult
from .loss import SoftmaxCrossEntropy
from .norm import BatchNorm2D, LayerNorm
from .pool import GlobalAvgPool2D
from .roi import DeformPSRoIPool, DeformRoIPool
from .sequential import Sequential

__all__ = ["Layer", "Sequential", "LoadResult", "Conv2D", "ConvOffset2D", "DeformConv2D",
           "BatchNorm2D", "ReLU", "GlobalAvgPool2D", "Dense", "SoftmaxCrossEntropy",
           "DeformRoIPool", "DeformPSRoIPool", "Linear", "LayerNorm", "GELU", "DepthwiseConv2D",
           "DCNv3", "DCNv4"]
