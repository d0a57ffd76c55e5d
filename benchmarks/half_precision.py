"""The error of half precision through the PyTorch bridge, against a float64 reference.

    python benchmarks/half_precision.py [--cuda] [--seed 0]

For every op of ``dcn_ref.torch``, one problem of a realistic size drawn in float64: its
tensors rounded to float32, float16 and bfloat16 go through the bridge (forward, and the
gradients of every differentiable input for one random ``grad_output``, rounded too), and
are compared with ``dcn_ref.ops`` in float64 on the unrounded values: what a user who
stores a model in half precision gets, against what the same model computes exactly. Each
row gives the output's largest absolute error, and the output's and each gradient's error
relative to the reference's largest entry (``max |ours - exact| / max |exact|``; in
brackets the same in the 2-norm). The last column is the bridge's own error: against
float64 on the values the rounded tensors hold, in units of ``u*max |exact|``. With
``--cuda`` the bridge runs on the GPU (the reference stays on the CPU).

The ops compute in float32 whatever the dtype (the bridge upcasts half-precision tensors
and rounds the results), so the half-precision rows are the rounding of the inputs
(relative ``u``: 2^-11 for float16, 2^-8 for bfloat16) carried through the op, and that
of the results. Needs torch.
"""
import argparse
import inspect

import numpy as np
import torch

import dcn_ref.torch as dt
from dcn_ref import ops
from dcn_ref.bench.shapes import SHAPES, make_inputs
from dcn_ref.grads import BY_OP

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def problems(rng):
    """{op name: positional arguments in float64 (NumPy arrays and scalars)}."""
    conv = make_inputs(SHAPES["a"], dtype=np.float64)            # the benchmarks' shape (a)
    N, _, H, W = conv["input"].shape
    # DCNv3 and DCNv4: (2, 16, 16, 64), 4 groups of 9 points, offsets ~ N(0, 1), softmax weights
    x = rng.standard_normal((2, 16, 16, 64))
    offset = rng.standard_normal((2, 16, 16, 4, 9, 2))
    logits = rng.standard_normal((2, 16, 16, 4, 9))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    offset_mask = np.concatenate([offset.reshape(2, 16, 16, 4, 18), weights], axis=-1)
    offset_mask = np.concatenate([offset_mask.reshape(2, 16, 16, 108), np.zeros((2, 16, 16, 4))],
                                 axis=-1)                        # padded to a multiple of 8
    # 16 RoIs of 2 to 8 pixels a side in 32x32 images
    K = 16
    x1, y1 = rng.uniform(0, 24, K), rng.uniform(0, 24, K)
    rois = np.stack([rng.integers(0, 2, K), x1, y1, x1 + rng.uniform(2, 8, K),
                     y1 + rng.uniform(2, 8, K)], axis=1)
    return {
        "deform_conv2d": (conv["input"], conv["offset"], conv["weight"], None, (1, 1), (1, 1),
                          (1, 1), rng.uniform(0.0, 1.0, (N, 9, H, W))),
        "dcnv3": (x, offset.reshape(2, 16, 16, -1), weights.reshape(2, 16, 16, -1), 3, 1, 1, 1,
                  4, 1.0, False),
        "dcnv4": (x, offset_mask, 3, 1, 1, 1, 4, 1.0, False),
        "bilinear_sample": (rng.standard_normal((8, 32, 32)),
                            rng.uniform(-1.0, 32.0, (8, 1000, 2)), "zeros"),
        "offset_sample": (rng.standard_normal((2, 16, 16, 16)),
                          rng.normal(0.0, 2.0, (2, 32, 16, 16)), "border"),
        "deform_roi_pool": (rng.standard_normal((2, 64, 32, 32)), rois,
                            rng.normal(0.0, 0.1, (K, 2, 7, 7)), 7, 1.0, 2, 0.1,
                            rng.uniform(0.0, 1.0, (K, 1, 7, 7))),
        "deform_psroi_pool": (rng.standard_normal((2, 8 * 7 * 7, 32, 32)), rois,
                              rng.normal(0.0, 1.0, (K, 2, 7, 7)), 1.0, 8, 7, 7, 7, 2, 0.1, False),
    }


def held(value, dtype):
    """``value`` (an array, or anything else) as a tensor of ``dtype`` holds it, in float64."""
    if not isinstance(value, np.ndarray):
        return value
    return torch.tensor(value).to(dtype).double().numpy()


def bridge(name, args, dtype, device, grad_output):
    """The bridge's output and gradients {input name: gradient} in ``dtype`` on ``device``,
    as float64 arrays."""
    names = list(inspect.signature(getattr(ops, name)).parameters)
    tensors = [torch.tensor(a).to(device, dtype).requires_grad_(n in BY_OP[name]._fields)
               if isinstance(a, np.ndarray) else a for n, a in zip(names, args)]
    out = getattr(dt, name)(*tensors)
    wrt = {n: t for n, t in zip(names, tensors) if isinstance(t, torch.Tensor) and t.requires_grad}
    grads = torch.autograd.grad(out, list(wrt.values()),
                                torch.tensor(grad_output).to(device, dtype))

    def numpy(t):
        return t.detach().cpu().double().numpy()

    return numpy(out), {n: numpy(g) for n, g in zip(wrt, grads)}


def exact(name, args, grad_output):
    """``dcn_ref.ops`` in float64: (output, {input name: gradient})."""
    grads = getattr(ops, f"{name}_backward")(grad_output, *args)
    return getattr(ops, name)(*args), {n: getattr(grads, n) for n in grads._fields
                                        if getattr(grads, n) is not None}


def relative(ours, reference):
    """(max |ours - reference| / max |reference|, the same in the 2-norm)."""
    difference = ours - reference
    return (float(np.abs(difference).max() / np.abs(reference).max()),
            float(np.linalg.norm(difference) / np.linalg.norm(reference)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="run the bridge on the GPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = "cuda" if args.cuda else "cpu"
    rng = np.random.default_rng(args.seed)
    print(f"the bridge on the {device} against dcn_ref.ops in float64 on the unrounded inputs; "
          f"rel: max |error| / max |exact| (and in the 2-norm); own: the error against float64 "
          f"on the rounded inputs, in units of u|exact| (u = 2^-24, 2^-11, 2^-8)")
    print("| op | dtype | output max abs | output rel | gradients rel: max (2-norm) | own |")
    print("|---|---|---|---|---|---|")
    for name, problem in problems(rng).items():
        out_shape = getattr(ops, name)(*problem).shape
        grad_output = rng.standard_normal(out_shape)
        out_exact, grads_exact = exact(name, problem, grad_output)
        for label, dtype in DTYPES.items():
            out, grads = bridge(name, problem, dtype, device, grad_output)
            rel_out = relative(out, out_exact)
            gradients = ", ".join(f"{n} {relative(g, grads_exact[n])[0]:.1e} "
                                  f"({relative(g, grads_exact[n])[1]:.1e})"
                                  for n, g in grads.items())
            # the bridge's own error: against float64 on the values the tensors held
            rounded = [held(a, dtype) for a in problem]
            out_r, grads_r = exact(name, rounded, held(grad_output, dtype))
            u = torch.finfo(dtype).eps / 2
            own = max(relative(ours, ref)[0] for ours, ref in
                      [(out, out_r)] + [(g, grads_r[n]) for n, g in grads.items()]) / u
            print(f"| `{name}` | {label} | {np.abs(out - out_exact).max():.1e} | "
                  f"{rel_out[0]:.1e} | {gradients} | {own:.2f} u |", flush=True)


if __name__ == "__main__":
    main()
