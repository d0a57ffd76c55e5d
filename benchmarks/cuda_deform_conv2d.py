"""deform_conv2d on a GPU: dcn_ref's CUDA kernels against torchvision, in one process.

    python benchmarks/cuda_deform_conv2d.py [--repeat 20] [--dtype float32]

For each of the four benchmark shapes it prints forward and forward+backward medians
(ms, after warm-up, synchronised), our atomic and deterministic backward, torchvision's,
and how far our output is from torchvision's. Needs a CUDA GPU, torch and torchvision.
"""
import argparse

import numpy as np
import torch
import torchvision
from numba import cuda

from dcn_ref import ops
from dcn_ref.bench import timing
from dcn_ref.bench.shapes import SHAPES   # all 3x3, padding 1, offsets N(0, 2^2)


def synchronised(fn):
    """``fn`` and then a wait for the GPU work of both libraries, so its time is measured."""
    def call():
        fn()
        cuda.synchronize()
        torch.cuda.synchronize()
    return call


def median_ms(fn, repeat):
    return timing.median_ms(synchronised(fn), repeat, warmup=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, {args.dtype}, median of {args.repeat} after warm-up")
    header = (f"{'shape':<6}{'ours fwd':>10}{'tv fwd':>9}{'ours f+b':>10}{'ours f+b det':>14}"
              f"{'tv f+b':>9}{'f+b ours/tv':>13}{'det/atomic':>12}{'max |diff| fwd':>16}")
    print(header)
    for name, (N, C, H, W, C_out, stride, with_mask) in SHAPES.items():
        rng = np.random.default_rng(0)
        out_h = (H + 2 - 3) // stride + 1
        out_w = (W + 2 - 3) // stride + 1
        host = {
            "input": rng.standard_normal((N, C, H, W)),
            "offset": rng.normal(0, 2, (N, 18, out_h, out_w)),
            "weight": rng.standard_normal((C_out, C, 3, 3)) / np.sqrt(9 * C),
            "bias": rng.standard_normal(C_out),
            "mask": rng.uniform(0, 1, (N, 9, out_h, out_w)) if with_mask else None,
        }
        host = {k: None if v is None else v.astype(dtype) for k, v in host.items()}
        grad = rng.standard_normal((N, C_out, out_h, out_w)).astype(dtype)
        dev = {k: None if v is None else cuda.to_device(v) for k, v in host.items()}
        dev_grad = cuda.to_device(grad)
        params = dict(stride=stride, padding=1)

        def ours_forward():
            return ops.deform_conv2d(**dev, **params)

        def ours_both(deterministic=False):
            ops.deform_conv2d(**dev, **params)
            ops.deform_conv2d_backward(dev_grad, **dev, **params, deterministic=deterministic)

        t = {k: None if v is None else torch.tensor(v, device="cuda", requires_grad=True)
             for k, v in host.items()}
        t_grad = torch.tensor(grad, device="cuda")

        def tv_forward():
            with torch.no_grad():
                return torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"],
                                                     t["bias"], stride=stride, padding=1,
                                                     mask=t["mask"])

        def tv_both():
            out = torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"],
                                                stride=stride, padding=1, mask=t["mask"])
            out.backward(t_grad)

        diff = np.abs(ours_forward().copy_to_host() - tv_forward().cpu().numpy()).max()
        f_ours = median_ms(ours_forward, args.repeat)
        f_tv = median_ms(tv_forward, args.repeat)
        b_ours = median_ms(ours_both, args.repeat)
        b_det = median_ms(lambda: ours_both(True), args.repeat)
        b_tv = median_ms(tv_both, args.repeat)
        print(f"{name:<6}{f_ours:>10.2f}{f_tv:>9.2f}{b_ours:>10.2f}{b_det:>14.2f}{b_tv:>9.2f}"
              f"{b_ours / b_tv:>13.2f}{b_det / b_ours:>12.2f}{diff:>16.2e}")


if __name__ == "__main__":
    main()
