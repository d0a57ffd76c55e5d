"""deform_roi_pool without offsets against torchvision.ops.roi_align(aligned=True).

    python benchmarks/roi_align_vs_torchvision.py [--cuda] [--trials 200]

Random problems (RoIs inside, across and outside the image, empty and tiny RoIs, adaptive
and fixed sampling, several spatial scales), forward and input gradient, in float64 and
float32, on the CPU and with --cuda also on the GPU (our target="cuda" against
torchvision's CUDA kernel); prints the largest absolute difference from torchvision.
The test suite cannot import torchvision, so it checks against loop references and
numbers recorded from this comparison instead. Needs torch and torchvision.
"""
import argparse

import numpy as np
import torch
import torchvision

from dcn_ref import ops


def random_problem(rng, dtype):
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 12)), int(rng.integers(1, 12))
    K = int(rng.integers(0, 7))
    scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16]))
    x1 = rng.uniform(-4, W / scale + 2, K)
    y1 = rng.uniform(-4, H / scale + 2, K)
    w = rng.uniform(0, 1.2 * W / scale, K) * (rng.uniform(size=K) > 0.1)   # some empty RoIs
    h = rng.uniform(0, 1.2 * H / scale, K)
    rois = np.stack([rng.integers(0, N, K), x1, y1, x1 + w, y1 + h], axis=1)
    params = dict(output_size=(int(rng.integers(1, 5)), int(rng.integers(1, 5))),
                  spatial_scale=scale, sampling_ratio=int(rng.choice([0, 1, 2, 3])))
    return rng.standard_normal((N, C, H, W)).astype(dtype), rois.astype(dtype), params


def max_difference(device, dtype, trials=200):
    """max |ours - torchvision| over random problems: (forward, input gradient)."""
    rng = np.random.default_rng(0)
    worst_out = worst_grad = 0.0
    target = "cuda" if device == "cuda" else "cpu"
    for _ in range(trials):
        x, rois, params = random_problem(rng, dtype)
        ours = ops.deform_roi_pool(x, rois, **params, target=target)
        g = rng.standard_normal(ours.shape).astype(dtype)
        ours_grad = ops.deform_roi_pool_backward(g, x, rois, **params, target=target).input
        xt = torch.tensor(x, device=device, requires_grad=True)
        theirs = torchvision.ops.roi_align(xt, torch.tensor(rois, device=device),
                                           params["output_size"], params["spatial_scale"],
                                           params["sampling_ratio"], aligned=True)
        (theirs * torch.tensor(g, device=device)).sum().backward()
        worst_out = max(worst_out, float(np.abs(ours - theirs.detach().cpu().numpy()).max(initial=0)))
        worst_grad = max(worst_grad, float(np.abs(ours_grad - xt.grad.cpu().numpy()).max(initial=0)))
    return worst_out, worst_grad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also compare on the GPU")
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{args.trials} random problems each")
    for device in ["cpu", "cuda"] if args.cuda else ["cpu"]:
        for dtype in (np.float64, np.float32):
            out, grad = max_difference(device, dtype, args.trials)
            print(f"{device:<5}{np.dtype(dtype).name:<9} max |ours - torchvision|: forward "
                  f"{out:.3g}, input gradient {grad:.3g}")


if __name__ == "__main__":
    main()
