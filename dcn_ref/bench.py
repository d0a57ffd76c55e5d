"""Timings of the ops (and, when importable, of torchvision's) as ratios, all in one process.

``dcn-ref bench`` prints, for the four benchmark shapes, forward and
forward+backward medians of deform_conv2d, conv2d and offset_sample (float32, after a
warm-up), the deformable/plain ratios, and, when torch and torchvision are installed
(``pip install 'dcn-ref[bench]'``), their numbers on the same inputs and ours/theirs.
Then the experiment's models, and the peak memory of deform_conv2d forward+backward on
shape (c), each measured in a fresh process.
"""
import json
import os
import subprocess
import sys

import numpy as np

from .bench_shapes import SHAPES, make_inputs, median_ms, threads_line


def ours(shape, a, repeat):
    """{op: (forward ms, forward+backward ms)} for our CPU ops."""
    from . import ops
    p = {"stride": shape.stride, "padding": 1}

    def deform():
        return ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, mask=a["mask"], **p)

    def deform_both():
        deform()
        ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                   mask=a["mask"], **p)

    def conv():
        return ops.conv2d(a["input"], a["weight"], None, **p)

    def conv_both():
        conv()
        ops.conv2d_backward(a["grad"], a["input"], a["weight"], None, **p)

    def sample():
        return ops.offset_sample(a["input"], a["offset_sample"])

    def sample_both():
        sample()
        ops.offset_sample_backward(a["grad_offset_sample"], a["input"], a["offset_sample"])

    return {"deform_conv2d": (median_ms(deform, repeat), median_ms(deform_both, repeat)),
            "conv2d": (median_ms(conv, repeat), median_ms(conv_both, repeat)),
            "offset_sample": (median_ms(sample, repeat), median_ms(sample_both, repeat))}


def theirs(shape, a, repeat):
    """The same for torchvision.ops.deform_conv2d and torch's conv2d, or None without torch."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    t = {k: None if v is None else torch.tensor(v, requires_grad=True) for k, v in a.items()}
    p = {"stride": shape.stride, "padding": 1}

    def deform():
        with torch.no_grad():
            return torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], None,
                                                 mask=t["mask"], **p)

    def deform_both():
        torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], None, mask=t["mask"],
                                      **p).backward(t["grad"])

    def conv():
        with torch.no_grad():
            return torch.nn.functional.conv2d(t["input"], t["weight"], None, **p)

    def conv_both():
        torch.nn.functional.conv2d(t["input"], t["weight"], None, **p).backward(t["grad"])

    return {"deform_conv2d": (median_ms(deform, repeat), median_ms(deform_both, repeat)),
            "conv2d": (median_ms(conv, repeat), median_ms(conv_both, repeat)),
            "max_abs_diff": float(np.abs(deform().numpy() - _our_deform(shape, a)).max())}


def _our_deform(shape, a):
    from . import ops
    return ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, stride=shape.stride,
                             padding=1, mask=a["mask"])


# -- peak memory, each measurement in a process of its own -------------------------------

_PEAK_SCRIPT = r"""
import json, sys
import numpy as np
from dcn_ref.bench_shapes import SHAPES, make_inputs
which, name = sys.argv[1], sys.argv[2]
shape = SHAPES[name]
a = make_inputs(shape)
def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
if which == "ours":
    from dcn_ref import ops
    run = lambda: ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                             stride=shape.stride, padding=1, mask=a["mask"])
    fwd = lambda: ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, stride=shape.stride,
                                    padding=1, mask=a["mask"])
else:
    import torch, torchvision
    t = {k: None if v is None else torch.tensor(v, requires_grad=True) for k, v in a.items()}
    fwd = lambda: None
    run = lambda: torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], None,
        stride=shape.stride, padding=1, mask=t["mask"]).backward(t["grad"])
fwd(); run()                                    # compile / warm up, then measure afresh
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = rss_kib("VmRSS")
fwd(); run()
print(json.dumps({"peak_mib": (rss_kib("VmHWM") - base) / 1024}))
"""


#: For the measuring process only: glibc's malloc serves every block over 128 KiB by mmap and
#: returns it to the system when freed. By default it raises that threshold (up to 32 MiB)
#: each time it frees such a block and keeps later ones in its heap, so the warm-up's
#: arrays stay resident, the measured pass reuses them, and its peak reads as 0 MiB.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def peak_memory_mib(which, name="c"):
    """Extra resident memory (MiB) that one forward+backward adds over its inputs: the peak
    resident set (VmHWM) of a fresh process during a second pass, less its resident set
    before it, for ``which`` "ours" or "torchvision", with the same malloc settings."""
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, which, name],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, **_MALLOC_ENV})
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


# -- the report -------------------------------------------------------------------------



def run(shapes=tuple(SHAPES), repeat=5, models=True, memory=True, out=print):
    """Print the benchmark tables; return the figures as a dict.

    All of our timings (ops, then models) come before any of torch's; ``bench_realistic``
    interleaves them, as a script that uses both libraries does."""
    inputs = {name: make_inputs(SHAPES[name]) for name in shapes}
    mine = {name: ours(SHAPES[name], inputs[name], repeat) for name in shapes}
    from . import bench_dcnv3                   # DCNv3 beside grid_sample (bench_dcnv3.py)
    dcnv3_mine = bench_dcnv3.measure_ours(repeat)
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
    figures["dcnv3"] = bench_dcnv3.report(dcnv3_mine, repeat, out)     # then grid_sample's
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
        from .torch.bench import run as run_bridge     # after torch's kernels have run
        figures["torch_bridge"] = run_bridge(bridge_shapes, repeat, out)
    if models:
        figures["models"] = model_figures
        print_models(model_figures, out)
    return figures


def measure_models(repeat):
    """Forward of a batch of 32 (eval mode) and one training step (Adam) of each model."""
    from . import models
    from .nn import SoftmaxCrossEntropy
    from .optim import Adam
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
