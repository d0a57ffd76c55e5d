"""Timings of the ops (and, when importable, of torchvision's) as ratios, all in one process.

``dcn-ref bench`` prints, for the four benchmark shapes, forward and
forward+backward medians of deform_conv2d, conv2d and offset_sample (float32, after a
warm-up), the deformable/plain ratios, and, when torch and torchvision are installed
(``pip install 'dcn-ref[bench]'``), their numbers on the same inputs and ours/theirs.
Then the peers (``peers.py``): OpenVINO's and ONNX Runtime's deformable convolutions,
forward, when installed (``pip install 'dcn-ref[peers]'``), and ours over torch's plain
``conv2d``. Then the experiment's models, and the peak memory of deform_conv2d
forward+backward on shape (c), each measured in a fresh process.
"""
import numpy as np

from .calls import our_calls, their_calls
from .memory import peak_memory_mib
from .shapes import SHAPES, make_inputs, threads_line
from .timing import median_ms


def ours(shape, a, repeat):
    """{op: (forward ms, forward+backward ms)} for our CPU ops."""
    calls = our_calls(shape, a)
    return {op: (median_ms(calls[op, "fwd"], repeat), median_ms(calls[op, "f+b"], repeat))
            for op in ("deform_conv2d", "conv2d", "offset_sample")}


def theirs(shape, a, repeat):
    """The same for torchvision.ops.deform_conv2d and torch's conv2d, or None without torch."""
    calls = their_calls(shape, a)
    if not calls:
        return None
    figures = {op: (median_ms(calls[op, "fwd"], repeat), median_ms(calls[op, "f+b"], repeat))
               for op in ("deform_conv2d", "conv2d")}
    theirs_out = calls["deform_conv2d", "fwd"]().numpy()
    figures["max_abs_diff"] = float(np.abs(theirs_out - _our_deform(shape, a)).max())
    return figures


def _our_deform(shape, a):
    from .. import ops
    return ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, stride=shape.stride,
                             padding=1, mask=a["mask"])


# -- the report -------------------------------------------------------------------------

def run(shapes=tuple(SHAPES), repeat=5, models=True, memory=True, out=print):
    """Print the benchmark tables; return the figures as a dict.

    All of our timings (ops, then models) come before any of torch's; ``realistic.py``
    interleaves them, as a script that uses both libraries does."""
    inputs = {name: make_inputs(SHAPES[name]) for name in shapes}
    mine = {name: ours(SHAPES[name], inputs[name], repeat) for name in shapes}
    from . import dcnv3                         # DCNv3 beside grid_sample (dcnv3.py)
    dcnv3_mine = dcnv3.measure_ours(repeat)
    model_figures = measure_models(repeat) if models else None
    other = {name: theirs(SHAPES[name], inputs[name], repeat) for name in shapes}
    figures = {"shapes": {name: {"ours": mine[name], "torch": other[name]} for name in shapes}}

    out(f"dcn-ref bench: {threads_line()}; median of {repeat} after warm-up, ms")
    out("")
    out(f"{'shape':<6}{'op':<15}{'fwd':>9}{'fwd+bwd':>10}{'fwd/conv':>10}{'f+b/conv':>10}"
        f"{'torch fwd':>11}{'torch f+b':>11}{'theirs/ours f+b':>17}")
    for name in shapes:
        conv_f, conv_b = mine[name]["conv2d"]
        for op, (f, b) in mine[name].items():
            row = f"{'(' + name + ')' if op == 'deform_conv2d' else '':<6}{op:<15}{f:>9.1f}{b:>10.1f}"
            row += f"{f / conv_f:>10.2f}{b / conv_b:>10.2f}" if op != "conv2d" else f"{'':>20}"
            if other[name] is not None and op in other[name]:
                tf, tb = other[name][op]
                row += f"{tf:>11.1f}{tb:>11.1f}{tb / b:>17.2f}"
            out(row)
        if other[name] is not None:
            out(f"{'':<6}(our deform_conv2d output vs torchvision's: max |diff| "
                f"{other[name]['max_abs_diff']:.1e})")
    out("")
    out("shapes: " + "; ".join(f"({k}) {SHAPES[k].describe()}" for k in shapes))
    from . import peers                     # after ours have run: Numba's threading layer
    figures["peers"] = peers.run(inputs, repeat, out)
    figures["dcnv3"] = dcnv3.report(dcnv3_mine, repeat, out)     # then grid_sample's
    if memory:
        ours_mib = peak_memory_mib("ours")
        theirs_mib = peak_memory_mib("torchvision")
        figures["peak_mib"] = {"ours": ours_mib, "torchvision": theirs_mib}
        text = f"peak extra memory of deform_conv2d forward+backward on (c): ours {ours_mib:.0f} MiB"
        if theirs_mib is not None:
            text += f", torchvision {theirs_mib:.0f} MiB"
        out(text)
    bridge_shapes = tuple(name for name in shapes if name in ("a", "c", "d"))
    if bridge_shapes and other[shapes[0]] is not None:   # torch and torchvision importable
        from .bridge import run as run_bridge          # after torch's kernels have run
        figures["torch_bridge"] = run_bridge(bridge_shapes, repeat, out)
    if models:
        figures["models"] = model_figures
        print_models(model_figures, out)
    return figures


def measure_models(repeat):
    """Forward of a batch of 32 (eval mode) and one training step (Adam) of each model."""
    from .. import models
    from ..nn import SoftmaxCrossEntropy
    from ..optim import Adam
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    figures = {}
    for name, build in (("cnn", models.cnn), ("deform_cnn('offset')", lambda: models.deform_cnn("offset")),
                        ("deform_cnn('dcn')", lambda: models.deform_cnn("dcn"))):
        model = build()
        loss, optimizer = SoftmaxCrossEntropy(), Adam(model, lr=1e-4)
        model.eval()
        forward = median_ms(lambda: model.forward(x), repeat)
        model.train()

        def step():
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            optimizer.step()

        train = median_ms(step, repeat)
        figures[name] = {"forward_ms_batch32": forward, "train_step_ms": train,
                         "train_images_per_s": 32e3 / train}
    return figures


def print_models(figures, out=print):
    base = figures["cnn"]
    out("")
    out(f"{'model':<22}{'fwd ms (32)':>12}{'fwd / cnn':>11}{'train step ms':>15}{'images/s':>10}")
    for name, f in figures.items():
        out(f"{name:<22}{f['forward_ms_batch32']:>12.1f}"
            f"{f['forward_ms_batch32'] / base['forward_ms_batch32']:>11.2f}"
            f"{f['train_step_ms']:>15.1f}{f['train_images_per_s']:>10.0f}")
