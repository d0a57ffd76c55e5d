"""dcn_ref: a reference implementation of deformable convolution (DCNv1/v2) in NumPy and
Numba, with hand-derived backward passes, for the CPU and CUDA."""

__version__ = "0.1.0"
