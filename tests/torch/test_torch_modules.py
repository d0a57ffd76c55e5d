"""The bridge's modules load the checkpoints of the modules they replace (strict=True) and
compute the same outputs."""
import pytest
import torch
import torchvision

from dcn_ref.torch import DCNv3, DCNv4, DeformConv2d
from torch_reference import InternImageDCNv3, OpenGVLabDCNv4, dcn_core


def randomise(module, generator):
    """Every parameter random (the zero-initialised offset layers included)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
         dilation=(1, 2), groups=2, bias=False),
], ids=["3x3", "rectangular_groups_no_bias"])
def test_deform_conv2d_loads_a_torchvision_state_dict_and_matches_it(kwargs):
    torch.manual_seed(0)
    theirs = torchvision.ops.DeformConv2d(**kwargs).double()
    ours = DeformConv2d(**kwargs).double()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    kh, kw = theirs.weight.shape[2:]
    out_h = (7 + 2 * theirs.padding[0] - theirs.dilation[0] * (kh - 1) - 1) // theirs.stride[0] + 1
    out_w = (6 + 2 * theirs.padding[1] - theirs.dilation[1] * (kw - 1) - 1) // theirs.stride[1] + 1
    offset = torch.randn(2, 2 * kh * kw, out_h, out_w, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, kh * kw, out_h, out_w, dtype=torch.float64, requires_grad=True)
    ref = theirs(x, offset, mask)
    out = ours(x, offset, mask)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    params_ours, params_theirs = list(ours.parameters()), list(theirs.parameters())
    for g_ours, g_theirs in zip(torch.autograd.grad(out, [x, offset, mask, *params_ours], grad),
                                torch.autograd.grad(ref, [x, offset, mask, *params_theirs], grad)):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("center_feature_scale", [False, True])
def test_dcnv3_loads_an_internimage_state_dict_and_matches_it(center_feature_scale):
    generator = torch.Generator().manual_seed(1)
    theirs = InternImageDCNv3(8, group=2, offset_scale=0.7,
                              center_feature_scale=center_feature_scale).double()
    randomise(theirs, generator)
    ours = DCNv3(channels=8, kernel_size=3, dw_kernel_size=None, stride=1, pad=1, dilation=1,
                 group=2, offset_scale=0.7, act_layer="GELU", norm_layer="LN",
                 center_feature_scale=center_feature_scale, remove_center=False).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


def test_dcnv4_loads_an_opengvlab_state_dict_and_matches_it():
    generator = torch.Generator().manual_seed(2)
    theirs = OpenGVLabDCNv4(8, group=2, dw_kernel_size=3).double()
    randomise(theirs, generator)
    ours = DCNv4(channels=8, kernel_size=3, stride=1, pad=1, dilation=1, group=2,
                 offset_scale=1.0, dw_kernel_size=3).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 5 * 6, 8, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(ours(x, (5, 6)), theirs(x, (5, 6)), rtol=1e-10, atol=1e-10)


def test_fresh_dcnv3_and_dcnv4_start_from_the_regular_grid():
    """Zero-initialised offset layers: DCNv3 averages the 3x3 window of each pixel (softmax
    of zeros), which the grid_sample reference computes too."""
    torch.manual_seed(3)
    module = DCNv3(channels=8, group=2).double()
    x = torch.randn(1, 4, 5, 8, dtype=torch.float64)
    value = module.input_proj(x)
    window_mean = dcn_core(value, torch.zeros(1, 4, 5, 2 * 9 * 2, dtype=torch.float64),
                           torch.full((1, 4, 5, 2 * 9), 1 / 9, dtype=torch.float64),
                           3, 1, 1, 1, 2, 1.0)
    torch.testing.assert_close(module(x), module.output_proj(window_mean))
    assert DCNv4(channels=8, group=2).offset_mask.weight.abs().sum() == 0


def test_modules_reject_a_group_that_does_not_divide_the_channels():
    with pytest.raises(ValueError, match="group"):
        DCNv3(channels=6, group=4)
    with pytest.raises(ValueError, match="group"):
        DCNv4(channels=6, group=4)
    with pytest.raises(ValueError, match="groups"):
        DeformConv2d(6, 4, 3, groups=4)
