"""Tests of the ONNX export and the OpenVINO rules; they need the export extra
(``pip install -e '.[test,torch,export]'``: onnx, onnxscript, onnxruntime, openvino) and
are skipped, with the reason, where it is not installed."""
import importlib.util

import pytest

MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime", "openvino")
           if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    if not MISSING:
        return
    skip = pytest.mark.skip(reason=f"needs the export extra (missing: {', '.join(MISSING)})")
    for item in items:
        if "tests/export/" in str(item.path).replace("\\", "/"):
            item.add_marker(skip)
