"""The DCNv3 part of ``dcn-ref bench``: dcnv3 against the ``grid_sample`` formulation.

Two stages shaped like InternImage-T's (3x3 kernel, padding 1, float32, channels last):
(i) N=2, 56x56, C=64, group 4 and (ii) N=8, 14x14, C=256, group 16. For each, the median
forward and forward+backward of ``dcn_ref.ops.dcnv3`` and, when torch is installed, of
the pure-PyTorch formulation InternImage users fall back to on the CPU: every sampling
point turned into a normalised grid, one ``torch.nn.functional.grid_sample`` over
(N*group) planes, then the weighted sum over the points (written here from that
formulation; its output is checked against ours). Ours are timed before torch runs.

It also prints sampling rates, bilinear samples per second of a forward: dcnv3's
(N*H_out*W_out*group*P*group_channels samples) beside the deformable im2col of
``deform_conv2d`` on the bench's shape (a) (N*C*9*H_out*W_out samples), which does the
same work per sample.
"""
from typing import NamedTuple

import numpy as np

from .shapes import SHAPES, make_inputs
from .timing import median_ms


class Stage(NamedTuple):
    N: int
    H: int
    W: int
    C: int
    group: int

    def describe(self):
        return f"N={self.N}, {self.H}x{self.W}, C={self.C}, group {self.group}, k3 p1"


STAGES = {"i": Stage(2, 56, 56, 64, 4), "ii": Stage(8, 14, 14, 256, 16)}
GRID = {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1, "offset_scale": 1.0}
P = 9


def make_stage_inputs(stage, seed=0):
    """float32 input (N, H, W, C), offsets ~ N(0, 1) px, softmax weights, an output gradient."""
    rng = np.random.default_rng(seed)
    N, H, W, C, G = stage
    logits = rng.standard_normal((N, H, W, G, P))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    arrays = {"input": rng.standard_normal((N, H, W, C)),
              "offset": rng.normal(0.0, 1.0, (N, H, W, G * P * 2)),
              "mask": weights.reshape(N, H, W, G * P),
              "grad": rng.standard_normal((N, H, W, C))}
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def samples_per_forward(stage):
    return stage.N * stage.H * stage.W * stage.group * P * (stage.C // stage.group)


# -- ours -------------------------------------------------------------------------------

def measure_ours(repeat):
    """{stage: (forward ms, forward+backward ms)} and the im2col figure of shape (a)."""
    from .. import ops
    figures = {"stages": {}, "inputs": {}}
    for name, stage in STAGES.items():
        a = make_stage_inputs(stage)
        figures["inputs"][name] = a
        params = dict(GRID, group=stage.group)

        def forward():
            return ops.dcnv3(a["input"], a["offset"], a["mask"], **params)

        def both():
            forward()
            ops.dcnv3_backward(a["grad"], a["input"], a["offset"], a["mask"], **params)

        figures["stages"][name] = (median_ms(forward, repeat), median_ms(both, repeat))
    figures["im2col_a_ms"] = deform_im2col_ms(repeat)
    return figures


def deform_im2col_ms(repeat):
    """Median ms of deform_conv2d's deformable im2col alone on shape (a), float32."""
    from ..cpu import columns as cl
    from ..cpu.conv import channels_last
    from ..geometry import conv_geometry
    from ..sampling import ZEROS
    shape = SHAPES["a"]
    a = make_inputs(shape)
    N, C, H, W = a["input"].shape
    L = H * W
    x_cl = channels_last(a["input"])
    offset = a["offset"].reshape(N, 9, 2, L)
    columns = np.empty((1, N * L, 9, C), np.float32)
    geometry = conv_geometry((3, 3), (H, W), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    no_mask = np.zeros((1, 1, 1), np.float32)
    return median_ms(lambda: cl.deform_im2col(x_cl, H, W, offset, no_mask, False, ZEROS,
                                              geometry, columns, work=columns.size), repeat)


def im2col_samples(shape):
    return shape.N * shape.C * 9 * shape.H * shape.W       # stride 1, padding 1: H_out = H


# -- the grid_sample formulation ---------------------------------------------------------

def dcnv3_grid_sample(torch, input, offset, mask, group, kernel=3, pad=1, dilation=1, stride=1,
                      offset_scale=1.0):
    """DCNv3 in PyTorch ops (channels last in and out), as InternImage's CPU fallback does it:
    pad, build each point's location, normalise it for ``grid_sample(align_corners=False)``
    (pixel centres at integers), sample (N*group) planes at (H_out*W_out, P) points each,
    weight and sum over the points. On the device of ``input`` (CPU or CUDA)."""
    F = torch.nn.functional
    N, H, W, C = input.shape
    Cg = C // group
    x = F.pad(input, (0, 0, pad, pad, pad, pad))                      # (N, H+2p, W+2p, C)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    out_h = (Hp - (dilation * (kernel - 1) + 1)) // stride + 1
    out_w = (Wp - (dilation * (kernel - 1) + 1)) // stride + 1
    half = dilation * (kernel - 1) // 2
    device = input.device
    # the regular grid around each output pixel's kernel centre, (x, y), points column-major
    cols, rows = torch.meshgrid(torch.arange(kernel, device=device),
                                torch.arange(kernel, device=device), indexing="ij")
    taps = torch.stack([cols.reshape(-1), rows.reshape(-1)], -1) * dilation - half   # (P, 2)
    ys = torch.arange(out_h, device=device) * stride + half
    xs = torch.arange(out_w, device=device) * stride + half
    centre = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)                 # (H_out, W_out, 2)
    loc = (centre[:, :, None, None, :].to(input.dtype)
           + (taps.to(input.dtype) + offset.view(N, out_h, out_w, group, -1, 2)) * offset_scale)
    size = torch.tensor([Wp, Hp], dtype=input.dtype, device=device)
    grid = (2 * loc + 1) / size - 1                                   # (N, H_out, W_out, G, P, 2)
    planes = x.view(N, Hp * Wp, group, Cg).permute(0, 2, 3, 1).reshape(N * group, Cg, Hp, Wp)
    grid = grid.view(N, out_h * out_w, group, -1, 2).transpose(1, 2).reshape(N * group, out_h * out_w, -1, 2)
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)                     # (N*G, Cg, H_out*W_out, P)
    weights = mask.view(N, out_h * out_w, group, -1).transpose(1, 2).reshape(N * group, 1, out_h * out_w, -1)
    out = (sampled * weights).sum(-1)                                # (N*G, Cg, H_out*W_out)
    return out.view(N, C, out_h * out_w).transpose(1, 2).reshape(N, out_h, out_w, C)


