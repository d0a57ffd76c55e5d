"""What every benchmark of dcn_ref shares: the four deformable-convolution shapes, their
inputs and the line that says how many threads ran.

``dcn-ref bench`` (``table.py``), its DCNv3 rows (``dcnv3.py``), the realistic run
(``realistic.py``), the PyTorch bridge's figures (``bridge.py``) and the scripts in
``benchmarks/`` all read these, so their figures are for the same problems.
"""
import os
from typing import NamedTuple

import numpy as np


class Shape(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    C_out: int
    stride: int
    mask: bool

    def describe(self):
        return (f"N={self.N}, C={self.C}, {self.H}x{self.W} -> {self.C_out}, k3"
                f"{' s2' if self.stride == 2 else ''} p1{', mask' if self.mask else ''}")


SHAPES = {
    "a": Shape(32, 64, 14, 14, 128, 1, False),
    "b": Shape(32, 128, 14, 14, 128, 2, False),
    "c": Shape(2, 256, 50, 50, 256, 1, True),
    "d": Shape(8, 64, 56, 56, 64, 1, False),
}


def make_inputs(shape, seed=0, dtype=np.float32):
    """float32 inputs of a 3x3, padding-1 deformable convolution; offsets ~ N(0, 2^2)."""
    rng = np.random.default_rng(seed)
    out_h = (shape.H + 2 - 3) // shape.stride + 1
    out_w = (shape.W + 2 - 3) // shape.stride + 1
    arrays = {
        "input": rng.standard_normal((shape.N, shape.C, shape.H, shape.W)),
        "offset": rng.normal(0.0, 2.0, (shape.N, 18, out_h, out_w)),
        "weight": rng.standard_normal((shape.C_out, shape.C, 3, 3)) / np.sqrt(9 * shape.C),
        "mask": rng.uniform(0.0, 1.0, (shape.N, 9, out_h, out_w)) if shape.mask else None,
        "grad": rng.standard_normal((shape.N, shape.C_out, out_h, out_w)),
        "offset_sample": rng.normal(0.0, 2.0, (shape.N, 2 * shape.C, shape.H, shape.W)),
        "grad_offset_sample": rng.standard_normal((shape.N, shape.C, shape.H, shape.W)),
    }
    return {k: None if v is None else v.astype(dtype) for k, v in arrays.items()}


def threads_line():
    """How many CPUs and Numba threads ran, for the first line of a table."""
    import numba
    return (f"{os.cpu_count()} CPUs, Numba threads {numba.get_num_threads()} "
            f"(NUMBA_NUM_THREADS), float32")
