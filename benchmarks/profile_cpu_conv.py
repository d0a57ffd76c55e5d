"""Where the time of conv2d and deform_conv2d forward+backward goes on the CPU.

    python benchmarks/profile_cpu_conv.py [--shapes abcd] [--repeat 5]

For each shape of ``dcn-ref bench``, every kernel that ``dcn_ref/cpu/conv.py`` calls
(im2col, the deformable im2col, col2im, the offset/mask pass, the layout transposes) is
wrapped with a timer for one forward+backward, and the median over the repeats is
printed per kernel. What is left of the total is the GEMMs (``dcn_ref/cpu/gemm.py``) and
array allocation; the last columns time the same three GEMMs alone, on arrays of the
shapes conv.py multiplies, and give their rate in GFLOP/s. Together they show what bounds each
op: the sampling kernels, or the matrix products that a plain convolution also pays.

Then, for the experiment's cnn and deform_cnn("dcn") (batch 32, eval mode), the forward
time of every layer, and for the three deformable layers of "dcn" the split into the offset
convolution and the deformable convolution beside the plain conv2d they replace.
"""
import argparse
import statistics
import time
from collections import defaultdict

import numpy as np

from dcn_ref import ops
from dcn_ref.bench.shapes import SHAPES, make_inputs, threads_line
from dcn_ref.bench.timing import median_ms
from dcn_ref.cpu import columns as cl
from dcn_ref.cpu import gemm

KERNELS = ("im2col", "deform_im2col", "col2im", "deform_col2im", "deform_coord_grad",
           "deform_backward", "transpose_last_two")


class Timers:
    """Replaces the kernels in ``dcn_ref.cpu.columns`` by timed wrappers."""

    def __init__(self):
        self.spent = defaultdict(float)
        self.original = {name: getattr(cl, name) for name in KERNELS}
        for name, kernel in self.original.items():
            setattr(cl, name, self._timed(name, kernel))

    def _timed(self, name, kernel):
        def call(*args, **kwargs):
            start = time.perf_counter()
            result = kernel(*args, **kwargs)
            self.spent[name] += (time.perf_counter() - start) * 1e3
            return result
        return call

    def restore(self):
        for name, kernel in self.original.items():
            setattr(cl, name, kernel)


def profile(op, shape, a, repeat):
    """{kernel: median ms} and the median total of one forward+backward of ``op``."""
    p = {"stride": shape.stride, "padding": 1}

    def both():
        if op == "conv2d":
            ops.conv2d(a["input"], a["weight"], None, **p)
            ops.conv2d_backward(a["grad"], a["input"], a["weight"], None, **p)
        else:
            ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, mask=a["mask"], **p)
            ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                       mask=a["mask"], **p)

    both()                                                   # compile and warm up
    per_kernel, totals = defaultdict(list), []
    for _ in range(repeat):
        timers = Timers()
        start = time.perf_counter()
        both()
        totals.append((time.perf_counter() - start) * 1e3)
        timers.restore()
        for name in KERNELS:
            per_kernel[name].append(timers.spent[name])
    return {k: statistics.median(v) for k, v in per_kernel.items()}, statistics.median(totals)


def gemms_alone(shape, repeat):
    """Median ms of the three GEMMs of forward+backward, on arrays of conv.py's shapes."""
    out_h = (shape.H + 2 - 3) // shape.stride + 1
    out_w = (shape.W + 2 - 3) // shape.stride + 1
    rows, inner = shape.N * out_h * out_w, 9 * shape.C
    rng = np.random.default_rng(0)
    columns = rng.standard_normal((rows, inner), dtype=np.float32)
    weight = rng.standard_normal((shape.C_out, inner), dtype=np.float32)
    gout = rng.standard_normal((rows, shape.C_out), dtype=np.float32)

    out = np.empty((rows, shape.C_out), np.float32)
    grad_columns = np.empty_like(columns)
    grad_w = np.zeros_like(weight)
    partial = np.empty((gemm.blocks(),) + weight.shape, np.float32)
    work = rows * inner * shape.C_out

    def three():                                             # as conv.py runs them
        with gemm.single_threaded_blas():
            gemm.matmul_nt(columns, weight, gemm.blocks(), out, work=work)           # forward
            gemm.matmul_tn_add(gout, columns, partial, grad_w, work=work)  # the weight's gradient
            gemm.matmul_nn(gout, weight, gemm.blocks(), grad_columns, work=work)  # the columns'

    ms = median_ms(three, repeat)
    return ms, 3 * 2 * rows * inner * shape.C_out / (ms * 1e-3) / 1e9


