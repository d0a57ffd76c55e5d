# %% [markdown]
# # Tutorial 09: dcn_ref from PyTorch, and checking torchvision's kernel against it
#
# `dcn_ref.torch` registers every op of dcn_ref as a PyTorch custom op whose gradient is
# the library's hand-derived backward pass. Tensors go in and come out; `torch.autograd`,
# `torch.compile` and `DistributedDataParallel` see ordinary ops. Plan:
#
# 1. a drop-in replacement: `dcn_ref.torch.deform_conv2d` where
#    `torchvision.ops.deform_conv2d` was, same arguments, same numbers;
# 2. checking torchvision's CPU kernel against dcn_ref in float64: forward and the five
#    gradients, over offset groups, channel groups, masks, strides and dilations;
# 3. what is registered, and PyTorch's own checks of it (`gradcheck`, `opcheck`);
# 4. the module `DeformConv2d` loading a torchvision checkpoint, training beside
#    torchvision's, and under `torch.compile`;
# 5. the trained block exported to ONNX and run in ONNX Runtime.
#
# Run it as a script (`python tutorials/09_pytorch_bridge.py`; needs `pip install
# 'dcn-ref[torch]'`, and section 5 `'dcn-ref[export]'`) or open it as a notebook.

# %%
import os
import tempfile
import time
from collections import Counter

import torch
import torchvision

import dcn_ref.torch
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # fewer cases and steps, same code path
torch.manual_seed(0)

# %% [markdown]
# ## 1. A drop-in replacement
#
# `dcn_ref.torch.deform_conv2d` has exactly the signature of
# `torchvision.ops.deform_conv2d`: (input, offset, weight, bias=None, stride=(1, 1),
# padding=(0, 0), dilation=(1, 1), mask=None), the same layouts (offset channel 2k is
# the dy of tap k, 2k + 1 its dx) and the same numbers. Swapping the import is all.

# %%
x = torch.randn(2, 8, 12, 12)
offset = 2 * torch.randn(2, 2 * 9, 12, 12)
mask = torch.rand(2, 9, 12, 12)
weight = torch.randn(16, 8, 3, 3) / 8
bias = torch.randn(16)
theirs = torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
ours = dcn_ref.torch.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
print(f"float32 output {tuple(ours.shape)}, max |ours - torchvision| = "
      f"{(ours - theirs).abs().max():.1e}")
assert ours.dtype == torch.float32 and torch.allclose(ours, theirs, atol=1e-5)

# %% [markdown]
# ## 2. Checking torchvision's kernel against dcn_ref
#
# In float64 the two implementations should agree to rounding, forward and backward.
# For each configuration we compare the output and the gradients with respect to input,
# offset, weight, bias and mask (one random upstream gradient), as relative errors
# max|ours - theirs| / max|theirs|. Offsets are drawn away from integer positions, where
# the bilinear kernel has kinks (both libraries take the right derivative there).

# %%
CONFIGS = {
    "3x3": dict(),
    "offset groups 2": dict(G=2),
    "channel groups 2": dict(groups=2),
    "no mask (DCNv1)": dict(mask=False),
    "stride 2, dilation 2": dict(stride=2, dilation=2),
    "kernel 3x1": dict(kernel=(3, 1)),
}
if FAST:
    CONFIGS = dict(list(CONFIGS.items())[:3])


