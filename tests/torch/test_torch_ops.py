"""The bridge's ops against torchvision, finite differences and torch.library's own checks;
how tensors reach the kernels (no copies, dtype and device kept); and the import rule."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

import dcn_ref.cpu
import dcn_ref.torch as dt
from helpers import deform_case
from torch_cases import cases, deform_conv2d_args, op_args

CASES = {case_id: (name, fn, args) for case_id, name, fn, args in cases()}

# (kwargs of deform_case): groups, offset groups, mask, stride, dilation, kernel shapes, bias
PARITY = {
    "plain": {},
    "groups": {"groups": 2},
    "offset_groups": {"G": 2},
    "groups_and_offset_groups": {"groups": 2, "G": 4, "C_in": 8, "C_out": 4},
    "no_mask": {"mask": False},
    "stride": {"stride": (2, 1)},
    "dilation": {"dilation": (2, 1), "padding": (2, 1)},
    "kernel_1x3": {"kernel": (1, 3), "padding": (0, 1)},
    "kernel_3x2": {"kernel": (3, 2), "padding": (1, 0)},
    "no_bias": {"bias": False, "mask": False},
}


def max_relative_error(ours, theirs):
    ours, theirs = ours.detach(), theirs.detach()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-300))


def test_importing_dcn_ref_does_not_import_torch():
    code = ("import sys, dcn_ref, dcn_ref.ops, dcn_ref.nn\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import dcn_ref.torch\n"
            "assert 'torch' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("config", PARITY.values(), ids=PARITY.keys())
def test_deform_conv2d_and_its_gradients_equal_torchvision(config):
    rng = np.random.default_rng(len(str(config)))
    args = deform_conv2d_args(rng, **config)
    ours = dt.deform_conv2d(*args)
    theirs = torchvision.ops.deform_conv2d(*args)
    assert ours.dtype == torch.float64 and ours.shape == theirs.shape
    assert max_relative_error(ours, theirs) < 1e-12
    grad = torch.randn(ours.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    wrt = [a for a in args if isinstance(a, torch.Tensor)]
    for name, g_ours, g_theirs in zip(["input", "offset", "weight", "bias", "mask"],
                                      torch.autograd.grad(ours, wrt, grad),
                                      torch.autograd.grad(theirs, wrt, grad)):
        assert max_relative_error(g_ours, g_theirs) < 1e-12, name


@pytest.mark.parametrize("case_id", CASES)
def test_gradcheck(case_id):
    _, fn, args = CASES[case_id]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case_id", CASES)
def test_opcheck(case_id):
    name, _, args = CASES[case_id]
    torch.library.opcheck(getattr(torch.ops.dcn_ref, name).default, op_args(args))


@pytest.mark.parametrize("case_id", CASES)
def test_opcheck_of_the_backward_op(case_id):
    name, fn, args = CASES[case_id]
    grad = torch.ones_like(fn(*args))
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in op_args(args)]
    torch.library.opcheck(getattr(torch.ops.dcn_ref, f"{name}_backward").default,
                          (grad, *detached),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_contiguous_cpu_tensors_reach_the_kernel_without_a_copy(monkeypatch):
    inputs, params = deform_case(np.random.default_rng(0), dtype=np.float32)
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    seen = {}
    kernel = dcn_ref.cpu.deform_conv2d

    def spy(input, offset, mask, weight, bias, *rest):
        seen.update(input=input, offset=offset, mask=mask, weight=weight, bias=bias)
        return kernel(input, offset, mask, weight, bias, *rest)

    monkeypatch.setattr(dcn_ref.cpu, "deform_conv2d", spy)
    out = dt.deform_conv2d(**tensors, **params)
    for name, t in tensors.items():
        assert seen[name].ctypes.data == t.data_ptr(), f"{name} was copied"
    assert out.dtype == torch.float32 and out.device == tensors["input"].device
    assert all(out.data_ptr() != t.data_ptr() for t in tensors.values())


def test_non_contiguous_tensors_are_accepted():
    args = deform_conv2d_args(np.random.default_rng(1))
    x = args[0].detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    assert not x.is_contiguous() and torch.equal(x, args[0])
    ours = dt.deform_conv2d(x, *args[1:])
    torch.testing.assert_close(ours, torchvision.ops.deform_conv2d(*args), rtol=1e-12, atol=0)
    grad_x, = torch.autograd.grad(ours.sum(), x)
    grad_ref, = torch.autograd.grad(torchvision.ops.deform_conv2d(*args).sum(), args[0])
    torch.testing.assert_close(grad_x, grad_ref, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32():
    args = [a.detach().float() if isinstance(a, torch.Tensor) else a
            for a in deform_conv2d_args(np.random.default_rng(2))]
    args[0].requires_grad_()
    out = dt.deform_conv2d(*args)
    grad, = torch.autograd.grad(out.sum(), args[0])
    assert out.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(out, torchvision.ops.deform_conv2d(*args), rtol=1e-5, atol=1e-5)


def test_an_empty_batch_gives_empty_results():
    x = torch.zeros(0, 2, 5, 5, requires_grad=True)
    offset = torch.zeros(0, 18, 5, 5, requires_grad=True)
    weight = torch.ones(3, 2, 3, 3, requires_grad=True)
    out = dt.deform_conv2d(x, offset, weight, padding=1)
    assert out.shape == (0, 3, 5, 5)
    grads = torch.autograd.grad(out.sum(), (x, offset, weight))
    assert [g.shape for g in grads] == [x.shape, offset.shape, weight.shape]
    assert torch.equal(grads[2], torch.zeros_like(weight))


def test_wrong_arguments_are_value_errors_that_name_them():
    x, offset = torch.zeros(1, 2, 5, 5), torch.zeros(1, 17, 5, 5)
    with pytest.raises(ValueError, match="offset"):
        dt.deform_conv2d(x, offset, torch.ones(3, 2, 3, 3), padding=1)
    with pytest.raises(ValueError, match="stride"):
        dt.deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.ones(3, 2, 3, 3), stride=0)
    with pytest.raises(ValueError, match="weight: expected a torch.Tensor"):
        dt.deform_conv2d(x, offset, np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="weight: expected dtype float16"):
        dt.deform_conv2d(x.half(), torch.zeros(1, 18, 3, 3).half(), torch.ones(3, 2, 3, 3))
