"""CUDA tensors through the bridge: the CUDA kernels, on PyTorch's current stream, results
on the input's device. Needs a GPU that PyTorch sees (marked ``gpu``)."""
import numpy as np
import pytest
import torch
import torchvision

import dcn_ref.torch as dt
from torch_cases import cases, deform_conv2d_args

pytestmark = pytest.mark.gpu


def to_cuda(args):
    return [a.detach().cuda().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
            else a for a in args]


@pytest.mark.parametrize("case_id,name,fn,args", cases(), ids=[c[0] for c in cases()])
def test_every_op_on_cuda_equals_the_cpu_forward_and_backward(case_id, name, fn, args):
    cuda_args = to_cuda(args)
    out_cpu, out_gpu = fn(*args), fn(*cuda_args)
    assert out_gpu.device.type == "cuda" and out_gpu.dtype == out_cpu.dtype
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-10, atol=1e-12)
    wrt_cpu = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    wrt_gpu = [a for a in cuda_args if isinstance(a, torch.Tensor) and a.requires_grad]
    grad = torch.randn_like(out_cpu)
    for g_gpu, g_cpu in zip(torch.autograd.grad(out_gpu, wrt_gpu, grad.cuda()),
                            torch.autograd.grad(out_cpu, wrt_cpu, grad)):
        assert g_gpu.device.type == "cuda"
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-9, atol=1e-11)


def test_deform_conv2d_on_a_side_stream_equals_torchvision_on_cuda():
    args = to_cuda(deform_conv2d_args(np.random.default_rng(0), N=4, C_in=8, C_out=6,
                                      H=20, W=17, G=2, groups=2))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # torchvision's kernels and ours are queued on the side stream, one after the other
        theirs = torchvision.ops.deform_conv2d(*args)
        ours = dt.deform_conv2d(*args)
        difference = (ours - theirs).abs().max()
    torch.cuda.current_stream().wait_stream(side)
    assert float(difference) < 1e-10
    grads = torch.autograd.grad(ours.sum(), args[0])
    assert grads[0].device == args[0].device


def test_cuda_module_matches_torchvision_module():
    torch.manual_seed(0)
    theirs = torchvision.ops.DeformConv2d(8, 16, 3, padding=1).cuda()
    ours = dt.DeformConv2d(8, 16, 3, padding=1).cuda()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 8, 12, 12, device="cuda")
    offset = torch.randn(2, 18, 12, 12, device="cuda")
    torch.testing.assert_close(ours(x, offset), theirs(x, offset), rtol=1e-4, atol=1e-4)


def test_a_cuda_tensor_among_cpu_tensors_is_an_error_naming_both_devices():
    x, offset, w = torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(3, 2, 3, 3)
    with pytest.raises(dt.ArgumentError, match=r"^offset: expected a tensor on cpu \(the device "
                                               r"of input\), got one on cuda:0$"):
        dt.deform_conv2d(x, offset.cuda(), w, padding=1)


HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def close_in(dtype, got, want):
    """Both are float32 results rounded to ``dtype``; float32 sums in another order (CUDA's
    atomics) differ in their last bits, which may round to the neighbouring number: one
    spacing of the dtype apart, or 1e-5 of the largest entry where sums cancel."""
    got, want = got.detach().cpu().double(), want.detach().double()
    spacing = torch.finfo(dtype).eps
    bound = spacing * want.abs() + 1e-5 * want.abs().max().clamp_min(1e-30)
    assert ((got - want).abs() <= bound).all(), float(((got - want).abs() - bound).max())


@pytest.mark.parametrize("dtype", HALF.values(), ids=HALF)
@pytest.mark.parametrize("case_id,name,fn,args", cases(), ids=[c[0] for c in cases()])
def test_every_op_on_cuda_in_half_precision_equals_the_cpu(case_id, name, fn, args, dtype):
    half = [a.detach().to(dtype).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
            else a for a in args]
    cuda_half = to_cuda(half)
    out_cpu, out_gpu = fn(*half), fn(*cuda_half)
    assert out_gpu.device.type == "cuda" and out_gpu.dtype == dtype
    close_in(dtype, out_gpu, out_cpu)
    wrt_cpu = [a for a in half if isinstance(a, torch.Tensor) and a.requires_grad]
    wrt_gpu = [a for a in cuda_half if isinstance(a, torch.Tensor) and a.requires_grad]
    grad = torch.randn(out_cpu.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    for g_gpu, g_cpu in zip(torch.autograd.grad(out_gpu, wrt_gpu, grad.cuda()),
                            torch.autograd.grad(out_cpu, wrt_cpu, grad)):
        assert g_gpu.device.type == "cuda" and g_gpu.dtype == dtype
        close_in(dtype, g_gpu, g_cpu)


def test_a_model_under_cuda_autocast_runs_the_op_in_float32_and_trains():
    """Under ``torch.autocast("cuda", torch.float16)`` the convolutions give float16
    activations, offsets and mask beside the float32 weights; the op casts them all to
    float32 and returns float16: the CPU's float32 result on the same values, rounded."""
    from test_torch_distributed import TinyDeformable
    torch.manual_seed(0)
    model = TinyDeformable().cuda()
    x = torch.randn(2, 3, 6, 5, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        h = torch.relu(model.conv(x))
        offset_mask = model.offset_mask(h)
        offset, mask = offset_mask[:, :18], torch.sigmoid(offset_mask[:, 18:])
        out = model.deform(h, offset, mask)
        assert h.dtype == offset.dtype == mask.dtype == out.dtype == torch.float16
        loss = out.float().square().mean()
    cpu = [t.detach().cpu().float() for t in (h, offset, model.deform.weight,
                                              model.deform.bias, mask)]
    expected = dt.deform_conv2d(*cpu[:4], padding=1, mask=cpu[4]).half()
    close_in(torch.float16, out, expected)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    assert [g.dtype for g in grads] == [torch.float32] * len(grads)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
