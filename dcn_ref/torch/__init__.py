"""dcn_ref from PyTorch: every op as a differentiable ``torch.library`` custom op, and
drop-in modules.

    from dcn_ref.torch import deform_conv2d, DeformConv2d     # torchvision's names
    from dcn_ref.torch.mmcv import DeformConv2dPack            # mmcv's names

Importing this package imports torch (``pip install 'dcn-ref[torch]'``); importing
``dcn_ref`` alone never does. The ops are registered as ``torch.ops.dcn_ref.<name>``
(and ``<name>_backward``) with fake implementations and autograd formulas, so they work
under ``torch.autograd``, ``torch.compile``, ``torch.library.opcheck`` and
``DistributedDataParallel``. CPU tensors run the CPU kernels (no copies for contiguous
tensors), CUDA tensors the CUDA kernels on PyTorch's current stream. float16 and bfloat16
tensors are computed in float32 and the results rounded back; inside ``torch.autocast``
the ops run in float32.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("dcn_ref.torch needs PyTorch: pip install 'dcn-ref[torch]'") from exc

from ._checks import ArgumentError
from .functional import (bilinear_sample, dcnv3, dcnv4, deform_conv2d, deform_psroi_pool,
                         deform_roi_pool, offset_sample)
from .modules import DCNv3, DCNv4, DeformConv2d
from .mmcv import (DeformConv2dPack, DeformRoIPool, DeformRoIPoolPack, ModulatedDeformConv2d,
                   ModulatedDeformConv2dPack, ModulatedDeformRoIPoolPack, modulated_deform_conv2d)

__all__ = ["ArgumentError", "deform_conv2d", "dcnv3", "dcnv4", "bilinear_sample", "offset_sample",
           "deform_roi_pool", "deform_psroi_pool", "DeformConv2d", "DCNv3", "DCNv4",
           # mmcv's names (dcn_ref.torch.mmcv has all of them, its deform_conv2d included)
           "modulated_deform_conv2d", "DeformConv2dPack", "ModulatedDeformConv2d",
           "ModulatedDeformConv2dPack", "DeformRoIPool", "DeformRoIPoolPack",
           "ModulatedDeformRoIPoolPack"]
