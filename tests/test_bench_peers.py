"""The peers of dcn-ref bench compute what our deform_conv2d computes: OpenVINO's and ONNX
Runtime's models, as the bench builds them, give our output on a small problem (with and
without a mask, stride 2 too), OpenVINO in float32. Run in a subprocess: importing openvino
would change Numba's threading layer for the tests that follow."""
import importlib.util
import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json
import numpy as np
from dcn_ref.bench import peers
from dcn_ref.bench.shapes import Shape, make_inputs
from dcn_ref import reference
result = {}
for name, shape in {"plain": Shape(2, 4, 6, 5, 3, 1, False),
                    "mask, stride 2": Shape(1, 3, 7, 6, 2, 2, True)}.items():
    a = make_inputs(shape)
    a["offset"] = (a["offset"] + 0.013).astype(np.float32)       # off the integer kinks
    ours = reference.deform_conv2d(a["input"], a["offset"], a["weight"], None,
                                   stride=shape.stride, padding=1, mask=a["mask"])
    for runtime, build in peers.RUNTIMES.items():
        built = build(shape, a, 1)
        if built is not None:
            call, precision = built
            theirs = call()
            result[f"{runtime}, {name}"] = [float(np.abs(theirs - ours).max()), precision,
                                            list(theirs.shape) == list(ours.shape)]
print(json.dumps(result))
"""

have = [m for m in ("openvino", "onnxruntime") if importlib.util.find_spec(m) is not None]


@pytest.mark.skipif(not have, reason="neither openvino nor onnxruntime is installed "
                                     "(pip install 'dcn-ref[peers]')")
def test_the_peers_compute_our_deform_conv2d():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(result) == 2 * len(have), result
    for case, (diff, precision, same_shape) in result.items():
        assert same_shape, case
        assert precision == "f32", case
        assert diff < 1e-5, f"{case}: max |theirs - reference| = {diff}"