def case(kernel=(3, 3), G=1, groups=1, mask=True, stride=1, dilation=1, N=2, C=4, H=9, W=8):
    kh, kw = kernel
    pad = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    out_h = (H + 2 * pad[0] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (W + 2 * pad[1] - dilation * (kw - 1) - 1) // stride + 1
    whole = torch.randint(-2, 2, (N, 2 * G * kh * kw, out_h, out_w))
    tensors = {
        "input": torch.randn(N, C, H, W),
        "offset": whole + 0.1 + 0.8 * torch.rand(whole.shape),   # fractional parts in [0.1, 0.9]
        "weight": torch.randn(6, C // groups, kh, kw),
        "bias": torch.randn(6),
        "mask": torch.rand(N, G * kh * kw, out_h, out_w) if mask else None,
    }
    tensors = {k: None if v is None else v.double().requires_grad_() for k, v in tensors.items()}
    return tensors, dict(stride=stride, padding=pad, dilation=dilation)


errors = {}
for name, config in CONFIGS.items():
    tensors, params = case(**config)
    wrt = [k for k, v in tensors.items() if v is not None]
    outs = {lib: fn(**tensors, **params) for lib, fn in
            (("ours", dcn_ref.torch.deform_conv2d), ("theirs", torchvision.ops.deform_conv2d))}
    upstream = torch.randn_like(outs["theirs"])
    grads = {lib: torch.autograd.grad(out, [tensors[k] for k in wrt], upstream)
             for lib, out in outs.items()}
    outs = {lib: out.detach() for lib, out in outs.items()}
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    errors[name] = {"output": rel(outs["ours"], outs["theirs"])}
    errors[name].update({k: rel(a, b) for k, a, b in zip(wrt, grads["ours"], grads["theirs"])})

print(f"{'configuration':<22}" + "".join(f"{k:>10}" for k in
                                        ("output", "input", "offset", "weight", "bias", "mask")))
for name, row in errors.items():
    print(f"{name:<22}" + "".join(f"{row[k]:>10.1e}" if k in row else f"{'-':>10}"
                                  for k in ("output", "input", "offset", "weight", "bias", "mask")))
worst = max(max(row.values()) for row in errors.values())
assert worst < 1e-12, worst
print(f"worst relative difference {worst:.1e}: torchvision's CPU kernel agrees with dcn_ref")

# %% [markdown]
# ## 3. What is registered
#
# Each op `f` is two custom ops, `torch.ops.dcn_ref.f` and `torch.ops.dcn_ref.f_backward`,
# with fake (shape-only) implementations for tracing and an autograd formula that calls
# the backward op. PyTorch's `gradcheck` compares that formula with finite differences,
# and `opcheck` checks the registration itself (schema, fake tensors, autograd, tracing
# with dynamic shapes).

# %%
print("registered:", sorted(n for n in dir(torch.ops.dcn_ref)
                            if hasattr(getattr(torch.ops.dcn_ref, n), "default")))
tensors, params = case(N=1, C=2, H=5, W=4)
args = tuple(tensors.values())
assert torch.autograd.gradcheck(
    lambda x, o, w, b, m: dcn_ref.torch.deform_conv2d(x, o, w, b, mask=m, **params), args)
op_args = (tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"],
           [params["stride"]] * 2, list(params["padding"]), [params["dilation"]] * 2,
           tensors["mask"])
print("opcheck:", torch.library.opcheck(torch.ops.dcn_ref.deform_conv2d.default, op_args))

# %% [markdown]
# ## 4. The module, a checkpoint and a few training steps
#
# `dcn_ref.torch.DeformConv2d` has the constructor, parameter names and state_dict of
# `torchvision.ops.DeformConv2d`, so a torchvision checkpoint loads with `strict=True`.
# Below, two copies of a small DCNv2 block (offsets and mask predicted by a convolution)
# learn to map random images to a fixed target, one with each library's layer, from the
# same weights: their losses should stay on top of each other. A third copy runs under
# `torch.compile(fullgraph=True)`, which traces through our custom ops.


# %%
class Block(torch.nn.Module):
    def __init__(self, deform_class):
        super().__init__()
        self.predict = torch.nn.Conv2d(4, 27, 3, padding=1)
        self.deform = deform_class(4, 4, 3, padding=1)

    def forward(self, x):
        p = self.predict(x)
        return self.deform(x, p[:, :18], torch.sigmoid(p[:, 18:]))


blocks = {"torchvision": Block(torchvision.ops.DeformConv2d)}
for name in ("dcn_ref.torch", "dcn_ref.torch + compile"):
    blocks[name] = Block(dcn_ref.torch.DeformConv2d)
    blocks[name].load_state_dict(blocks["torchvision"].state_dict(), strict=True)
runs = {name: block for name, block in blocks.items()}
start = time.perf_counter()
runs["dcn_ref.torch + compile"] = torch.compile(blocks["dcn_ref.torch + compile"],
                                                fullgraph=True, backend="aot_eager")
inputs = torch.randn(8, 4, 10, 10)
target = torch.roll(inputs, shifts=(1, 2), dims=(2, 3))       # learn to shift the image
optimizers = {name: torch.optim.Adam(block.parameters(), lr=1e-2) for name, block in blocks.items()}
losses = {name: [] for name in blocks}
for step in range(10 if FAST else 60):
    for name, run in runs.items():
        loss = torch.nn.functional.mse_loss(run(inputs), target)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        losses[name].append(loss.item())
print(f"{len(losses['torchvision'])} steps of three copies (first compile included): "
      f"{time.perf_counter() - start:.1f} s")
for name in blocks:
    print(f"  {name:<24} loss {losses[name][0]:.5f} -> {losses[name][-1]:.5f}")
gap = max(abs(a - b) / b for name in blocks for a, b in zip(losses[name], losses["torchvision"]))
assert gap < 1e-3, gap

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for (name, curve), style in zip(losses.items(), ("-", "--", ":")):
    ax.plot(curve, style, linewidth=2, label=name)
ax.set_xlabel("Adam step")
ax.set_ylabel("MSE loss")
ax.set_yscale("log")
ax.set_title("The same DCNv2 block trained with each library's layer")
ax.legend()
fig.tight_layout()
save_figure(fig, "09_training_curves")

# %% [markdown]
# The curves coincide (the largest relative gap is printed above as an assertion bound).
# On the CPU the dcn_ref layer is also faster than torchvision's: `dcn-ref bench` prints
# the op-level figures, and `benchmarks/torch_model.py` a deformable ResNet-18 training
# step. CUDA tensors go through dcn_ref's CUDA kernels on PyTorch's current stream; see
# docs/torch.md for the details and the limitations (float32/float64 only, no gradients
# of gradients).


# %% [markdown]
# ## 5. The block in ONNX Runtime
#
# The trained block leaves PyTorch as a standard ONNX model with nothing to register
# first: `torch.onnx.export(..., dynamo=True)` writes dcn_ref's `deform_conv2d` as one
# `DeformConv` node (ONNX opset 19), its groups and offset groups read from the shapes.
# Exported with a batch of 2 marked dynamic, the model runs in ONNX Runtime on a batch of
# 5 and gives dcn_ref's numbers to float32 rounding. docs/export.md covers DCNv3, DCNv4
# and OpenVINO.

# %%
import onnxruntime  # noqa: E402  (the export extra)

block = blocks["dcn_ref.torch"].eval()
batch = torch.export.Dim("batch")
program = torch.onnx.export(block, (torch.randn(2, 4, 10, 10),), dynamo=True, verbose=False,
                            dynamic_shapes=({0: batch},), input_names=["image"])
print("ONNX operators:", dict(Counter(node.op_type for node in program.model.graph)))
path = os.path.join(tempfile.mkdtemp(), "dcnv2_block.onnx")
program.save(path)
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
images = torch.randn(5, 4, 10, 10)
(exported,) = session.run(None, {"image": images.numpy()})
with torch.no_grad():
    ours = block(images).numpy()
difference = abs(exported - ours).max()
print(f"ONNX Runtime, batch {exported.shape[0]}: largest difference from dcn_ref {difference:.1e}")
assert exported.shape == ours.shape and difference < 1e-5, difference
