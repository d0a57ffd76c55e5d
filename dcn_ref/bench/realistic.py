"""Timings as a user's script gets them: torch beside dcn_ref, calls interleaved.

``dcn-ref bench --realistic`` runs, for each bench shape, forward and forward+backward of
our deform_conv2d and conv2d, and (when importable) of ``torchvision.ops.deform_conv2d``
and ``torch.nn.functional.conv2d`` on the same float32 inputs. NumPy, torch and
torchvision are imported before any of our kernels runs. Our figures are taken twice:

    alone         our calls back to back, before torch has run anything
    interleaved   round by round: torch's conv2d, torchvision's deform_conv2d, then ours,
                  each timed once a round, so that every call of ours follows calls of
                  torch's (its thread pools, its caches)

and each figure is the median over the rounds. The last column is torchvision's
interleaved forward+backward over ours.
"""
from .calls import our_calls, their_calls
from .shapes import SHAPES, make_inputs, threads_line
from .timing import interleaved_ms, median_ms

try:                                     # torch first: the process a user runs, not ours alone
    import torch
    import torchvision
except ImportError:                      # pragma: no cover - depends on the environment
    torch = torchvision = None

OPS = ("deform_conv2d", "conv2d")


def _ours(shape, a):
    """{(op, pass): call} of our deform_conv2d and conv2d."""
    return {key: call for key, call in our_calls(shape, a).items() if key[0] in OPS}


def measure(shape_names=tuple(SHAPES), rounds=5):
    """{shape: {'alone': {...}, 'interleaved': {...}, 'torch': {...}}}, keys (op, pass)."""
    inputs = {name: make_inputs(SHAPES[name]) for name in shape_names}
    figures = {}
    for name in shape_names:                     # ours alone first: torch has run nothing yet
        mine = _ours(SHAPES[name], inputs[name])
        figures[name] = {"alone": {key: median_ms(call, rounds) for key, call in mine.items()}}
    for name in shape_names:
        calls = {("theirs",) + key: call for key, call in their_calls(SHAPES[name],
                                                                      inputs[name]).items()}
        calls.update({("ours",) + key: call
                      for key, call in _ours(SHAPES[name], inputs[name]).items()})
        both = dict(zip(calls, interleaved_ms(list(calls.values()), rounds)))
        figures[name]["interleaved"] = {k[1:]: v for k, v in both.items() if k[0] == "ours"}
        figures[name]["torch"] = {k[1:]: v for k, v in both.items() if k[0] == "theirs"}
    return figures


def run(shape_names=tuple(SHAPES), rounds=5, out=print):
    """Print the table; return the figures."""
    figures = measure(shape_names, rounds)
    versions = (f"torch {torch.__version__}, torchvision {torchvision.__version__}"
                if torch is not None else "torch not installed")
    out(f"dcn-ref bench --realistic: {threads_line()}; {versions}; NumPy and torch imported "
        f"first; median of {rounds} rounds, ms")
    out("")
    out(f"{'shape':<6}{'op':<15}{'alone fwd':>10}{'f+b':>8}{'interleaved fwd':>16}{'f+b':>8}"
        f"{'inter/alone f+b':>16}{'torch fwd':>10}{'f+b':>8}{'theirs/ours f+b':>16}")
    for name in shape_names:
        f = figures[name]
        for op in OPS:
            af, ab = f["alone"][op, "fwd"], f["alone"][op, "f+b"]
            jf, jb = f["interleaved"][op, "fwd"], f["interleaved"][op, "f+b"]
            row = (f"{'(' + name + ')' if op == OPS[0] else '':<6}{op:<15}{af:>10.1f}{ab:>8.1f}"
                   f"{jf:>16.1f}{jb:>8.1f}{jb / ab:>16.2f}")
            if f["torch"]:
                tf, tb = f["torch"][op, "fwd"], f["torch"][op, "f+b"]
                row += f"{tf:>10.1f}{tb:>8.1f}{tb / jb:>16.2f}"
            out(row)
    out("")
    out("shapes: " + "; ".join(f"({k}) {SHAPES[k].describe()}" for k in shape_names))
    return figures
