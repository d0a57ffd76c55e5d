"""Peak memory of one deform_conv2d forward+backward, ours or torchvision's, each measured
in a fresh process (the last line of ``dcn-ref bench``)."""
import json
import os
import subprocess
import sys

_PEAK_SCRIPT = r"""
import json, sys
import numpy as np
from dcn_ref.bench.shapes import SHAPES, make_inputs
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
