import os
import sys

import dcn_ref  # noqa: F401  (first, so its thread settings apply before NumPy starts OpenBLAS)

# tests/helpers.py is imported as ``helpers`` from tests/ and tests/cuda/ alike
sys.path.insert(0, os.path.dirname(__file__))
