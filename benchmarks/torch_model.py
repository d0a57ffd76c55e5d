"""A deformable ResNet-18 training step on the CPU: dcn_ref.torch.DeformConv2d against
torchvision.ops.DeformConv2d, end to end.

The model is torchvision's ResNet-18 with the recipe of the DCN paper (Dai et al. 2017)
for the c4-c5 stages: every 3x3 convolution of layer3 and layer4 becomes a deformable
convolution whose offsets come from a plain 3x3 convolution of the same input (same
stride, padding), initialised to zero. Both models get the same weights; one training
step is forward, cross-entropy on random labels and backward, for a batch of 8 images of
224x224 in float32. The two models alternate round by round in one process (so a busy
machine slows both alike) and the medians are printed with their ratio.

    python benchmarks/torch_model.py [--rounds 3] [--batch 8] [--size 224] [--threads N]
"""
import argparse
import statistics
import time

import numba
import torch
import torchvision
from torch import nn

import dcn_ref.torch


class OffsetDeformConv(nn.Module):
    """A 3x3 convolution made deformable: offsets from a zero-initialised conv of the input."""

    def __init__(self, conv, deform_conv_class):
        super().__init__()
        kh, kw = conv.kernel_size
        self.offset = nn.Conv2d(conv.in_channels, 2 * kh * kw, conv.kernel_size, conv.stride,
                                conv.padding, conv.dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.deform = deform_conv_class(conv.in_channels, conv.out_channels, conv.kernel_size,
                                        conv.stride, conv.padding, conv.dilation, conv.groups,
                                        bias=conv.bias is not None)
        with torch.no_grad():
            self.deform.weight.copy_(conv.weight)

    def forward(self, x):
        return self.deform(x, self.offset(x))


def deformable_resnet18(deform_conv_class, seed=0):
    """ResNet-18 (random weights from ``seed``) with deformable 3x3 convs in layer3, layer4."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    for layer in (model.layer3, model.layer4):
        for block in layer:
            block.conv1 = OffsetDeformConv(block.conv1, deform_conv_class)
            block.conv2 = OffsetDeformConv(block.conv2, deform_conv_class)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and Numba threads each (default: their own defaults)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)

    models = {"torchvision": deformable_resnet18(torchvision.ops.DeformConv2d),
              "dcn_ref.torch": deformable_resnet18(dcn_ref.torch.DeformConv2d)}
    models["dcn_ref.torch"].load_state_dict(models["torchvision"].state_dict(), strict=True)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    labels = torch.randint(0, 1000, (args.batch,), generator=generator)
    loss_fn = nn.CrossEntropyLoss()

    def step(model):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        return loss.detach()

    losses = {name: step(model) for name, model in models.items()}   # warm-up (JIT, caches)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            step(model)
            times[name].append(time.perf_counter() - start)
    grads = {name: model.layer4[1].conv2.deform.weight.grad for name, model in models.items()}
    print(f"deformable ResNet-18 (layer3, layer4), batch {args.batch} at {args.size}x{args.size}, "
          f"float32, threads: torch {torch.get_num_threads()}, Numba {numba.get_num_threads()}; "
          f"median of {args.rounds} "
          f"training steps (forward + backward), alternating")
    for name in models:
        print(f"  {name:<14} {statistics.median(times[name]) * 1e3:9.0f} ms   "
              f"(loss {float(losses[name]):.6f})")
    speedup = statistics.median(times["torchvision"]) / statistics.median(times["dcn_ref.torch"])
    difference = float((grads["torchvision"] - grads["dcn_ref.torch"]).abs().max())
    print(f"  speed-up {speedup:.2f}x; max |difference| of a layer4 weight gradient "
          f"{difference:.1e}")


if __name__ == "__main__":
    main()
