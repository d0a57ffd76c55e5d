"""mmcv's names (dcn_ref.torch.mmcv): a state_dict with mmcv's keys and shapes loads with
strict=True, and the modules compute what mmcv's documented semantics give, written here
from mmcv's source with torchvision's ops (deform_conv2d, roi_align) and dcn_ref's loop
reference of the deformable RoI pool:

- ModulatedDeformConv2dPack: conv_offset -> chunk in three (o1, o2, m) -> offset =
  cat(o1, o2), mask = sigmoid(m) -> deform_conv2d with the layer's weight and bias;
- DeformConv2dPack: conv_offset -> offset -> deform_conv2d, no bias;
- (Modulated)DeformRoIPoolPack: roi_align -> offset_fc (Linear, ReLU, Linear, ReLU,
  Linear) -> deformable pooling (* sigmoid mask_fc, Linear, ReLU, Linear).
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dcn_ref import reference_roi
from dcn_ref.torch import (DeformConv2dPack, DeformRoIPoolPack, ModulatedDeformConv2d,
                           ModulatedDeformConv2dPack, ModulatedDeformRoIPoolPack,
                           modulated_deform_conv2d)
from dcn_ref.torch import mmcv


def rand(generator, *shape, scale=0.5):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


def conv_checkpoint(generator, c_in, c_out, k, groups, deform_groups, channels_per_tap, bias):
    """A state_dict with the keys and shapes of mmcv's (Modulated)DeformConv2dPack."""
    state = {"weight": rand(generator, c_out, c_in // groups, k, k)}
    if bias:
        state["bias"] = rand(generator, c_out)
    n_offset = channels_per_tap * deform_groups * k * k
    state["conv_offset.weight"] = rand(generator, n_offset, c_in, k, k, scale=0.3)
    state["conv_offset.bias"] = rand(generator, n_offset)
    return state


GEOMETRY = dict(stride=2, padding=1, dilation=1)


def test_modulated_pack_loads_mmcv_keys_strictly_and_computes_mmcvs_dcnv2():
    g = torch.Generator().manual_seed(0)
    c_in, c_out, k, groups, dg = 4, 6, 3, 2, 2
    state = conv_checkpoint(g, c_in, c_out, k, groups, dg, 3, bias=True)
    layer = ModulatedDeformConv2dPack(c_in, c_out, k, groups=groups, deform_groups=dg,
                                      **GEOMETRY).double()
    assert set(layer.state_dict()) == set(state)
    result = layer.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = rand(g, 2, c_in, 9, 8, scale=1.0).requires_grad_()
    out = layer(x)

    # mmcv's forward, step by step, with torchvision's op
    conv_out = F.conv2d(x, state["conv_offset.weight"], state["conv_offset.bias"], **GEOMETRY)
    o1, o2, m = torch.chunk(conv_out, 3, dim=1)
    expected = torchvision.ops.deform_conv2d(
        x, torch.cat((o1, o2), dim=1), state["weight"], state["bias"], mask=torch.sigmoid(m),
        **GEOMETRY)
    assert out.shape == (2, c_out, 5, 4)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    # gradients through the whole layer, against autograd through torchvision's op
    grad = rand(g, *out.shape)
    ours = torch.autograd.grad(out, [x, *layer.parameters()], grad)
    params = [state[name].clone().requires_grad_() for name, _ in layer.named_parameters()]
    theirs_state = dict(zip([n for n, _ in layer.named_parameters()], params))
    conv_out = F.conv2d(x, theirs_state["conv_offset.weight"], theirs_state["conv_offset.bias"],
                        **GEOMETRY)
    o1, o2, m = torch.chunk(conv_out, 3, dim=1)
    ref = torchvision.ops.deform_conv2d(x, torch.cat((o1, o2), 1), theirs_state["weight"],
                                        theirs_state["bias"], mask=torch.sigmoid(m), **GEOMETRY)
    theirs = torch.autograd.grad(ref, [x, *params], grad)
    for name, a, b in zip(["x", *theirs_state], ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


def test_deform_pack_loads_mmcv_keys_strictly_and_computes_mmcvs_dcnv1():
    g = torch.Generator().manual_seed(1)
    state = conv_checkpoint(g, 4, 4, 3, 1, 1, 2, bias=False)
    layer = DeformConv2dPack(4, 4, 3, padding=1).double()
    assert set(layer.state_dict()) == {"weight", "conv_offset.weight", "conv_offset.bias"}
    layer.load_state_dict(state, strict=True)
    x = rand(g, 2, 4, 6, 7, scale=1.0)
    offset = F.conv2d(x, state["conv_offset.weight"], state["conv_offset.bias"], padding=1)
    expected = torchvision.ops.deform_conv2d(x, offset, state["weight"], padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)


def test_an_mmdetection_style_backbone_checkpoint_loads_strictly():
    """A Bottleneck's conv2 as mmdetection builds it (DCNv2, no bias) inside a parent."""
    g = torch.Generator().manual_seed(2)
    block = torch.nn.Sequential()
    block.add_module("conv1", torch.nn.Conv2d(4, 4, 1, bias=False))
    block.add_module("conv2", ModulatedDeformConv2dPack(4, 4, 3, padding=1, bias=False))
    state = {"conv1.weight": rand(g, 4, 4, 1, 1),
             **{f"conv2.{k}": v for k, v in conv_checkpoint(g, 4, 4, 3, 1, 1, 3, False).items()}}
    block.double().load_state_dict(state, strict=True)
    assert set(block.state_dict()) == set(state)
    assert block.state_dict()._metadata["conv2"]["version"] == 2    # as mmcv's checkpoints


def test_fresh_modules_start_as_mmcv_initialises_them():
    torch.manual_seed(0)
    plain = ModulatedDeformConv2d(32, 64, 3)
    bound = 1 / math.sqrt(32 * 3 * 3)
    assert plain.weight.abs().max() <= bound and plain.weight.abs().max() > 0.99 * bound
    assert torch.count_nonzero(plain.bias) == 0
    pack = ModulatedDeformConv2dPack(4, 6, 3, padding=1)
    assert torch.count_nonzero(pack.conv_offset.weight) == 0
    assert torch.count_nonzero(pack.conv_offset.bias) == 0
    v1 = mmcv.DeformConv2d(32, 64, 3)
    bound = math.sqrt(6 / (32 * 9))                      # kaiming uniform for a ReLU
    assert v1.weight.abs().max() <= bound and v1.weight.abs().max() > 0.99 * bound
    # zero offsets, mask sigmoid(0) = 1/2: a fresh DCNv2 pack is half a plain convolution
    pack = pack.double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(pack(x), F.conv2d(x, pack.weight / 2, pack.bias, padding=1))


def test_functions_take_mmcvs_arguments_and_check_the_groups():
    g = torch.Generator().manual_seed(4)
    x = rand(g, 1, 4, 5, 5)
    weight = rand(g, 6, 2, 3, 3)                         # groups = 2
    offset = rand(g, 1, 2 * 2 * 9, 5, 5)                 # deform_groups = 2
    mask = torch.rand(1, 2 * 9, 5, 5, generator=g, dtype=torch.float64)
    out = mmcv.deform_conv2d(x, offset, weight, 1, 1, 1, 2, 2, False, 1)   # positionally
    torch.testing.assert_close(out, torchvision.ops.deform_conv2d(x, offset, weight, padding=1))
    out = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1, 2, 2)
    torch.testing.assert_close(
        out, torchvision.ops.deform_conv2d(x, offset, weight, padding=1, mask=mask))
    with pytest.raises(ValueError, match="groups: expected input channels"):
        mmcv.deform_conv2d(x, offset, weight, padding=1, groups=1, deform_groups=2)
    with pytest.raises(ValueError, match="deform_groups: expected offset with 2"):
        mmcv.deform_conv2d(x, offset, weight, padding=1, groups=2, deform_groups=1)
    with pytest.raises(ValueError, match="bias: expected False"):
        mmcv.deform_conv2d(x, offset, weight, padding=1, groups=2, deform_groups=2, bias=True)
    with pytest.raises(ValueError, match="mask: expected a torch.Tensor"):
        modulated_deform_conv2d(x, offset, None, weight, None, 1, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="bias: expected False"):
        mmcv.DeformConv2d(4, 4, 3, bias=True)


def test_the_old_keyword_deformable_groups_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="deform_groups"):
        layer = ModulatedDeformConv2dPack(4, 4, 3, deformable_groups=2)
    assert layer.deform_groups == 2 and layer.conv_offset.out_channels == 3 * 2 * 9
    with warnings.catch_warnings(), pytest.raises(ValueError, match="deformable_groups"):
        warnings.simplefilter("ignore")
        ModulatedDeformConv2dPack(4, 4, 3, deform_groups=2, deformable_groups=2)


@pytest.mark.parametrize("modulated", [False, True], ids=["DeformRoIPoolPack",
                                                           "ModulatedDeformRoIPoolPack"])
def test_roi_pool_packs_load_mmcv_keys_strictly_and_compute_mmcvs_numbers(modulated):
    g = torch.Generator().manual_seed(5)
    C, ph, pw, fc = 3, 2, 3, 8
    kwargs = dict(output_size=(ph, pw), output_channels=C, deform_fc_channels=fc,
                  spatial_scale=0.5, sampling_ratio=2, gamma=0.1)
    layer = (ModulatedDeformRoIPoolPack if modulated else DeformRoIPoolPack)(**kwargs).double()
    bins = ph * pw
    state = {"offset_fc.0.weight": rand(g, fc, C * bins), "offset_fc.0.bias": rand(g, fc),
             "offset_fc.2.weight": rand(g, fc, fc), "offset_fc.2.bias": rand(g, fc),
             "offset_fc.4.weight": rand(g, 2 * bins, fc), "offset_fc.4.bias": rand(g, 2 * bins)}
    if modulated:
        state.update({"mask_fc.0.weight": rand(g, fc, C * bins), "mask_fc.0.bias": rand(g, fc),
                      "mask_fc.2.weight": rand(g, bins, fc), "mask_fc.2.bias": rand(g, bins)})
    layer.load_state_dict(state, strict=True)
    x = rand(g, 2, C, 10, 12, scale=1.0)
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 13.0], [1, 4.0, 0.5, 20.0, 18.0]],
                        dtype=torch.float64)
    out = layer(x, rois)

    pooled = torchvision.ops.roi_align(x, rois, (ph, pw), spatial_scale=0.5, sampling_ratio=2,
                                       aligned=True).reshape(2, -1)
    h = F.relu(F.linear(pooled, state["offset_fc.0.weight"], state["offset_fc.0.bias"]))
    h = F.relu(F.linear(h, state["offset_fc.2.weight"], state["offset_fc.2.bias"]))
    offset = F.linear(h, state["offset_fc.4.weight"], state["offset_fc.4.bias"])
    expected = reference_roi.deform_roi_pool(
        x.numpy(), rois.numpy(), offset.reshape(2, 2, ph, pw).numpy(), (ph, pw),
        spatial_scale=0.5, sampling_ratio=2, gamma=0.1)
    if modulated:
        h = F.relu(F.linear(pooled, state["mask_fc.0.weight"], state["mask_fc.0.bias"]))
        mask = torch.sigmoid(F.linear(h, state["mask_fc.2.weight"], state["mask_fc.2.bias"]))
        expected = expected * mask.reshape(2, 1, ph, pw).numpy()
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(offset.numpy(), 0)            # the offsets did move the bins


def test_roi_pool_pack_refuses_input_of_other_channels():
    layer = DeformRoIPoolPack(2, output_channels=3, deform_fc_channels=4)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    with pytest.raises(ValueError, match="input: expected output_channels = 3 channels, got 4"):
        layer(torch.zeros(1, 4, 5, 5), rois)
