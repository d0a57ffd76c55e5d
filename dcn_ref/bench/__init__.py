"""The benchmarks of dcn_ref: ``dcn-ref bench`` and the scripts in ``benchmarks/``.

    shapes.py     the four deformable-convolution shapes every benchmark times, their
                  inputs, and the line that says how many threads ran
    timing.py     the one timer: medians of calls made round by round
    calls.py      what is timed: our ops, and torch's and torchvision's on the same inputs
    table.py      ``dcn-ref bench``: the ops' table, the models, the peak memory (memory.py)
    dcnv3.py      its DCNv3 rows, beside the ``grid_sample`` formulation
    peers.py      its peers: OpenVINO's and ONNX Runtime's deformable convolutions, and
                  torch's plain conv2d as the physical reference
    bridge.py     its PyTorch bridge rows (when torch is installed)
    realistic.py  ``dcn-ref bench --realistic``: ours beside torch, calls interleaved

Speed is measured here, in figures printed as ratios within one process, never in tests.
"""
from .shapes import SHAPES  # noqa: F401  (the command line checks --shapes against these)
from .table import run  # noqa: F401
