"""dcn_ref: a reference implementation of deformable convolution (DCNv1/v2) in NumPy and
Numba, with hand-derived backward passes, for the CPU and CUDA."""
import os

__version__ = "0.1.0"

# The CPU ops alternate Numba's parallel kernels with OpenBLAS matrix products. By default
# both keep their threads spinning after finishing (libgomp for a few hundred thousand
# loops, OpenBLAS for 2**28 cycles), and on a small machine the spinning threads of one
# steal the cores of the other: a GEMM followed by a kernel took three times as long as
# the two apart. These defaults make idle threads sleep at once. They only take effect if
# set before NumPy (OpenBLAS) and Numba's OpenMP pool start, so set them yourself before
# importing numpy to be sure; a value you set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
