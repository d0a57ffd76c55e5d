"""Kernels launched inside ``on_stream`` go to that stream, and give the CPU's numbers."""
import numpy as np
from numba import cuda

from dcn_ref import ops
from dcn_ref.cuda import launch

from helpers import assert_close, deform_case


def test_ops_on_a_stream_of_their_own_equal_the_cpu(monkeypatch):
    rng = np.random.default_rng(0)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=3)
    stream = cuda.stream()
    configs = []
    real_current = launch.current_stream
    monkeypatch.setattr(launch, "current_stream", lambda: configs.append(real_current())
                        or real_current())
    with launch.on_stream(stream):
        out = ops.deform_conv2d(**inputs, **params, target="cuda")
        grads = ops.deform_conv2d_backward(np.ones_like(out), **inputs, **params, target="cuda")
    stream.synchronize()
    assert configs and all(s is stream for s in configs)
    assert launch.current_stream() == 0
    assert_close(out, ops.deform_conv2d(**inputs, **params), 1e-10, "forward")
    cpu = ops.deform_conv2d_backward(np.ones_like(out), **inputs, **params)
    for name in cpu._fields:
        if getattr(cpu, name) is not None:
            assert_close(getattr(grads, name), getattr(cpu, name), 1e-10, name)
