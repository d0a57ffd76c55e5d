"""Shared helpers: random problem generators and a comparison that prints ours vs theirs."""
import math

import numpy as np

from dcn_ref.gradcheck import off_kink, rel_error


def assert_close(ours, reference, tol, what=""):
    """max |ours - reference| / max(|ours|, |reference|) <= tol, with both printed on failure."""
    ours = np.asarray(ours)
    reference = np.asarray(reference)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs reference {reference.shape}"
    err = rel_error(ours, reference)
    if not err <= tol:
        worst = np.unravel_index(np.argmax(np.abs(ours.astype(np.float64) - reference)), ours.shape)
        raise AssertionError(f"{what}: relative error {err:.3e} > {tol:g}; worst at {worst}: "
                             f"ours {ours[worst]!r} vs reference {reference[worst]!r}")


def compare(ours, reference, tol, what=""):
    """An array and its reference, or two gradient NamedTuples field by field: None in
    both, or NumPy arrays of one dtype, close (``assert_close``)."""
    if not hasattr(reference, "_fields"):
        assert isinstance(ours, np.ndarray) and ours.dtype == reference.dtype, (
            f"{what}: {type(ours).__name__} of dtype {getattr(ours, 'dtype', None)} vs "
            f"reference dtype {reference.dtype}")
        assert_close(ours, reference, tol, what)
        return
    for name in reference._fields:
        a, b = getattr(ours, name), getattr(reference, name)
        assert (a is None) == (b is None), f"{what}.{name}: one of ours/reference is None"
        if a is not None:
            compare(a, b, tol, f"{what}.{name}")


def assert_cuda_equals_cpu(forward, backward, rng, *args, tol=1e-10, **kwargs):
    """``forward(*args, **kwargs)`` on the CUDA target equals the CPU target, and so does
    ``backward`` of a random output gradient, in atomic and in deterministic mode."""
    cpu = forward(*args, **kwargs)
    assert_close(forward(*args, **kwargs, target="cuda"), cpu, tol, "forward")
    g = rng.standard_normal(cpu.shape)
    cpu_grads = backward(g, *args, **kwargs)
    for deterministic in (False, True):
        compare(backward(g, *args, **kwargs, target="cuda", deterministic=deterministic),
                      cpu_grads, tol, f"deterministic={deterministic}")


def output_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def deform_case(rng, *, N=2, C_in=4, C_out=6, H=6, W=5, kernel=(3, 2), stride=(1, 1),
                padding=(1, 1), dilation=(1, 1), G=1, groups=1, mask=True, bias=True,
                offset_scale=1.5, dtype=np.float64):
    """A deform_conv2d problem: (inputs dict, params dict), offsets kept off integer kinks."""
    kh, kw = kernel
    out_h = output_size(H, kh, stride[0], padding[0], dilation[0])
    out_w = output_size(W, kw, stride[1], padding[1], dilation[1])
    K = kh * kw
    inputs = {
        "input": rng.standard_normal((N, C_in, H, W)),
        "offset": off_kink(rng, (N, 2 * G * K, out_h, out_w), -offset_scale, offset_scale),
        "weight": rng.standard_normal((C_out, C_in // groups, kh, kw)),
        "bias": rng.standard_normal(C_out) if bias else None,
        "mask": rng.uniform(0.1, 1.0, (N, G * K, out_h, out_w)) if mask else None,
    }
    inputs = {k: None if v is None else v.astype(dtype) for k, v in inputs.items()}
    params = {"stride": stride, "padding": padding, "dilation": dilation}
    return inputs, params


def random_deform_case(rng, dtype=np.float64):
    """A deform_conv2d problem with random sizes, groups, offset groups, strides and mask."""
    G = int(rng.choice([1, 2]))
    groups = int(rng.choice([1, 2]))
    C_in = math.lcm(G, groups) * int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    padding = tuple(int(p) for p in rng.integers(0, 3, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    # smallest image with a non-empty output, plus some room
    H = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]) + int(rng.integers(0, 4))
    W = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]) + int(rng.integers(0, 4))
    return deform_case(rng, N=int(rng.integers(1, 3)), C_in=C_in, C_out=groups * int(rng.integers(1, 3)),
                       H=H, W=W, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                       G=G, groups=groups, mask=bool(rng.integers(0, 2)), bias=bool(rng.integers(0, 2)),
                       offset_scale=float(rng.choice([0.8, 2.5, 6.0])), dtype=dtype)