def layer_times(model, x, repeat):
    """{layer name: median forward ms} over ``repeat`` passes (eval mode)."""
    model.eval()
    model.forward(x)
    spent = defaultdict(list)
    for _ in range(repeat):
        h = x
        for layer in model.layers:
            start = time.perf_counter()
            h = layer.forward(h)
            spent[layer.name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in spent.items()}


def profile_models(repeat):
    from dcn_ref import models
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 28, 28), dtype=np.float32)
    cnn, dcn = layer_times(models.cnn(), x, repeat), layer_times(models.deform_cnn("dcn"), x, repeat)
    print(f"\nforward of a batch of 32, ms (median of {repeat}): cnn {sum(cnn.values()):.1f}, "
          f"dcn {sum(dcn.values()):.1f}")
    print("| layer | cnn | dcn | dcn: offset conv2d | dcn: deform_conv2d |")
    print("| --- | --- | --- | --- | --- |")
    # the inputs of conv12, conv21, conv22: (channels, size, stride, output channels)
    deformed = {"conv12": (32, 28, 2, 64), "conv21": (64, 14, 1, 128), "conv22": (128, 14, 2, 128)}
    for name in cnn:
        if name in deformed:
            C, H, s, c_out = deformed[name]
            h_out = (H - 1) // s + 1
            xi = rng.random((32, C, H, H), dtype=np.float32)
            w, w_off = rng.random((c_out, C, 3, 3), dtype=np.float32), rng.random((18, C, 3, 3), dtype=np.float32)
            off = rng.normal(0, 1, (32, 18, h_out, h_out)).astype(np.float32)
            p = {"stride": s, "padding": 1}
            split = (f" {median_ms(lambda: ops.conv2d(xi, w_off, None, **p), repeat):.1f} |"
                     f" {median_ms(lambda: ops.deform_conv2d(xi, off, w, None, **p), repeat):.1f} |")
        else:
            split = " | |"
        print(f"| {name} | {cnn[name]:.1f} | {dcn[name]:.1f} |{split}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="abcd")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-models", action="store_true", help="skip the per-layer model profile")
    args = parser.parse_args()
    print(threads_line())
    used = list(KERNELS)
    print("ms per forward+backward (float32, median); 'rest' = total - kernels = GEMMs + "
          "allocation")
    print(f"| shape | op | total | {' | '.join(used)} | rest | 3 GEMMs alone | GEMM GFLOP/s |")
    print("|" + " --- |" * (len(used) + 6))
    for name in args.shapes:
        shape = SHAPES[name]
        a = make_inputs(shape)
        gemm_ms, rate = gemms_alone(shape, args.repeat)
        for op in ("conv2d", "deform_conv2d"):
            kernels, total = profile(op, shape, a, args.repeat)
            rest = total - sum(kernels.values())
            cells = " | ".join(f"{kernels[k]:.1f}" if kernels[k] else "-" for k in used)
            print(f"| {name} | {op} | {total:.1f} | {cells} | {rest:.1f} | {gemm_ms:.1f} | "
                  f"{rate:.0f} |")
    if not args.no_models:
        profile_models(max(args.repeat, 15))


if __name__ == "__main__":
    main()
