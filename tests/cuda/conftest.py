"""CUDA tests. Run them in Numba's simulator with NUMBA_ENABLE_CUDASIM=1 set before
Numba is imported (``.ci/run`` does), or on a real GPU without it."""
import os

import pytest
from numba import cuda

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def pytest_collection_modifyitems(config, items):
    # the hook sees every collected test of the session: mark only those in this folder
    here = os.path.dirname(__file__)
    items = [item for item in items if str(item.path).startswith(here + os.sep)]
    if not cuda.is_available():
        skip = pytest.mark.skip(reason="numba.cuda.is_available() is False: no CUDA GPU, and "
                                       "NUMBA_ENABLE_CUDASIM=1 was not set before Numba was imported")
        for item in items:
            item.add_marker(skip)
    elif SIMULATED:
        skip = pytest.mark.skip(reason="needs a real CUDA GPU (this run uses Numba's simulator)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
