"""The bridge's lines of ``dcn-ref bench``: deform_conv2d through ``dcn_ref.torch`` and
autograd against ``torchvision.ops.deform_conv2d``, and the bridge's own overhead.

torchvision runs first on every shape, and then alternates with the bridge round by round,
so that our figures are taken in a process where torch's kernels (and thread pools) have
already run, as in a real PyTorch program, and a busy machine slows both alike.
"""
import numpy as np

from .shapes import SHAPES, make_inputs
from .timing import interleaved_ms


def measure(shapes=("a", "c", "d"), repeat=5):
    """{"shapes": {name: (torchvision f+b ms, bridge f+b ms)}, "overhead": (first shape,
    direct ms, bridge ms), "fixed_cost_ms": ms} for float32 forward+backward with input,
    offset, weight (and mask) gradients."""
    import torch
    import torchvision

    from .. import ops
    from ..torch.functional import deform_conv2d

    figures = {"shapes": {}}
    for name in shapes:
        shape = SHAPES[name]
        a = make_inputs(shape)
        t = {k: None if v is None else torch.from_numpy(v).requires_grad_() for k, v in a.items()}
        wrt = [t[k] for k in ("input", "offset", "weight", "mask") if t[k] is not None]
        p = {"stride": shape.stride, "padding": 1}

        def step(fn, t=t, p=p, wrt=wrt):
            out = fn(t["input"], t["offset"], t["weight"], None, mask=t["mask"], **p)
            return torch.autograd.grad(out, wrt, t["grad"].detach())

        figures["shapes"][name] = tuple(interleaved_ms(
            [lambda: step(torchvision.ops.deform_conv2d), lambda: step(deform_conv2d)], repeat))
        if name == shapes[0]:
            def direct(a=a, p=p):
                ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, mask=a["mask"], **p)
                ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                           mask=a["mask"], **p)

            figures["overhead"] = (name, *interleaved_ms(
                [direct, lambda: step(deform_conv2d)], 2 * repeat))
    figures["fixed_cost_ms"] = _fixed_cost_ms()
    return figures


def _fixed_cost_ms(rounds=200):
    """What the bridge adds to one forward+backward, whatever the size: the difference of
    medians, through the bridge and directly, on a problem (1x2x4x4 input) so small that
    the kernels take next to no time."""
    import torch

    from .. import ops
    from ..torch.functional import deform_conv2d

    rng = np.random.default_rng(0)
    a = {"input": rng.standard_normal((1, 2, 4, 4)), "offset": rng.standard_normal((1, 18, 4, 4)),
         "weight": rng.standard_normal((2, 2, 3, 3)), "grad": rng.standard_normal((1, 2, 4, 4))}
    a = {k: v.astype(np.float32) for k, v in a.items()}
    t = {k: torch.from_numpy(v).requires_grad_() for k, v in a.items()}

    def direct():
        ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, padding=1)
        ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                   padding=1)

    def bridge():
        out = deform_conv2d(t["input"], t["offset"], t["weight"], None, padding=1)
        torch.autograd.grad(out, [t["input"], t["offset"], t["weight"]], t["grad"].detach())

    direct_ms, bridge_ms = interleaved_ms([direct, bridge], rounds)
    return bridge_ms - direct_ms


def report(figures, out=print):
    """Print the lines of ``measure``'s figures."""
    import numba
    import torch
    out("")
    out(f"PyTorch bridge, float32 forward+backward (autograd), torchvision first, alternating; "
        f"threads: torch {torch.get_num_threads()}, Numba {numba.get_num_threads()}")
    out(f"{'shape':<8}{'torchvision ms':>16}{'dcn_ref.torch ms':>18}{'speed-up':>10}")
    for name, (theirs, ours) in figures["shapes"].items():
        out(f"{'(' + name + ')':<8}{theirs:>16.1f}{ours:>18.1f}{theirs / ours:>9.2f}x")
    if "overhead" in figures:
        name, direct, bridge = figures["overhead"]
        out(f"bridge overhead on ({name}): dcn_ref.ops directly {direct:.1f} ms, through "
            f"dcn_ref.torch {bridge:.1f} ms ({100 * (bridge / direct - 1):+.1f}%, alternating)")
        fixed = figures["fixed_cost_ms"]
        out(f"the bridge's fixed cost per forward+backward (on a 4x4 problem): {fixed:.2f} ms, "
            f"{100 * fixed / direct:.2f}% of ({name}) directly")


def run(shapes=("a", "c", "d"), repeat=5, out=print):
    """Measure and print; None (and nothing printed) when torch or torchvision is missing."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        return None
    figures = measure(shapes, repeat)
    report(figures, out)
    return figures