def measure_torch(figures, repeat):
    """{stage: (forward ms, forward+backward ms, max |ours - theirs|)}, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from .. import ops
    result = {}
    for name, stage in STAGES.items():
        a = figures["inputs"][name]
        t = {k: torch.tensor(v, requires_grad=True) for k, v in a.items()}

        def forward():
            with torch.no_grad():
                return dcnv3_grid_sample(torch, t["input"], t["offset"], t["mask"], stage.group)

        def both():
            dcnv3_grid_sample(torch, t["input"], t["offset"], t["mask"], stage.group).backward(t["grad"])

        ours = ops.dcnv3(a["input"], a["offset"], a["mask"], **GRID, group=stage.group)
        diff = float(np.abs(forward().numpy() - ours).max())
        result[name] = (median_ms(forward, repeat), median_ms(both, repeat), diff)
    return result


# -- the report ----------------------------------------------------------------------------

def report(figures, repeat, out=print):
    """Time the grid_sample formulation (after ours, already in ``figures``) and print."""
    theirs = measure_torch(figures, repeat)
    out("")
    out(f"dcnv3, float32, median of {repeat}, ms")
    out(f"{'stage':<7}{'fwd':>8}{'fwd+bwd':>10}{'grid_sample fwd':>17}{'f+b':>8}"
        f"{'theirs/ours fwd':>17}{'f+b':>7}{'max |diff|':>12}")
    for name, (f, b) in figures["stages"].items():
        row = f"{'(' + name + ')':<7}{f:>8.2f}{b:>10.2f}"
        if theirs is not None:
            tf, tb, diff = theirs[name]
            row += f"{tf:>17.2f}{tb:>8.2f}{tf / f:>17.2f}{tb / b:>7.2f}{diff:>12.1e}"
        out(row)
    out("stages: " + "; ".join(f"({k}) {s.describe()}" for k, s in STAGES.items()))
    rates = {name: samples_per_forward(STAGES[name]) / (f * 1e-3)
             for name, (f, _) in figures["stages"].items()}
    im2col = im2col_samples(SHAPES["a"]) / (figures["im2col_a_ms"] * 1e-3)
    out("forward sampling rate, bilinear samples/s: "
        + ", ".join(f"dcnv3 ({k}) {r / 1e6:.0f} M" for k, r in rates.items())
        + f"; deform_conv2d's im2col on (a) {im2col / 1e6:.0f} M "
          f"({figures['im2col_a_ms']:.2f} ms); dcnv3/im2col "
        + ", ".join(f"({k}) {r / im2col:.2f}" for k, r in rates.items()))
    return {"ours": figures["stages"], "grid_sample": theirs, "rates": rates,
            "im2col_rate": im2col}
