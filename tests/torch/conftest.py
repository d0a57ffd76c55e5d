"""Tests of the PyTorch bridge (dcn_ref.torch); they need the torch extra
(``pip install -e '.[test,torch]'``). Those marked ``gpu`` need a CUDA GPU that PyTorch
sees, and are skipped without one."""
import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # the hook sees every collected test of the session: mark only those in this folder
    here = os.path.dirname(__file__)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if str(item.path).startswith(here + os.sep) and "gpu" in item.keywords:
            item.add_marker(skip)
