"""dcn_ref: a reference implementation of deformable convolution (DCNv1/v2) in NumPy and
Numba, with hand-derived backward passes, for the CPU and CUDA."""

__version__ = "0.1.0"

from . import fork_safety as _fork_safety  # noqa: E402,F401  (an at-fork hook: see its docstring)
