"""The CUDA target: Numba CUDA kernels, the same interface as ``dcn_ref.cpu`` (the protocol
``dcn_ref.targets.Target``).

    memory          to_target, to_host, empty, zeros, check_available (memory.py)
    sampling engine deform_im2col, sample_backward (= deform_col2im + deform_coord_grad)
                    (engine.py; kernels in deform.py and, for the deterministic gather
                    and its parallel sort, deterministic.py); arithmetic in the data's dtype
    convolutions    conv2d, conv2d_backward, deform_conv2d, deform_conv2d_backward
                    (conv.py: planar columns, im2col.py, and the GEMMs of gemm.py: cuBLAS
                    through nvmath-python (blas.py) where installed, else a tiled kernel)
    RoI pooling     deform_roi_pool, deform_roi_pool_backward, deform_psroi_pool,
                    deform_psroi_pool_backward (roi.py)
    DCNv3/DCNv4     dcnv3, dcnv3_backward (dcnv3_kernels.py: channels last, PointGeometry)
    forward mode,   tangent_im2col, sample_backward_backward, dcnv3_jvp,
    second order    dcnv3_backward_backward (second_order.py), deform_conv2d_jvp,
                    deform_conv2d_backward_backward (conv.py)

Arrays are C-contiguous Numba device arrays. The *col2im steps take ``deterministic``:
False scatters with atomics (fast, last bits vary from run to run), True gathers (bitwise
reproducible). Everything else is written by one thread per element in a fixed order.
"""
from .conv import (col2im, conv2d, conv2d_backward, deform_conv2d,  # noqa: F401
                   deform_conv2d_backward, deform_conv2d_backward_backward, deform_conv2d_jvp,
                   im2col)
from .dcnv3_kernels import dcnv3, dcnv3_backward  # noqa: F401
from .engine import deform_col2im, deform_coord_grad, deform_im2col, sample_backward  # noqa: F401
from .memory import check_available, empty, to_host, to_target, zeros  # noqa: F401
from .roi import (deform_psroi_pool, deform_psroi_pool_backward, deform_roi_pool,  # noqa: F401
                  deform_roi_pool_backward)
from .second_order import (dcnv3_backward_backward, dcnv3_jvp,  # noqa: F401
                           sample_backward_backward, tangent_im2col)

name = "cuda"
