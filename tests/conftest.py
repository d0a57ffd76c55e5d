import os
import sys

# tests/helpers.py is imported as ``helpers`` from tests/ and tests/cuda/ alike
sys.path.insert(0, os.path.dirname(__file__))
